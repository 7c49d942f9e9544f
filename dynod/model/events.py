"""What the control plane tells the rest of dynod after a change has been committed.

Every use case in ``dynod.control`` that changes the desired state commits, then
publishes exactly one event on the daemon's :class:`EventBus`; the build pipeline and
the runtime publish the platform's own verdicts on the same bus (a build started or
finished, a release phase started, a release failed), so that every ``app[api]`` line
is written in one place. The composition root
(``dynod.__main__``) subscribes the parts that follow the state: the supervisor and the
release phase (:data:`DYNOS_CHANGED`), the router (:data:`ROUTES_CHANGED`), the git
user's authorized_keys (:class:`KeysChanged`) and the ``app[api]`` lines of the app's
log (``dynod.control.audit``). Publishing is synchronous, in the caller's thread, so a
subscriber must be quick (wake a thread, write a line); one that fails is logged and
never fails the change, which is already committed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from dynod.errors import DynodError
from dynod.model.formation import Process
from dynod.model.releases import Release

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Event:
    """A committed change of the desired state."""


@dataclass(frozen=True)
class AppEvent(Event):
    """A change of one app's state."""

    app: str


@dataclass(frozen=True)
class AppCreated(AppEvent):
    """The app, its release v1 and its build settings exist."""

    user: str


@dataclass(frozen=True)
class AppDestroyed(AppEvent):
    """The app and everything it owned are gone (its dynos are to stop)."""


@dataclass(frozen=True)
class ConfigChanged(AppEvent):
    """Config vars set or unset: ``release`` is the new release holding them."""

    release: Release


@dataclass(frozen=True)
class ReleaseCreated(AppEvent):
    """A slug was released (``releases:create``, a build): ``release`` is new and may be
    pending its release phase."""

    release: Release


@dataclass(frozen=True)
class RolledBack(AppEvent):
    """``release`` is new and copies an older release's slug and config."""

    release: Release


@dataclass(frozen=True)
class FormationChanged(AppEvent):
    """Counts or sizes changed; ``processes`` is the whole formation afterwards.
    ``scaled`` is False for a resize (sizes only, ``ps:type``)."""

    user: str
    processes: tuple[Process, ...]
    scaled: bool


@dataclass(frozen=True)
class DomainsChanged(AppEvent):
    """A custom domain of the app was added or removed."""

    hostname: str


@dataclass(frozen=True)
class MaintenanceChanged(AppEvent):
    on: bool


@dataclass(frozen=True)
class FeatureChanged(AppEvent):
    """An app feature was turned on or off (features:enable/disable)."""

    feature: str
    on: bool


@dataclass(frozen=True)
class DrainsChanged(AppEvent):
    """A log drain was added to or removed from the app (drains:add/remove)."""


@dataclass(frozen=True)
class AddonsChanged(AppEvent):
    """The app's add-ons changed: one was created, destroyed, attached, detached,
    promoted or had its credentials rotated (``addon`` names it). ``release`` is the
    new release holding the attachments' URL config vars (None when the app made none,
    e.g. it is being destroyed); such releases skip the release phase (Heroku:
    release-phase, "add-on config var changes"). ``lines`` are ``app[api]`` lines that
    follow the release's own (``@ref:... completed provisioning, setting
    DATABASE_URL.``). The access reconciler and the supervisor follow it."""

    addon: str
    user: str
    release: Release | None = None
    lines: tuple[str, ...] = ()


@dataclass(frozen=True)
class AcmChanged(AppEvent):
    """Automated Certificate Management was turned on, off or refreshed for the app."""


@dataclass(frozen=True)
class CertsChanged(Event):
    """A certificate the router serves was added or removed."""

    name: str


@dataclass(frozen=True)
class KeysChanged(Event):
    """An ssh key that may push was added or removed."""

    key_id: str


@dataclass(frozen=True)
class BuildStarted(AppEvent):
    """A build of the app began (a push, ``dynoctl deploy``)."""

    user: str


@dataclass(frozen=True)
class BuildFinished(AppEvent):
    succeeded: bool


@dataclass(frozen=True)
class ReleasePhaseStarted(AppEvent):
    """Release ``version``'s release command is starting as a one-off dyno."""

    version: int
    user: str


@dataclass(frozen=True)
class ReleaseFailed(AppEvent):
    """Release ``version`` was marked failed (its release command, or web dynos that
    never came up); ``message`` is the line that says so, why, and what keeps serving."""

    version: int
    message: str


@dataclass(frozen=True)
class BackupFailed(AppEvent):
    """A backup of one of the app's databases failed, or failed its verification
    restore; ``message`` is the app[api] line that says which, why and by whom."""

    message: str


# Changes after which an app's dynos may differ (counts, sizes, release, config, the app
# gone, its add-ons' URLs) or a release may wait for its release phase.
DYNOS_CHANGED: tuple[type[AppEvent], ...] = (
    AppDestroyed, ConfigChanged, ReleaseCreated, RolledBack, FormationChanged, AddonsChanged)
# Changes the router serves: host names, maintenance pages, certificates.
ROUTES_CHANGED: tuple[type[Event], ...] = (DomainsChanged, MaintenanceChanged, CertsChanged,
                                           FeatureChanged)

E = TypeVar("E", bound=Event)


class EventBus:
    """Synchronous publish/subscribe of :class:`Event` values; safe from any thread.

    Subscribers run in the order they subscribed, in the publisher's thread.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: list[tuple[tuple[type[Event], ...], Callable[[Any], None]]] = []

    def subscribe(self, kinds: type[E] | tuple[type[E], ...],
                  handler: Callable[[E], None]) -> None:
        """Call ``handler(event)`` for every published event of one of ``kinds``."""
        wanted = kinds if isinstance(kinds, tuple) else (kinds,)
        with self._lock:
            self._subscribers.append((wanted, handler))

    def publish(self, event: Event) -> None:
        """Hand ``event`` to its subscribers. Never raises: the change is committed, so
        a subscriber's failure is logged (it catches up on its own: the supervisor and
        the router also poll the store) and the caller's call succeeds."""
        with self._lock:
            subscribers = list(self._subscribers)
        for kinds, handler in subscribers:
            if not isinstance(event, kinds):
                continue
            try:
                handler(event)
            except DynodError as exc:  # a known condition (e.g. the router is down)
                log.warning("%s: a subscriber failed: %s", type(event).__name__, exc.message)
            except Exception:
                log.exception("%s: subscriber %r failed", type(event).__name__, handler)
