"""Dyno sizes: Heroku's names mapped to the cgroup limits a dyno unit gets.

Heroku (dyno-types, 2024; dyno-scaling-and-process-limits): Eco, Basic and Standard-1X
have 512 MB and a 1x CPU share, Standard-2X 1 GB and 2x, Performance-M 2.5 GB and
Performance-L 14 GB with dedicated CPU (Heroku's old "compute" column: 12x and 50x).
Process/thread limits: 256 for 512 MB sizes, 512 for Standard-2X, 16384 and 32768 for
Performance. On one machine the CPU share becomes systemd's relative ``CPUWeight=``
(100 is systemd's default, so Standard-1X is an ordinary service).
"""

from __future__ import annotations

from dataclasses import dataclass

from dynod.errors import InvalidArgument


@dataclass(frozen=True)
class Size:
    """One dyno size. ``name`` is the canonical lower-case name, ``label`` Heroku's."""

    name: str
    label: str
    memory_mb: int  # MemoryMax= (R15); MemoryHigh= is derived from it by units
    cpu_weight: int  # CPUWeight=
    tasks_max: int  # TasksMax=


SIZES: dict[str, Size] = {
    s.name: s
    for s in (
        Size("eco", "Eco", 512, 100, 256),
        Size("basic", "Basic", 512, 100, 256),
        Size("standard-1x", "Standard-1X", 512, 100, 256),
        Size("standard-2x", "Standard-2X", 1024, 200, 512),
        Size("performance-m", "Performance-M", 2560, 1200, 16384),
        Size("performance-l", "Performance-L", 14336, 5000, 32768),
    )
}

DEFAULT_SIZE = "standard-1x"

# Names Heroku's CLI and API also accept for the same sizes.
_ALIASES = {"1x": "standard-1x", "2x": "standard-2x", "pm": "performance-m",
            "pl": "performance-l", "hobby": "basic", "free": "eco"}


def parse_size(text: str) -> Size:
    """The size named ``text``, case-insensitively (``Standard-2X``, ``standard-2x``, ``2X``).

    Raises InvalidArgument naming the known sizes.
    """
    key = text.strip().lower()
    key = _ALIASES.get(key, key)
    try:
        return SIZES[key]
    except KeyError:
        raise InvalidArgument(
            f"unknown dyno size {text!r}; use one of: {', '.join(SIZES)}"
        ) from None
