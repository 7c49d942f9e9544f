"""What every servicer shares: the store, the settings and the event bus of this daemon."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from google.protobuf.timestamp_pb2 import Timestamp

from dynod.control.users import Throttle
from dynod.errors import FailedPrecondition
from dynod.model.addons import AddonServices
from dynod.model.certs import CertInstaller
from dynod.model.drains import Target
from dynod.model.events import EventBus
from dynod.settings import Settings
from dynod.store.protocol import Store

if TYPE_CHECKING:
    from dynod.control.cluster import Membership
    from dynod.control.pg import Databases
    from dynod.runtime.oneoff import OneOffs
    from dynod.runtime.release_phase import ReleasePhase
    from dynod.runtime.supervisor import Supervisor


@dataclass(frozen=True)
class Daemon:
    store: Store
    settings: Settings
    # The control plane's use cases publish here after each change; the composition
    # root subscribes the supervisor, the release phase, the router and the git user's
    # authorized_keys. Servicer tests get a bus nobody listens to.
    events: EventBus = field(default_factory=EventBus)
    # Owns the dynos; None in servicer tests that run no dynos.
    supervisor: Supervisor | None = None
    # One-off dynos (run, run:detached, release.N); None where no dynos run.
    oneoffs: OneOffs | None = None
    # Runs a pending release's release command (dynod/runtime/release_phase.py).
    release_phase: ReleasePhase | None = None
    # pg:* and redis:* (backups, schedules, info); None where no add-on servers run.
    databases: Databases | None = None
    # The add-on servers (dynod/addons/manager.py); None where none run (servicer
    # tests), so creating an add-on is FAILED_PRECONDITION there.
    addons: AddonServices | None = None
    # Stores certificates and has the router serve them (router/cert_store.py); None
    # where no router runs, so certs:add is FAILED_PRECONDITION there.
    certs: CertInstaller | None = None
    # Router lines lost so far and since when (the router's log reader); None where no
    # router runs.
    router_log_drops: Callable[[], tuple[int, datetime | None]] | None = None
    # Failed sign-ins over TCP, to slow a password guesser (memory only).
    sign_ins: Throttle = field(default_factory=Throttle)
    # Connects once to a new drain's receiver (drains:add), raising DeliveryFailed;
    # None in servicer tests, which then keep any well-formed URL.
    drain_probe: Callable[[Target], None] | None = None
    # cluster:init, join, cluster, cluster:remove; None in servicer tests.
    membership: Membership | None = None

    @property
    def slugs_dir(self) -> Path:
        return self.settings.state_dir / "slugs"

    @property
    def certs_dir(self) -> Path:
        return self.settings.state_dir / "certs"

    def cert_installer(self) -> CertInstaller:
        """Raises FailedPrecondition where no router runs."""
        if self.certs is None:
            raise FailedPrecondition("this dynod runs no router; certificates cannot be "
                                     "installed")
        return self.certs

    def web_url(self, app: str) -> str:
        # HTTPS on the default domain, as Heroku's https://<app>.herokuapp.com/.
        return f"https://{app}.{self.settings.domain}/"


def timestamp(when: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(when)
    return ts
