"""dynod.model.formation"""

from __future__ import annotations

from dataclasses import dataclass

# Heroku's default limit across all types of an app (dyno-scaling-and-process-limits).
MAX_DYNOS_PER_APP = 100


@dataclass(frozen=True)
class Process:
    """One process type's entry. ``command`` comes from the current release's slug and
    is empty in the stored row."""

    type: str
    quantity: int
    size: str
    command: str = ""


@dataclass(frozen=True)
class ScaleChange:
    """One ``ps:scale`` argument: exactly one of ``quantity`` (``web=3``) and ``delta``
    (``web+1``, ``web-1``), or neither when only ``size`` changes."""

    type: str
    quantity: int | None = None
    delta: int | None = None
    size: str | None = None


