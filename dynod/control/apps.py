"""Apps: create, look up, list and destroy. Creating an app makes its release v1."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from dynod.control import addons, releases
from dynod.errors import AlreadyExists, FailedPrecondition
from dynod.model.addons import AddonServices
from dynod.model.apps import App, random_name, validate_name
from dynod.model.events import AddonsChanged, AppCreated, AppDestroyed, EventBus
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


def delete_app(store: Store, events: EventBus, slugs_dir: Path, name: str, *,
               services: AddonServices | None = None, destroy_addons: bool = False,
               user: str = "dynod") -> None:
    """Delete the app and everything it owns (releases, formation, slugs, builds,
    domains, add-ons), then the slug tarballs in ``slugs_dir`` no other app uses;
    publishes AppDestroyed, and AddonsChanged for each other app that loses an
    attachment.

    Heroku (apps:destroy): "This will delete ⬢ app including all add-ons". The add-ons
    the app owns are destroyed only when ``destroy_addons`` says the user agreed (their
    servers first, through ``services``, so a failure there changes no record and a
    retry finishes: deprovisioning is idempotent); add-ons of other apps are only
    detached from it. Raises NotFound, FailedPrecondition (owns add-ons and
    ``destroy_addons`` is False, or no servers to remove them), Unavailable.
    """
    with store.read() as tx:
        reads.require_app(tx, name)
        owned = tx.list_addons(name)
    if owned and not destroy_addons:
        listed = ", ".join(a.name for a in owned)
        raise FailedPrecondition(
            f'app "{name}" owns add-ons ({listed}); destroying it destroys them and their '
            f"data: confirm with `dynoctl apps:destroy {name} --confirm {name}`, or destroy "
            "them first with `dynoctl addons:destroy`")
    if owned and services is None:
        raise FailedPrecondition(
            f'app "{name}" owns add-ons, and this daemon runs no add-on servers to remove '
            "them; start dynod with its add-on services")
    for addon in owned:
        assert services is not None
        services.deprovision(addon.name, addon.service)
    with store.write() as tx:
        reads.require_app(tx, name)
        _gone, detached = addons.destroy_app_addons(tx, name, user)
        unused = tx.remove_app(name)
    # After the commit: a crash in between leaves an unused file (gc removes it), never
    # a slug without its tarball.
    blobs.remove_blobs(slugs_dir, unused)
    for other, addon_name, release in detached:
        events.publish(AddonsChanged(other, addon_name, user, release))
    events.publish(AppDestroyed(name))
