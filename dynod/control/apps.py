"""Apps: create, look up, list and destroy. Creating an app makes its release v1."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from dynod.errors import AlreadyExists
from dynod.model.apps import App, random_name, validate_name
from dynod.store import reads

if TYPE_CHECKING:
    from dynod.store.sqlite import Store


def create_app(store: Store, name: str | None, user: str) -> App:
    """Create an app named ``name`` (a random one if None) with release v1.

    Raises InvalidArgument for a bad name, AlreadyExists if it is taken.
    """
    from dynod.control import releases  # noqa: PLC0415 - releases imports apps for require()

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
        # Heroku: every app starts with v1 "Initial release" (releases article).
        releases.append_release(tx, app.name, description="Initial release", user=user,
                                slug_id=None, config={})
        return app


def get_app(store: Store, name: str) -> App:
    """Raises NotFound."""
    with store.read() as tx:
        return reads.require_app(tx, name)


def list_apps(store: Store) -> list[App]:
    """Every app, sorted by name."""
    with store.read() as tx:
        return tx.apps()


def delete_app(store: Store, name: str) -> list[str]:
    """Delete the app and everything it owns (releases, formation, slugs).

    Returns the checksums of slug tarballs no app uses any more, for the caller to
    remove from disk after the transaction. Raises NotFound.
    """
    with store.write() as tx:
        reads.require_app(tx, name)
        return tx.remove_app(name)
