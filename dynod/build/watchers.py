"""What a deploy's output reports on from the dyno runtime, as the build sees it.

The build pipeline never imports the runtime (DESIGN.md, "Code layout"): the composition
root hands a build the runtime's supervisor and release phase through these protocols,
or None where no dynos run (tools, tests).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from dynod.model.releases import ReleaseStatus


class RolloutWatcher(Protocol):
    """The supervisor, for Heroku's "Verifying deploy"."""

    def follow_rollout(self, app: str, version: int, timeout: float = 150.0) -> bool | None:
        """Wait until every web dyno of ``app`` runs release ``version`` (True), the
        release failed to come up (False), or ``timeout`` passed (None)."""
        ...


class ReleasePhaseWatcher(Protocol):
    """The release phase, for a push that waits on its release command."""

    def follow_lines(self, app: str, version: int, on_line: Callable[[str], None],
                     indent: str = "") -> ReleaseStatus:
        """Print the release command's output as Heroku's git push does; return the
        release's final status."""
        ...
