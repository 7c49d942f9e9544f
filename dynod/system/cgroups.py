"""Reading a unit's cgroup: memory use and the CPU time of its processes.

Paths are relative to the hierarchy root (``dynod.slice/dynod-shop.slice/<unit>``), so
the same path serves cgroup v2 and each v1 controller of Debian 12's hybrid layout.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
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


@dataclass(frozen=True)
class MemoryStats:
    """A cgroup's memory, in bytes (pages for the paging counters)."""

    rss: int
    cache: int
    swap: int
    pgpgin: int
    pgpgout: int


def _stat_file(path: Path) -> dict[str, int] | None:
    try:
        text = path.read_text()
    except OSError:
        return None
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if value.strip().isdigit():
            out[key] = int(value)
    return out


def memory_stats(cgroup: Path) -> MemoryStats | None:
    """The cgroup's memory.stat: v1 (``total_rss``, ``total_cache``, ``total_swap``,
    ``total_pgpgin``/``pgpgout``, its subgroups included) or v2 (``anon``, ``file``,
    memory.swap.current; v2 does not count pages paged in and out: 0). None if neither
    hierarchy has the cgroup."""
    v1 = _stat_file(CGROUP_ROOT / "memory" / cgroup / "memory.stat")
    if v1 is not None:
        def get(key: str) -> int:
            return v1.get(f"total_{key}", v1.get(key, 0))
        return MemoryStats(get("rss"), get("cache"), get("swap"), get("pgpgin"),
                           get("pgpgout"))
    v2 = _stat_file(CGROUP_ROOT / cgroup / "memory.stat")
    if v2 is None:
        return None
    try:
        swap = int((CGROUP_ROOT / cgroup / "memory.swap.current").read_text())
    except (OSError, ValueError):
        swap = 0
    return MemoryStats(v2.get("anon", 0), v2.get("file", 0), swap, 0, 0)


def runnable_tasks(cgroup: Path) -> int | None:
    """Threads of the cgroup that are running, waiting for a CPU or in uninterruptible
    sleep (R or D: what the kernel's load average counts). None if no hierarchy lists
    the cgroup."""
    for hierarchy, name in (("pids", "tasks"), ("memory", "tasks"), ("", "cgroup.threads")):
        try:
            tids = (CGROUP_ROOT / hierarchy / cgroup / name).read_text().split()
        except OSError:
            continue
        n = 0
        for tid in tids:
            try:
                state = Path(f"/proc/{tid}/stat").read_text().rpartition(")")[2].split()[0]
            except (OSError, IndexError):
                continue
            n += state in ("R", "D")
        return n
    return None
