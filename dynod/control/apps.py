"""Apps: create, look up, list and destroy. Creating an app makes its release v1."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from dynod.control import releases
from dynod.errors import AlreadyExists
from dynod.model.apps import App, random_name, validate_name
from dynod.model.events import AppCreated, AppDestroyed, EventBus
from dynod.slug import blobs
from dynod.store import reads
from dynod.store.protocol import Store


def create_app(store: Store, events: EventBus, name: str | None, user: str,
               stack: str | None = None) -> App:
    """Create an app named ``name`` (a random one if None) with release v1, building on
    ``stack`` (the default if None; the caller checks that it exists), in one
    transaction; publishes AppCreated.

    Raises InvalidArgument for a bad name, AlreadyExists if it is taken.
    """
    if name is not None:
        validate_name(name)
    with store.write() as tx:
        if name is None:
            name = random_name()
            while tx.app(name) is not None:
                name = random_name()
        elif tx.app(name) is not None:
            raise AlreadyExists(
                f'app "{name}" already exists; choose another name, or omit it for a random one'
            )
        app = App(name=name, owner=user, created_at=datetime.now(UTC))
        tx.add_app(app)
        if stack is not None:
            default = tx.app_build_settings(app.name)
            assert default is not None  # just added
            tx.set_app_build_settings(app.name, replace(default, stack=stack))
        # Heroku: every app starts with v1 "Initial release" (releases article). It has
        # no slug, so the formation stays empty until the first deploy declares types.
        releases.append_release(tx, app.name, description="Initial release", user=user,
                                slug_id=None, config={})
    events.publish(AppCreated(app.name, user))
    return app


def get_app(store: Store, name: str) -> App:
    """Raises NotFound."""
    with store.read() as tx:
        return reads.require_app(tx, name)


def list_apps(store: Store) -> list[App]:
    """Every app, sorted by name."""
    with store.read() as tx:
        return tx.apps()


def delete_app(store: Store, events: EventBus, slugs_dir: Path, name: str) -> None:
    """Delete the app and everything it owns (releases, formation, slugs, builds,
    domains), then the slug tarballs in ``slugs_dir`` no other app uses; publishes
    AppDestroyed. Raises NotFound."""
    with store.write() as tx:
        reads.require_app(tx, name)
        unused = tx.remove_app(name)
    # After the commit: a crash in between leaves an unused file (gc removes it), never
    # a slug without its tarball.
    blobs.remove_blobs(slugs_dir, unused)
    events.publish(AppDestroyed(name))
