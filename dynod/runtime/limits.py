"""A dyno size's cgroup limits: what ``standard-2x`` means to systemd."""

from __future__ import annotations

from dynod.model.sizes import Size
from dynod.system.unit_properties import Limits


def limits_for_size(size: Size) -> Limits:
    """Heroku's memory model: the size's RAM is the quota (R14, ``MemoryHigh=``), the
    kill limit is twice that (R15, ``MemoryMax=``; dyno-memory-behavior: 2x for Eco to
    Performance-L). On cgroup v1 only ``MemoryMax=`` has an effect."""
    quota = size.memory_mb * 1024 * 1024
    return Limits(
        memory_high=quota,
        memory_max=2 * quota,
        cpu_weight=size.cpu_weight,
        tasks_max=size.tasks_max,
    )
