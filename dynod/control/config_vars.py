"""Config vars: every change is a new release holding the full snapshot.

Heroku (config-vars article): keys are letters, digits and underscores, not starting
with a digit; all keys and values of an app together may not exceed 64 KB. Setting or
unsetting makes a release described ``Set FOO, BAR config vars`` / ``Remove FOO config
vars``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from dynod.control import releases
from dynod.errors import InvalidArgument, ResourceExhausted
from dynod.model.config_vars import (
    KEY_RE,
    MAX_BYTES,
    size_of,
    validate_key,
)
from dynod.model.events import ConfigChanged, EventBus
from dynod.model.releases import Release
from dynod.store import reads
from dynod.store.protocol import Store


def get_config(store: Store, app: str) -> Release:
    """The current release, whose ``config`` is the app's config. Raises NotFound."""
    with store.read() as tx:
        return reads.latest_release(tx, app)


def set_config(store: Store, events: EventBus, app: str, changes: Mapping[str, str],
               user: str) -> Release:
    """Set ``changes`` on top of the current config; returns the new release and
    publishes ConfigChanged.

    Raises InvalidArgument (no keys, bad or reserved key, NUL in a value), NotFound,
    ResourceExhausted (over 64 KB).
    """
    if not changes:
        raise InvalidArgument("no config vars given; use KEY=value")
    for key, value in changes.items():
        validate_key(key)
        if "\0" in value:
            raise InvalidArgument(f"config var {key}: a value cannot contain a NUL byte")
    with store.write() as tx:
        latest = reads.latest_release(tx, app)
        config = {**latest.config, **changes}
        size = size_of(config)
        if size > MAX_BYTES:
            raise ResourceExhausted(
                f'app "{app}": config vars would take {size} bytes, over the limit of '
                f"{MAX_BYTES} (64 KB) per app; unset some, or keep large values elsewhere"
            )
        release = releases.append_release(
            tx, app, description=f"Set {', '.join(sorted(changes))} config vars",
            user=user, slug_id=latest.slug_id, config=config)
    events.publish(ConfigChanged(app, release))
    return release


def unset_config(store: Store, events: EventBus, app: str, keys: Iterable[str],
                 user: str) -> Release:
    """Remove ``keys`` (absent ones are ignored); returns the new release and publishes
    ConfigChanged.

    Raises InvalidArgument (no keys, malformed key), NotFound.
    """
    wanted = sorted(set(keys))
    if not wanted:
        raise InvalidArgument("no config keys given; name the keys to unset")
    for key in wanted:
        if not KEY_RE.match(key):
            validate_key(key)
    with store.write() as tx:
        latest = reads.latest_release(tx, app)
        config = {k: v for k, v in latest.config.items() if k not in wanted}
        release = releases.append_release(
            tx, app, description=f"Remove {', '.join(wanted)} config vars",
            user=user, slug_id=latest.slug_id, config=config)
    events.publish(ConfigChanged(app, release))
    return release
