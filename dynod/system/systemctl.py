"""What dynod asks of systemd through its command-line tools (``systemctl``,
``systemd-run``), where D-Bus does not serve as well: a build step's output piped back
line by line and its exit status waited for (``systemd-run --pipe --wait``), glob
patterns of units, and the router's unit. Everything runs through ``processes``.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from dynod.errors import InvalidArgument
from dynod.system import processes
from dynod.system.mounts import INIT_PATH, Bind
from dynod.system.unit_names import build_unit_name
from dynod.system.unit_properties import literal


def systemctl(argv: Sequence[str], timeout: float = 60.0) -> str:
    """``systemctl ARGV...``; its stdout. Raises processes.CommandFailed."""
    return processes.output(["systemctl", *argv], timeout=timeout)


# --- build steps ------------------------------------------------------------------

BUILDS_SLICE = "dynod-builds.slice"
CAP_SYS_ADMIN_NAME = "CAP_SYS_ADMIN"
# What `systemd-run --wait` exits with when the unit failed without an exit status of
# its own (killed by the OOM killer, by RuntimeMaxSec=, by a signal).
RUN_EXCEPTION = 255


@dataclass(frozen=True)
class BuildStepSpec:
    """One command of a build (a buildpack's detect, compile or release) as a transient
    unit on the build's root filesystem. Paths in ``argv``, ``env`` and ``cwd`` are
    paths inside ``root``; ``binds`` bring host directories in (the build cache).
    ``init`` is the host's dyno-init: the step runs under it, in a cgroup namespace of
    its own, so that it sees its own cgroup (its memory limit) and no other unit's."""

    app: str
    build_id: str
    step: int
    argv: tuple[str, ...]
    root: Path
    uid: int
    cwd: str
    init: Path
    env: tuple[tuple[str, str], ...] = ()
    binds: tuple[Bind, ...] = ()
    netns_path: Path | None = None
    memory_max: int | None = None
    tasks_max: int | None = None
    runtime_max_sec: int = 15 * 60

    @property
    def unit(self) -> str:
        return build_unit_name(self.app, self.build_id, self.step)


def build_step_properties(spec: BuildStepSpec) -> list[str]:
    """``NAME=value`` properties of a build step's unit (for ``systemd-run -p``)."""
    props = [
        f"Description=dynod build {spec.build_id[:8]} of {spec.app} (step {spec.step})",
        f"RootDirectory={spec.root}",
        "MountAPIVFS=yes",
        f"WorkingDirectory={spec.cwd}",
        f"User={spec.uid}",
        f"Group={spec.uid}",
        # Unprivileged and no way back up: no capabilities, no setuid, no new privileges.
        # dyno-init alone holds CAP_SYS_ADMIN, for its cgroup namespace and mounts, and
        # drops it before it runs the step's command (a non-root uid keeps none).
        "NoNewPrivileges=yes",
        f"CapabilityBoundingSet={CAP_SYS_ADMIN_NAME}",
        f"AmbientCapabilities={CAP_SYS_ADMIN_NAME}",
        "RestrictSUIDSGID=yes",
        "PrivateDevices=yes",
        "PrivateIPC=yes",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectKernelLogs=yes",
        "ProtectControlGroups=yes",
        "ProtectClock=yes",
        "ProtectHostname=yes",
        # The build shares the host's PID namespace (systemd 252 has no PrivatePIDs=):
        # a /proc with hidepid=invisible shows it only its own processes, never another
        # app's dynos (test_isolation_probes). No ProcSubset=pid: compilers and build
        # tools read /proc/cpuinfo and /proc/meminfo to size their jobs.
        "ProtectProc=invisible",
        "LockPersonality=yes",
        "KeyringMode=private",
        "MemoryAccounting=yes",
        "TasksAccounting=yes",
        "MemorySwapMax=0",
        # Heroku: slug compilation is limited to 15 minutes.
        f"RuntimeMaxSec={spec.runtime_max_sec}",
        "KillMode=control-group",
        f"LogExtraFields=DYNOD_APP={spec.app}",
        "LogExtraFields=DYNOD_DYNO=build",
    ]
    for bind in (Bind(spec.init, INIT_PATH), *spec.binds):
        kind = "BindReadOnlyPaths" if bind.read_only else "BindPaths"
        props.append(f"{kind}={bind.source}:{bind.target}")
    if spec.netns_path is not None:
        props += [f"NetworkNamespacePath={spec.netns_path}", "PrivateNetwork=yes"]
    else:
        props.append("PrivateNetwork=yes")
    if spec.memory_max is not None:
        props.append(f"MemoryMax={spec.memory_max}")
    if spec.tasks_max is not None:
        props.append(f"TasksMax={spec.tasks_max}")
    return props


def build_step_argv(spec: BuildStepSpec) -> list[str]:
    """``systemd-run --pipe --wait`` for the step: its output comes back on our pipes
    and its exit status is systemd-run's (255 when it was killed)."""
    argv = ["systemd-run", "--pipe", "--wait", "--quiet", f"--unit={spec.unit}",
            f"--slice={BUILDS_SLICE}"]
    for prop in build_step_properties(spec):
        argv += ["-p", prop]
    for key, value in spec.env:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise InvalidArgument(f"build environment variable {key!r} is not a valid name")
        argv.append(f"--setenv={key}={value}")
    # --no-pidns: the step keeps the host's PID namespace (its /proc is hidepid'd).
    init = [str(INIT_PATH), "--no-pidns", "--"]
    return [*argv, "--", *init, *(literal(a) for a in spec.argv)]


def run_build_step(spec: BuildStepSpec, on_line: Callable[[str], None]) -> tuple[int, str]:
    """Run one build step as its transient unit, passing its output to ``on_line`` line
    by line; return (exit status, systemd's Result: success, exit-code, oom-kill,
    timeout, signal ...). The failed unit is reset so nothing is left loaded."""
    status = processes.stream(build_step_argv(spec), on_line,
                              timeout=spec.runtime_max_sec + 60.0)
    if status == 0:
        return 0, "success"
    try:
        result = systemctl(["show", "--property=Result", "--value", spec.unit],
                           timeout=30).strip()
    except processes.CommandFailed:
        result = "unknown"
    with contextlib.suppress(processes.CommandFailed):
        systemctl(["reset-failed", spec.unit], timeout=30)
    return status, result or "unknown"


def stop_build_steps(app: str, build_id: str) -> None:
    """Stop any unit still running for this build (the daemon is stopping)."""
    # A backslash escapes in a glob: match the escaped app's "\\" with "?".
    unit = build_unit_name(app, build_id, 0).replace("\\", "?")
    pattern = unit.removesuffix("-0.service") + "-*.service"
    with contextlib.suppress(processes.CommandFailed):
        systemctl(["stop", pattern], timeout=60)
