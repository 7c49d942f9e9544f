"""The slug compiler: Heroku's classic buildpack API, run over an app's source.

Steps, as Heroku's slug compiler does them (slug-compiler, buildpack-api articles):
remove ``.git`` and what ``.slugignore`` names; pick the buildpacks (the app's list, or
the first built-in one whose ``bin/detect`` passes, in a fixed order); for each, run
``bin/compile BUILD_DIR CACHE_DIR ENV_DIR`` after sourcing the ``export`` files of the
buildpacks before it, then ``bin/release``; discover process types (the Procfile over
the buildpacks' ``default_process_types``); pack ``./app`` into a tar.gz slug with its
sha256, within Heroku's size limits.

Everything here but ``compile_app`` is pure. ``compile_app`` runs commands only through
the ``Runner`` it is given, so the same code drives buildpacks directly on the host (the
unit tests) or inside a transient build unit on the stack (the daemon).
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import shutil
import tarfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import MappingProxyType

from dynod import paths
from dynod.errors import FailedPrecondition, InvalidArgument, ResourceExhausted
from dynod.model.builds import BUILTIN_BUILDPACKS, PREFIX_BUILDPACKS
from dynod.model.procfile import MISCASED_WARNINGS, Procfile, load_procfile
from dynod.slug.unpack import Limits, check_slug_size, format_size
from dynod.system import processes

# Where the built-in buildpacks are: beside the package in a checkout; the Debian
# package installs them under /usr/share/dynod (paths.buildpacks_dir).
BUILTIN_DIR = paths.buildpacks_dir()
# Detection order when the app sets no buildpack: languages first, the Procfile-only
# buildpack last, as it matches nearly everything.
BUILTIN_ORDER = BUILTIN_BUILDPACKS  # defined in the model: buildpacks:set checks the names
# Heroku: slug compilation is limited to 15 minutes.
COMPILE_TIMEOUT = 15 * 60.0

STEP = "-----> "
INDENT = "       "
ERROR = " !     "
NOTE = " ~     "

# Heroku's message when no buildpack detects the app [observed], with dynod for Heroku.
NO_LANGUAGE_LINES = (
    f"{ERROR}No default language could be detected for this app.",
    "\t\t\tHINT: This occurs when dynod cannot detect the buildpack to use for this "
    "application automatically.",
    "\t\t\tSee https://devcenter.heroku.com/articles/buildpacks",
)

# argv that sources the previous buildpacks' export files, then execs the rest:
#   bash -c SCRIPT dynod-build EXPORT... -- PROGRAM ARG...
_SOURCE_EXPORTS = 'while [ "$1" != -- ]; do . "$1"; shift; done; shift; exec "$@"'


@dataclass(frozen=True)
class Buildpack:
    """A buildpack directory with ``bin/detect``, ``bin/compile`` and maybe ``bin/release``."""

    name: str
    path: Path


@dataclass(frozen=True)
class ReleaseInfo:
    """What ``bin/release`` printed (its YAML)."""

    default_process_types: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    addons: tuple[str, ...] = ()
    config_vars: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class BuildResult:
    """A compiled slug and what a release needs from it."""

    slug: Path
    sha256: str
    size: int
    process_types: Mapping[str, str]
    procfile: Procfile
    default_process_types: Mapping[str, str]
    buildpacks: tuple[str, ...]
    # Heroku's buildpack_provided_description: the detected framework, e.g. "Python".
    description: str
    # The add-ons the buildpacks' bin/release asked for (``heroku-postgresql``), in order.
    addons: tuple[str, ...] = ()

    @property
    def checksum(self) -> str:
        return f"sha256:{self.sha256}"


# A way to run one command: argv, environment, working directory, a callback for each
# output line (stdout and stderr merged) -> exit status.
Runner = Callable[[Sequence[str], Mapping[str, str], Path, Callable[[str], None]], int]


def host_runner(
    argv: Sequence[str], env: Mapping[str, str], cwd: Path, on_line: Callable[[str], None]
) -> int:
    """Run on this machine, as this user: for tests and for ``dynod`` developers."""
    return processes.stream(argv, on_line, cwd=str(cwd), env=env, timeout=COMPILE_TIMEOUT)


def builtin_buildpacks(root: Path = BUILTIN_DIR) -> tuple[Buildpack, ...]:
    """The built-in buildpacks in detection order."""
    return tuple(Buildpack(name, root / name) for name in BUILTIN_ORDER)


# --- pure parts -------------------------------------------------------------------------


def parse_release(text: str) -> ReleaseInfo:
    """Parse ``bin/release`` output: the small YAML subset buildpacks print.

    Understood: top-level ``addons:`` (a list), ``default_process_types:`` and
    ``config_vars:`` (maps, block style or ``{}``); values may be quoted. Anything else
    is ignored, as stray output must not break a build.
    """
    sections: dict[str, dict[str, str] | list[str]] = {}
    current: str | None = None
    for raw in text.splitlines():
        if not raw.strip() or raw.strip() == "---" or raw.lstrip().startswith("#"):
            continue
        if not raw[0].isspace():
            key, _, rest = raw.partition(":")
            current = key.strip()
            rest = rest.strip()
            sections[current] = [] if current == "addons" else {}
            if rest and rest not in ("{}", "[]"):
                current = None  # an inline value we do not understand
            continue
        if current is None:
            continue
        item = raw.strip()
        target = sections[current]
        if isinstance(target, list):
            if item.startswith("- "):
                target.append(_unquote(item[2:].strip()))
        else:
            key, sep, value = item.partition(":")
            if sep:
                target[_unquote(key.strip())] = _unquote(value.strip())
    defaults = sections.get("default_process_types", {})
    addons = sections.get("addons", [])
    config = sections.get("config_vars", {})
    return ReleaseInfo(
        default_process_types=MappingProxyType(
            dict(defaults) if isinstance(defaults, dict) else {}
        ),
        addons=tuple(addons) if isinstance(addons, list) else (),
        config_vars=MappingProxyType(dict(config) if isinstance(config, dict) else {}),
    )


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def parse_slugignore(text: str) -> tuple[str, ...]:
    """The patterns of a ``.slugignore`` ("roughly the same as .gitignore": one pattern
    a line, ``#`` comments, blank lines ignored). Negation (``!``) is not supported and
    such lines are dropped."""
    patterns = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", "!")):
            continue
        patterns.append(line)
    return tuple(patterns)


def slugignore_matches(rel: PurePosixPath, is_dir: bool, patterns: Sequence[str]) -> bool:
    """Does ``.slugignore`` remove ``rel`` (a path relative to the app root)?

    A pattern with a slash (other than a trailing one) matches the whole path from the
    root (``/test``, ``docs/*.pdf``); one without matches the name at any depth
    (``*.psd``); a trailing slash matches directories only.
    """
    for pattern in patterns:
        dir_only = pattern.endswith("/")
        pat = pattern.rstrip("/")
        if not pat or (dir_only and not is_dir):
            continue
        if "/" in pat:
            if fnmatch.fnmatchcase(str(rel), pat.lstrip("/")):
                return True
        elif fnmatch.fnmatchcase(rel.name, pat):
            return True
    return False


def process_type_lines(procfile: Procfile, defaults: Mapping[str, str]) -> list[str]:
    """Heroku's "Discovering process types" block; labels padded so the arrows align."""
    declared = ", ".join(procfile.types) if procfile.processes else "(none)"
    if not defaults:
        return [
            f"{STEP}Discovering process types",
            f"{INDENT}Procfile declares types -> {declared}",
        ]
    return [
        f"{STEP}Discovering process types",
        f"{INDENT}Procfile declares types     -> {declared}",
        f"{INDENT}Default types for buildpack -> {', '.join(sorted(defaults))}",
    ]


def merge_process_types(procfile: Procfile, defaults: Mapping[str, str]) -> dict[str, str]:
    """Procfile entries override buildpack defaults of the same name (Heroku)."""
    return {**defaults, **procfile.as_dict()}


def compile_argv(
    pack: Path, exports: Sequence[Path], build: Path, cache: Path, env: Path
) -> list[str]:
    """``bin/compile`` after sourcing ``exports`` (the earlier buildpacks' export files)."""
    target = [str(pack / "bin/compile"), str(build), str(cache), str(env)]
    if not exports:
        return target
    return ["bash", "-c", _SOURCE_EXPORTS, "dynod-build", *map(str, exports), "--", *target]


# --- the slug compiler ------------------------------------------------------------------


def apply_slugignore(build_dir: Path) -> list[str]:
    """Remove what ``build_dir/.slugignore`` names (before any buildpack runs); return
    the removed paths. Symlinks are removed, never followed."""
    ignore = build_dir / ".slugignore"
    if not ignore.is_file() or ignore.is_symlink():
        return []
    patterns = parse_slugignore(ignore.read_text(errors="replace"))
    removed: list[str] = []
    for directory, dirs, files in os.walk(build_dir):
        base = Path(directory)
        for name in [*dirs, *files]:
            path = base / name
            rel = PurePosixPath(path.relative_to(build_dir).as_posix())
            is_dir = path.is_dir() and not path.is_symlink()
            if not slugignore_matches(rel, is_dir, patterns):
                continue
            if is_dir:
                shutil.rmtree(path)
                dirs.remove(name)
            else:
                path.unlink()
            removed.append(str(rel))
    return removed


def make_slug(build_dir: Path, dest: Path) -> tuple[int, str]:
    """Pack ``build_dir`` as ``./app`` into the tar.gz ``dest`` (Heroku's
    ``tar czf slug.tgz ./app``); return its size and sha256. Symlinks stay symlinks;
    owners are dropped (the tree belongs to whoever unpacks it)."""

    def anonymous(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        return info

    tmp = dest.with_name(f".{dest.name}.tmp")
    with tarfile.open(tmp, "w:gz", compresslevel=6, format=tarfile.PAX_FORMAT) as tar:
        tar.add(build_dir, arcname="./app", recursive=True, filter=anonymous)
    digest = hashlib.sha256()
    with tmp.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    tmp.replace(dest)
    return dest.stat().st_size, digest.hexdigest()


def _chown_tree(path: Path, owner: int) -> None:
    os.chown(path, owner, owner, follow_symlinks=False)
    for directory, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            os.chown(Path(directory) / name, owner, owner, follow_symlinks=False)


def _detect(pack: Buildpack, build_dir: Path, env: Mapping[str, str], runner: Runner) -> str | None:
    out: list[str] = []
    status = runner([str(pack.path / "bin/detect"), str(build_dir)], env, build_dir, out.append)
    if status != 0:
        return None
    name = next((line.strip() for line in out if line.strip()), "")
    return name or pack.name


def compile_app(
    build_dir: Path,
    cache_dir: Path,
    env_dir: Path,
    work_dir: Path,
    *,
    stack: str,
    on_line: Callable[[str], None],
    runner: Runner = host_runner,
    buildpacks: Sequence[Buildpack] | None = None,
    base_env: Mapping[str, str] | None = None,
    limits: Limits | None = None,
    owner: int | None = None,
) -> BuildResult:
    """Compile the app in ``build_dir`` into ``work_dir/slug.tgz``.

    ``buildpacks`` None means detection among the built-in ones. Output goes to
    ``on_line`` as it comes, in Heroku's format. Raises FailedPrecondition when no
    buildpack applies, a set buildpack does not detect the app, or a compile fails (its
    message is also the last output line), and ResourceExhausted for a slug over 500 MB.
    ``build_dir`` is changed in place; the buildpacks run from copies in ``work_dir``,
    where they may write their ``export`` file. ``owner`` (a uid = gid): the buildpacks
    run as that user, so their copies and ``HOME`` are made its own.
    """
    limits = limits or Limits()
    work_dir.mkdir(parents=True, exist_ok=True)
    cache_dir.mkdir(parents=True, exist_ok=True)
    home = work_dir / "home"
    home.mkdir(exist_ok=True)
    if owner is not None:
        os.chown(home, owner, owner)
    env = {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        **(base_env or {}),
        "STACK": stack,
        "HOME": str(home),
    }

    shutil.rmtree(build_dir / ".git", ignore_errors=True)
    apply_slugignore(build_dir)

    copies = work_dir / "buildpacks"
    shutil.rmtree(copies, ignore_errors=True)
    copies.mkdir()

    def copy(index: int, pack: Buildpack) -> Buildpack:
        target = copies / f"{index}-{pack.name}"
        shutil.copytree(pack.path, target, symlinks=True)
        (target / "export").unlink(missing_ok=True)
        if owner is not None:
            _chown_tree(target, owner)
        return Buildpack(pack.name, target)

    selected: list[tuple[Buildpack, str]] = []
    if buildpacks is None:
        on_line(f"{STEP}Determining which buildpack to use for this app")
        for index, pack in enumerate(builtin_buildpacks()):
            local = copy(index, pack)
            detected = _detect(local, build_dir, env, runner)
            if detected is not None:
                selected.append((local, detected))
                if pack.name not in PREFIX_BUILDPACKS:
                    break
        if not selected:
            for line in NO_LANGUAGE_LINES:
                on_line(line)
            raise FailedPrecondition("No default language could be detected for this app.")
    else:
        for index, pack in enumerate(buildpacks):
            local = copy(index, pack)
            on_line(f"{STEP}Using buildpack: {pack.name}")
            detected = _detect(local, build_dir, env, runner)
            if detected is None:
                message = f"App not compatible with buildpack: {pack.name}"
                on_line(f"{ERROR}{message}")
                raise FailedPrecondition(message)
            selected.append((local, detected))

    exports: list[Path] = []
    defaults: dict[str, str] = {}
    wanted_addons: list[str] = []
    for pack, detected in selected:
        on_line(f"{STEP}{detected} app detected")
        argv = compile_argv(pack.path, exports, build_dir, cache_dir, env_dir)
        status = runner(argv, env, build_dir, on_line)
        if status != 0:
            message = f"Push rejected, failed to compile {detected} app."
            on_line(f"{ERROR}{message}")
            raise FailedPrecondition(message)
        if (pack.path / "export").is_file():
            exports.append(pack.path / "export")
        if (pack.path / "bin/release").is_file():
            out: list[str] = []
            runner([str(pack.path / "bin/release"), str(build_dir)], env, build_dir, out.append)
            # Several buildpacks: later defaults override earlier ones of the same name.
            info = parse_release("\n".join(out))
            defaults.update(info.default_process_types)
            wanted_addons += [a for a in info.addons if a not in wanted_addons]

    try:
        procfile = load_procfile(build_dir)
    except InvalidArgument as exc:
        # The build prints its own failures (the pipeline does not repeat them): a
        # Procfile linked out of the tree, a FIFO, not UTF-8 would fail unexplained.
        on_line(f"{ERROR}{exc.message}")
        raise
    for note in procfile.warnings:
        on_line(f"{NOTE if note in MISCASED_WARNINGS else ERROR}{note}")
    for line in process_type_lines(procfile, defaults):
        on_line(line)
    on_line("")

    on_line(f"{STEP}Compressing...")
    slug = work_dir / "slug.tgz"
    size, sha256 = make_slug(build_dir, slug)
    try:
        warning = check_slug_size(size, limits)
    except ResourceExhausted:
        slug.unlink()
        message = (
            f"Compiled slug size: {format_size(size)} is too large "
            f"(max is {limits.max_compressed_bytes // (1 << 20)}M)."
        )
        on_line(f"{ERROR}{message}")
        on_line(f"{ERROR}See: http://devcenter.heroku.com/articles/slug-size")
        raise
    on_line(f"{INDENT}Done: {format_size(size)}")
    if warning:
        on_line(f"{ERROR}{warning}")
    return BuildResult(
        slug=slug,
        sha256=sha256,
        size=size,
        process_types=MappingProxyType(merge_process_types(procfile, defaults)),
        procfile=procfile,
        default_process_types=MappingProxyType(defaults),
        buildpacks=tuple(pack.name for pack, _ in selected),
        description=selected[-1][1],
        addons=tuple(wanted_addons),
    )
