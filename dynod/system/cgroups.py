"""Reading a unit's cgroup: memory use and the CPU time of its processes.

Paths are relative to the hierarchy root (``dynod.slice/dynod-shop.slice/<unit>``), so
the same path serves cgroup v2 and each v1 controller of Debian 12's hybrid layout.
"""

from __future__ import annotations

import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def memory_current(cgroup: Path) -> int | None:
    """The cgroup's memory use: v2 memory.current, or v1's usage (the hybrid hierarchy
    of Debian 12 hosts booted that way). None if neither can be read."""
    for path in (CGROUP_ROOT / cgroup / "memory.current",
                 CGROUP_ROOT / "memory" / cgroup / "memory.usage_in_bytes"):
        try:
            return int(path.read_text())
        except (OSError, ValueError):
            continue
    return None


def cpu_from_procs(cgroup: Path) -> int | None:
    """CPU time of the cgroup's processes (with their reaped children), in ns, from
    /proc: for cgroup v1 hosts where cpuacct is not per unit (systemd says CPUUsageNSec
    unset). None if no hierarchy lists the cgroup."""
    for hierarchy in ("pids", "memory", "systemd", ""):
        procs = CGROUP_ROOT / hierarchy / cgroup / "cgroup.procs"
        try:
            pids = procs.read_text().split()
        except OSError:
            continue
        ticks = 0
        for pid in pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            ticks += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
        return ticks * 1_000_000_000 // os.sysconf("SC_CLK_TCK")
    return None
