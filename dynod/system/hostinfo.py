"""Facts about the host that the daemon reports and adapts to."""

from __future__ import annotations

import re
from pathlib import Path

from dynod.errors import Unavailable
from dynod.system import processes
from dynod.system.systemctl import systemctl


def cgroup_layout(root: Path = Path("/sys/fs/cgroup")) -> str:
    """"v2" (unified), "hybrid" (v1 controllers + a cgroup2 at unified/) or "v1"."""
    if (root / "cgroup.controllers").exists():
        return "v2"
    if (root / "unified" / "cgroup.procs").exists():
        return "hybrid"
    return "v1"


def systemd_version() -> int:
    """The major version of the host's systemd, as ``systemctl --version`` prints it
    (``systemd 252 (252.39-1~deb12u2)``). The installed tools, not the running manager
    over D-Bus: it also answers where no systemd runs (the benchmarks' host), and
    Debian re-executes the manager when it upgrades systemd, so the two agree.

    Raises Unavailable when there is no systemctl or it prints no version.
    """
    try:
        out = systemctl(["--version"])
    except processes.CommandFailed as exc:
        raise Unavailable(f"systemd version: {exc}") from exc
    match = re.match(r"systemd (\d+)", out)
    if match is None:
        raise Unavailable(f"systemd version: systemctl --version printed {out[:80]!r}")
    return int(match.group(1))


def memory_mb(meminfo: Path = Path("/proc/meminfo")) -> int:
    """The machine's memory (MemTotal) in MB: what a cluster node offers dynos."""
    for line in meminfo.read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    raise Unavailable(f"{meminfo} has no MemTotal line")
