"""Automated Certificate Management (Heroku's ACM): ``certs:auto:enable``, ``certs:auto``,
``certs:auto:refresh``, ``certs:auto:disable``.

These only record what the user wants (ACM on or off per app; a refresh clears a
domain's back-off) and publish AcmChanged; the ACME orders, the challenges and the
certificates are the router's ACME client's (``dynod.router.acme``), which follows it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from dynod.errors import FailedPrecondition
from dynod.model import acm
from dynod.model.acm import AcmDomain
from dynod.model.domains import Domain
from dynod.model.events import AcmChanged, EventBus
from dynod.store.protocol import Store
from dynod.store.reads import require_app


@dataclass(frozen=True)
class AcmState:
    """``certs:auto``: whether ACM is on, and each custom domain with what ACM knows of
    it (None: nothing yet, Heroku's ``Waiting``)."""

    enabled: bool
    domains: tuple[tuple[Domain, AcmDomain | None], ...]


def set_acm(store: Store, events: EventBus, app: str, on: bool) -> None:
    """Turn ACM on (every custom domain gets a certificate) or off (ACM's certificates
    are removed). Publishes AcmChanged. Raises NotFound."""
    now = datetime.now(UTC)
    with store.write() as tx:
        require_app(tx, app)
        tx.set_acm(app, on)
        tx.remove_acm_domains(app)
        if on:
            for d in tx.domains(app):
                tx.put_acm_domain(acm.pending(d.hostname, app, now))
    events.publish(AcmChanged(app))


def refresh_acm(store: Store, events: EventBus, app: str) -> None:
    """Try the app's Failing and Failed domains again now. Publishes AcmChanged.
    Raises NotFound, FailedPrecondition (ACM is off)."""
    now = datetime.now(UTC)
    with store.write() as tx:
        require_app(tx, app)
        if not tx.acm(app):
            raise _disabled(app)
        for d in tx.acm_domains(app):
            tx.put_acm_domain(acm.refreshed(d, now))
    events.publish(AcmChanged(app))


def acm_state(store: Store, app: str) -> AcmState:
    """Raises NotFound."""
    with store.read() as tx:
        require_app(tx, app)
        states = {d.hostname: d for d in tx.acm_domains(app)}
        return AcmState(bool(tx.acm(app)),
                        tuple((d, states.get(d.hostname)) for d in tx.domains(app)))


def _disabled(app: str) -> FailedPrecondition:
    return FailedPrecondition(f'Automatic Certificate Management is disabled on "{app}"; '
                              f"turn it on with `dynoctl certs:auto:enable -a {app}`")
