"""What every servicer shares: the store and the settings of this daemon."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from google.protobuf.timestamp_pb2 import Timestamp

from dynod.router.protocol import NullRouter, Router
from dynod.settings import Settings
from dynod.store.sqlite import Store

if TYPE_CHECKING:
    from dynod.runtime.oneoff import OneOffs
    from dynod.runtime.release_phase import ReleasePhase
    from dynod.runtime.supervisor import Supervisor as Reconciler


@dataclass(frozen=True)
class Daemon:
    store: Store
    settings: Settings
    # The HTTP router reconcile tells about up web dynos (dynod/routing.py).
    router: Router = field(default_factory=NullRouter)
    # Owns the dynos; None in servicer tests that run no dynos.
    reconciler: Reconciler | None = None
    # One-off dynos (run, run:detached, release.N); None where no dynos run.
    oneoffs: OneOffs | None = None
    # Runs a pending release's release command (dynod/release_phase.py).
    release_phase: ReleasePhase | None = None

    def changed(self, app: str) -> None:
        """Servicers call this after a write that changes ``app``'s desired dynos
        (scale, config, release, rollback, delete): reconcile runs soon, and a new
        pending release gets its release phase."""
        if self.reconciler is not None:
            self.reconciler.changed(app)
        if self.release_phase is not None:
            self.release_phase.kick(app)

    @property
    def slugs_dir(self) -> Path:
        return self.settings.state_dir / "slugs"

    def web_url(self, app: str) -> str:
        return f"http://{app}.{self.settings.domain}/"


def timestamp(when: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(when)
    return ts
