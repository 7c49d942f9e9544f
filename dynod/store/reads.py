"""Reads every part of dynod shares: an app, its releases, raising NotFound with the fix.

They take a transaction, so a caller can combine them with its own reads and writes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dynod.errors import NotFound
from dynod.model.apps import App
from dynod.model.releases import RELEASE_TYPE, Release

if TYPE_CHECKING:
    from dynod.store.protocol import Tx


def require_app(tx: Tx, name: str) -> App:
    """The app ``name`` in this transaction. Raises NotFound."""
    app = tx.app(name)
    if app is None:
        raise NotFound(f'app "{name}" not found; list your apps with `dynoctl apps`')
    return app


def current_release(tx: Tx, app: str) -> Release:
    """The app's current release: the latest that succeeded (a release waiting for its
    release phase, or failed in it, never runs). Every app has v1. Raises NotFound."""
    require_app(tx, app)
    release = tx.latest_succeeded_release(app)
    if release is None:  # pragma: no cover - create_app always makes v1
        raise NotFound(f'app "{app}" has no releases')
    return release


def latest_release(tx: Tx, app: str) -> Release:
    """The app's newest release whatever its status: the base of the next one (its
    config is the app's config, even while its release phase runs or after it failed).
    Raises NotFound."""
    require_app(tx, app)
    release = tx.latest_release(app)
    if release is None:  # pragma: no cover - create_app always makes v1
        raise NotFound(f'app "{app}" has no releases')
    return release


def release_command(tx: Tx, release: Release) -> str | None:
    """The slug's ``release:`` command, None when it declares none."""
    if release.slug_id is None:
        return None
    slug = tx.slug(release.app, release.slug_id)
    return None if slug is None else slug.process_types.get(RELEASE_TYPE)


def require_release(tx: Tx, app: str, version: int) -> Release:
    """Release ``version`` of ``app``. Raises NotFound naming the current one."""
    release = tx.release(app, version)
    if release is None:
        latest = current_release(tx, app)
        raise NotFound(
            f'app "{app}" has no release v{version} (the current one is v{latest.version}); '
            "list them with `dynoctl releases`"
        )
    return release
