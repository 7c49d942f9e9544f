"""dynod.model.releases"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType


class ReleaseStatus(StrEnum):
    # Heroku's release statuses; pending and failed come with the release phase.
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True)
class Release:
    """Release ``version`` of ``app``: a slug (None before the first deploy) and the
    full config snapshot the dynos of this release see."""

    app: str
    version: int
    description: str
    user: str
    created_at: datetime
    slug_id: str | None
    config: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    status: ReleaseStatus = ReleaseStatus.SUCCEEDED
    # A failed rollout's cause, as its web dynos showed it ("timed out (R10)", "could
    # not start: No space left on device ..."); "" otherwise.
    failure: str = ""


# Heroku: a slug declaring this process type runs it before its release goes live.
RELEASE_TYPE = "release"


