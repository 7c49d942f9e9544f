"""An app's set buildpacks as local directories, fetched inside the build."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from dynod.build import buildpacks
from dynod.build.steps import BuildContext
from dynod.errors import FailedPrecondition
from dynod.system import mounts
from dynod.system.unit_properties import DEFAULT_PATH


def fetch_buildpack(ctx: BuildContext, index: int, url: str,
                    on_line: Callable[[str], None]) -> buildpacks.Buildpack:
    """A set buildpack as a local directory: built-in by name, a local path as is (it is
    copied into the build before it runs), a git URL cloned inside the build unit.
    Raises FailedPrecondition (no such buildpack, the clone failed)."""
    if url in buildpacks.BUILTIN_ORDER:
        return buildpacks.Buildpack(url, buildpacks.BUILTIN_DIR / url)
    if url.startswith("/"):
        path = Path(url)
        if not (path / "bin" / "compile").is_file():
            raise FailedPrecondition(
                f"buildpack {url}: no bin/compile there; give a directory with "
                "bin/detect and bin/compile")
        return buildpacks.Buildpack(url, path)
    target = ctx.root / "tmp" / "buildpack-src" / str(index)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.chown(target.parent, ctx.uid, ctx.uid)
    argv = ["git", "clone", "--quiet", "--depth=1", url, str(target)]
    binds: list[mounts.Bind] = []
    if url.startswith("file:///"):
        # A repository on this machine: visible (read-only) inside the build only for
        # the clone; owned by someone else, so git must be told it is safe to read.
        repo = Path(url.removeprefix("file://"))
        if not repo.is_dir():
            raise FailedPrecondition(f"buildpack {url}: no repository at {repo}")
        binds.append(mounts.Bind(repo, PurePosixPath(repo), read_only=True))
        # git drops -c and GIT_CONFIG_* for the local upload-pack; the global file stays.
        gitconfig = ctx.root / "tmp" / ".gitconfig"
        gitconfig.write_text("[safe]\n\tdirectory = *\n")
        os.chown(gitconfig, ctx.uid, ctx.uid)
    status = ctx.run(argv, {"PATH": DEFAULT_PATH, "HOME": str(ctx.root / "tmp")},
                     ctx.root / "tmp", on_line, binds)
    if status != 0:
        raise FailedPrecondition(f"buildpack {url} could not be cloned (git exit {status})")
    return buildpacks.Buildpack(url, target)
