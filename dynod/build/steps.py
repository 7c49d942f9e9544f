"""A build's untrusted steps: each one a transient unit chrooted into the build's root.

Unpacking the source, cloning a buildpack and each buildpack's detect, compile and
release run as the app's uid, in the build's own network namespace, with memory, task
and 15-minute limits (``systemctl.run_build_step``); the app's build cache is bound at
``/tmp/cache``, its config vars are files in ``ENV_DIR``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from dynod.build import buildpacks
from dynod.errors import InvalidArgument
from dynod.slug.unpack import format_size
from dynod.system import mounts, systemctl

BUILD_TASKS_MAX = 4096
# Inside the build's root.
BUILD_DIR = PurePosixPath("/tmp/build")
CACHE_DIR = PurePosixPath("/tmp/cache")
ENV_DIR = PurePosixPath("/tmp/env")
WORK_DIR = PurePosixPath("/tmp/dynod")
SOURCE_TAR = PurePosixPath("/tmp/source.tar")
CA_BUNDLE = PurePosixPath("/etc/ssl/certs/ca-certificates.crt")
# Config vars never passed to a build (Heroku's export_env_dir blacklist).
ENV_DENY = re.compile(r"^(PATH|GIT_DIR|CPATH|CPPATH|LD_PRELOAD|LIBRARY_PATH)$")


def parse_memory(text: str) -> int:
    """systemd's size syntax (``2G``, ``512M``, bytes) as bytes. Raises InvalidArgument."""
    m = re.fullmatch(r"\s*(\d+)\s*([KMGT]?)\s*", text.upper())
    if m is None:
        raise InvalidArgument(f"memory size {text!r} is invalid; write e.g. 2G or 512M")
    return int(m.group(1)) * int(1024 ** " KMGT".index(m.group(2) or " "))


def write_env_dir(path: Path, config: Mapping[str, str], uid: int) -> None:
    """Heroku's ENV_DIR: one file per config var, named by the key, holding its value."""
    path.mkdir(mode=0o700)
    for key, value in config.items():
        if ENV_DENY.match(key) or "/" in key or key in {".", ".."}:
            continue
        (path / key).write_text(value)
        os.chown(path / key, uid, uid)
    os.chown(path, uid, uid)


@dataclass
class BuildContext:
    """What one build has set up, for its steps and for the clean-up."""

    app: str
    build_id: str
    uid: int
    root: Path
    cache: Path
    memory_max: int
    init: Path  # dyno-init (mounts.find_init), every step's wrapper
    netns_path: Path | None = None
    resolv: Path | None = None
    steps: int = 0
    notes: list[str] = field(default_factory=list)

    def inside(self, value: str) -> str:
        """A host path under the root or the cache as the build sees it."""
        root = str(self.root)
        cache = str(self.cache)
        if value == cache or value.startswith(cache + "/"):
            return str(CACHE_DIR) + value[len(cache):]
        if value == root:
            return "/"
        return value.replace(root + "/", "/")

    def run(self, argv: Sequence[str], env: Mapping[str, str], cwd: Path,
            on_line: Callable[[str], None], extra_binds: Sequence[mounts.Bind] = ()) -> int:
        """Run one step (host paths in ``argv``, ``env`` and ``cwd`` as the build sees
        them); its output goes to ``on_line``. Returns its exit status."""
        binds = [mounts.Bind(self.cache, CACHE_DIR, read_only=False), *extra_binds]
        if self.resolv is not None:
            binds.append(mounts.Bind(self.resolv, PurePosixPath("/etc/resolv.conf")))
        spec = systemctl.BuildStepSpec(
            app=self.app, build_id=self.build_id, step=self.steps,
            argv=tuple(self.inside(a) for a in argv), root=self.root, uid=self.uid,
            cwd=self.inside(str(cwd)), init=self.init,
            env=tuple((k, self.inside(v)) for k, v in env.items()),
            binds=tuple(binds), netns_path=self.netns_path, memory_max=self.memory_max,
            tasks_max=BUILD_TASKS_MAX,
            runtime_max_sec=int(buildpacks.COMPILE_TIMEOUT),
        )
        self.steps += 1
        status, result = systemctl.run_build_step(spec, on_line)
        # A child killed by the OOM killer shows as its parent exiting 137 (SIGKILL)
        # before systemd can record oom-kill; nothing else SIGKILLs a build step.
        if result == "oom-kill" or (status == 137 and result != "timeout"):
            on_line(f"{buildpacks.ERROR}Build exceeded its memory limit "
                    f"({format_size(self.memory_max)}) and was killed.")
        elif result == "timeout":
            on_line(f"{buildpacks.ERROR}Build exceeded the 15 minute limit and was killed.")
        elif status != 0 and result not in ("exit-code", "success"):
            on_line(f"{buildpacks.ERROR}Build step {spec.unit} failed: {result} "
                    f"(exit status {status})")
        return status
