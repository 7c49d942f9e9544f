"""Domains: the host names an app answers on, besides ``<app>.<domain>``, and its
maintenance mode (both read by the router).

Heroku: ``domains:add www.example.com``; a host name belongs to at most one app; the
default ``<app>.herokuapp.com`` cannot be removed. ``maintenance:on`` serves H80 (503).
"""

from __future__ import annotations

from datetime import UTC, datetime

from dynod.errors import AlreadyExists, FailedPrecondition, NotFound
from dynod.model.domains import Domain, normalize_hostname
from dynod.model.events import DomainsChanged, EventBus, MaintenanceChanged
from dynod.store.protocol import Store


def add_domain(store: Store, events: EventBus, app: str, hostname: str,
               platform_domain: str) -> Domain:
    """Route ``hostname`` to ``app``; publishes DomainsChanged.

    Raises InvalidArgument, NotFound (app), AlreadyExists (taken by this or another app),
    FailedPrecondition (a name under the platform domain).
    """
    name = normalize_hostname(hostname)
    if name == platform_domain or name.endswith("." + platform_domain):
        raise FailedPrecondition(
            f"domain {name!r} is under the platform domain {platform_domain!r}, whose names "
            f"belong to apps (<app>.{platform_domain}); add a name of your own"
        )
    domain = Domain(name, app, datetime.now(UTC))
    with store.write() as tx:
        if tx.app(app) is None:
            raise NotFound(f'app "{app}" not found; see `dynoctl apps`')
        owner = tx.domain(name)
        if owner is not None:
            raise AlreadyExists(
                f"domain {name!r} is already added to app \"{owner.app}\"; remove it there "
                "first with `dynoctl domains:remove`"
            )
        tx.add_domain(domain)
    events.publish(DomainsChanged(app, name))
    return domain


def remove_domain(store: Store, events: EventBus, app: str, hostname: str) -> None:
    """Publishes DomainsChanged. Raises InvalidArgument, NotFound (app, or the name is
    not one of its domains)."""
    name = normalize_hostname(hostname)
    with store.write() as tx:
        if tx.app(app) is None:
            raise NotFound(f'app "{app}" not found; see `dynoctl apps`')
        owner = tx.domain(name)
        if owner is None or owner.app != app:
            raise NotFound(f'domain {name!r} is not a domain of app "{app}"; see '
                           "`dynoctl domains`")
        tx.remove_domain(name)
    events.publish(DomainsChanged(app, name))


def list_domains(store: Store, app: str | None = None) -> list[Domain]:
    """``app``'s domains (all apps' if None), by host name. Raises NotFound."""
    with store.read() as tx:
        if app is not None and tx.app(app) is None:
            raise NotFound(f'app "{app}" not found; see `dynoctl apps`')
        return tx.domains(app)


def set_maintenance(store: Store, events: EventBus, app: str, on: bool) -> None:
    """Publishes MaintenanceChanged. Raises NotFound."""
    with store.write() as tx:
        if tx.app(app) is None:
            raise NotFound(f'app "{app}" not found; see `dynoctl apps`')
        tx.set_maintenance(app, on)
    events.publish(MaintenanceChanged(app, on))


def maintenance(store: Store, app: str) -> bool:
    """Raises NotFound."""
    with store.read() as tx:
        on = tx.maintenance(app)
    if on is None:
        raise NotFound(f'app "{app}" not found; see `dynoctl apps`')
    return on
