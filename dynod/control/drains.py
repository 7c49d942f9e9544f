"""Log drains (Heroku's ``drains``, ``drains:add``, ``drains:remove``): the use cases.

A drain is kept only if its URL is one dynod can send to and its receiver answers (a
connection, and a verified TLS handshake for ``syslog+tls://`` and ``https://``), so a
typo shows at once rather than as lines that never arrive. The shipping itself is
:mod:`dynod.control.drain_shipper`, which follows DrainsChanged.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from dynod.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from dynod.model.drains import MAX_DRAINS, Drain, Target, is_token, make_token, parse_url
from dynod.model.events import DrainsChanged, EventBus
from dynod.store.protocol import Store
from dynod.system.drain_sockets import DeliveryFailed

Probe = Callable[[Target], None]


def _missing(app: str) -> NotFound:
    return NotFound(f'app "{app}" not found; see `dynoctl apps`')


def list_drains(store: Store, app: str) -> list[Drain]:
    """In the order they were added. Raises NotFound."""
    with store.read() as tx:
        if tx.app(app) is None:
            raise _missing(app)
        return tx.drains(app)


def add_drain(store: Store, events: EventBus, app: str, url: str,
              probe: Probe | None) -> Drain:
    """Publishes DrainsChanged. Raises NotFound (app), InvalidArgument (URL),
    AlreadyExists, FailedPrecondition (5 drains already, or the receiver does not
    answer; nothing is added then)."""
    target = parse_url(url)
    existing = list_drains(store, app)
    _check_room(app, url, existing)
    if probe is not None:
        try:
            probe(target)
        except DeliveryFailed as exc:
            raise FailedPrecondition(
                f"drain {url}: cannot reach {target.host}:{target.port}: {exc}; check "
                f"the host, the port and that the receiver listens (no drain added)"
            ) from None
    drain = Drain(app, make_token(), url, datetime.now(UTC))
    with store.write() as tx:
        if tx.app(app) is None:
            raise _missing(app)
        _check_room(app, url, tx.drains(app))
        tx.add_drain(drain)
    events.publish(DrainsChanged(app))
    return drain


def _check_room(app: str, url: str, existing: list[Drain]) -> None:
    if any(d.url == url for d in existing):
        raise AlreadyExists(f'app "{app}" already has the drain {url}; see '
                            f"`dynoctl drains -a {app}`")
    if len(existing) >= MAX_DRAINS:
        raise FailedPrecondition(f'app "{app}" has {len(existing)} drains, the most it '
                                 f"may have; remove one with `dynoctl drains:remove`")


def remove_drain(store: Store, events: EventBus, app: str, url_or_token: str) -> Drain:
    """By URL or token. Publishes DrainsChanged. Raises NotFound, InvalidArgument."""
    if not url_or_token:
        raise InvalidArgument("give the drain's URL or token (d.…); see `dynoctl drains`")
    with store.write() as tx:
        if tx.app(app) is None:
            raise _missing(app)
        key = "token" if is_token(url_or_token) else "url"
        drain = next((d for d in tx.drains(app)
                      if getattr(d, key) == url_or_token), None)
        if drain is None:
            raise NotFound(f'drain "{url_or_token}" not found on app "{app}"; see '
                           f"`dynoctl drains -a {app}`")
        tx.remove_drain(app, drain.token)
    events.publish(DrainsChanged(app))
    return drain
