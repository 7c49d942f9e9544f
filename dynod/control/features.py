"""App features (Heroku's ``features`` / ``labs``): list, read, turn on and off.

Stored per app; the router reads ``http-disable-keepalive-to-dyno`` for the app's
backend (dynod.router.haproxy)."""

from __future__ import annotations

from dataclasses import dataclass

from dynod.errors import NotFound
from dynod.model.events import EventBus, FeatureChanged
from dynod.model.features import CATALOG, FeatureInfo, feature_info
from dynod.store.protocol import Store


@dataclass(frozen=True)
class AppFeature:
    info: FeatureInfo
    enabled: bool


def _enabled(store: Store, app: str) -> set[str]:
    with store.read() as tx:
        if tx.app(app) is None:
            raise NotFound(f'app "{app}" not found; see `dynoctl apps`')
        return tx.features(app)


def list_features(store: Store, app: str) -> list[AppFeature]:
    """Every known feature, by name. Raises NotFound."""
    on = _enabled(store, app)
    return [AppFeature(CATALOG[n], n in on) for n in sorted(CATALOG)]


def get_feature(store: Store, app: str, name: str) -> AppFeature:
    """Raises NotFound for an unknown app or feature."""
    info = feature_info(name)
    return AppFeature(info, name in _enabled(store, app))


def set_feature(store: Store, events: EventBus, app: str, name: str,
                on: bool) -> AppFeature:
    """Publishes FeatureChanged. Raises NotFound for an unknown app or feature."""
    info = feature_info(name)
    with store.write() as tx:
        if tx.app(app) is None:
            raise NotFound(f'app "{app}" not found; see `dynoctl apps`')
        tx.set_feature(app, name, on)
    events.publish(FeatureChanged(app, name, on))
    return AppFeature(info, on)
