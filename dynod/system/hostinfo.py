"""Facts about the host that the daemon reports and adapts to."""

from __future__ import annotations

import re
from pathlib import Path

from dynod.system import processes


def cgroup_layout(root: Path = Path("/sys/fs/cgroup")) -> str:
    """"v2" (unified), "hybrid" (v1 controllers + a cgroup2 at unified/) or "v1"."""
    if (root / "cgroup.controllers").exists():
        return "v2"
    if (root / "unified" / "cgroup.procs").exists():
        return "hybrid"
    return "v1"


def systemd_version() -> str:
    """systemd's major version as printed by ``systemctl --version``, or "unknown"."""
    try:
        out = processes.output(["systemctl", "--version"])
    except processes.CommandFailed:
        return "unknown"
    match = re.match(r"systemd (\d+)", out)
    return match.group(1) if match else "unknown"
