"""Builds: one record per push or ``dynoctl deploy``, and an app's build settings.

Heroku: ``buildpacks:set heroku/python`` (a built-in name, with or without ``heroku/``),
a git URL or a local path; an empty list means detection over the built-in ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from dynod.errors import InvalidArgument

# The built-in buildpacks (dynod/build/buildpacks.py runs them), in detection order when
# the app sets none: Heroku's order of its official buildpacks (ruby, nodejs, clojure,
# python, java, gradle, scala, php, go; buildpacks article) for those dynod has, then
# the Procfile-only one, as it matches nearly everything. As on Heroku, an app with a
# package.json beside its composer.json or requirements.txt is detected as Node.js:
# `buildpacks:set php` (or python) picks the other.
BUILTIN_BUILDPACKS = (
    "apt",
    "ruby", "nodejs", "clojure", "python", "java", "gradle", "scala", "php", "go", "procfile",
)
# Buildpacks that, when they detect, run before the next one that detects instead of
# ending detection: an Aptfile's packages serve whatever language the app is in.
PREFIX_BUILDPACKS = frozenset({"apt"})
# What each one's bin/detect looks for (`dynoctl buildpacks` shows it).
BUILTIN_DETECTS = {
    "apt": "Aptfile (Debian packages; runs before the language detected next)",
    "ruby": "Gemfile",
    "nodejs": "package.json",
    "clojure": "project.clj",
    "python": "requirements.txt, pyproject.toml, setup.py, Pipfile, poetry.lock, uv.lock, "
              "manage.py, app.py, main.py, .python-version",
    "java": "pom.xml (or pom.atom, .clj, .groovy, .rb, .scala, .yaml, .yml)",
    "gradle": "gradlew, build.gradle(.kts) or settings.gradle(.kts)",
    "scala": "*.sbt, .sbtrc, project/build.properties or project/*.scala",
    "php": "composer.json or index.php",
    "go": "go.mod",
    "procfile": "a Procfile (the app needs only the stack's programs)",
}


class BuildStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True)
class Build:
    """One build of ``app``. ``release`` is the version it made (succeeded builds)."""

    id: str
    app: str
    status: BuildStatus
    user: str
    created_at: datetime
    stack: str
    commit: str = ""
    buildpacks: tuple[str, ...] = ()
    slug_id: str = ""
    release: int = 0
    error: str = ""
    finished_at: datetime | None = None
    source_bytes: int = 0


@dataclass(frozen=True)
class BuildSettings:
    """What an app builds with: its stack and buildpack list (empty: detection)."""

    stack: str
    buildpacks: tuple[str, ...]


def validate_buildpack(url: str) -> str:
    """A buildpack is a built-in name (ruby, nodejs, python, php, go, procfile; heroku/python too),
    a git URL or an absolute local path; returns it normalized. Raises InvalidArgument."""
    url = url.strip()
    name = url.removeprefix("heroku/")
    if name in BUILTIN_BUILDPACKS:
        return name
    if url.startswith(("https://", "http://", "git://", "ssh://", "git@", "file:///")) or \
            url.endswith(".git"):
        if any(c.isspace() for c in url) or url.startswith("-"):
            raise InvalidArgument(f"buildpack URL {url!r} is invalid")
        return url
    if url.startswith("/") and "\0" not in url and "\n" not in url:
        return url
    raise InvalidArgument(
        f"buildpack {url!r} is not a built-in one ({', '.join(BUILTIN_BUILDPACKS)}), "
        "a git URL or an absolute path; give one of those"
    )
