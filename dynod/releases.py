"""Releases: the append-only ledger of (slug, config snapshot) pairs of an app.

Heroku (releases article): the first release is v1 and each change of code or config
makes the next one; a rollback is a new release copying an older one's slug and config.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from types import MappingProxyType
from typing import TYPE_CHECKING

from dynod import apps, formation, slugs
from dynod.errors import FailedPrecondition, NotFound

if TYPE_CHECKING:
    from dynod.state import Store, Tx


class ReleaseStatus(StrEnum):
    # Heroku's release statuses; pending and failed come with the release phase.
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True)
class Release:
    """Release ``version`` of ``app``: a slug (None before the first deploy) and the
    full config snapshot the dynos of this release see."""

    app: str
    version: int
    description: str
    user: str
    created_at: datetime
    slug_id: str | None
    config: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    status: ReleaseStatus = ReleaseStatus.SUCCEEDED


def current(tx: Tx, app: str) -> Release:
    """The app's current release (every app has v1). Raises NotFound for the app."""
    apps.require(tx, app)
    release = tx.latest_release(app)
    if release is None:  # pragma: no cover - create_app always makes v1
        raise NotFound(f'app "{app}" has no releases')
    return release


def append_release(
    tx: Tx,
    app: str,
    *,
    description: str,
    user: str,
    slug_id: str | None,
    config: Mapping[str, str],
) -> Release:
    """Add the next release of ``app`` inside ``tx`` and declare its process types in
    the formation. The version is the latest plus one, read in the same write
    transaction, so two writers can never make the same version."""
    latest = tx.latest_release(app)
    release = Release(
        app=app,
        version=1 if latest is None else latest.version + 1,
        description=description,
        user=user,
        created_at=datetime.now(UTC),
        slug_id=slug_id,
        config=MappingProxyType(dict(config)),
    )
    tx.add_release(release)
    if slug_id is not None:
        slug = tx.slug(app, slug_id)
        if slug is not None:
            formation.declare(tx, app, slug.process_types)
    return release


def list_releases(store: Store, app: str, limit: int | None = None) -> list[Release]:
    """Newest first, at most ``limit`` (all if None). Raises NotFound."""
    with store.read() as tx:
        apps.require(tx, app)
        return tx.releases(app, limit)


def require(tx: Tx, app: str, version: int) -> Release:
    release = tx.release(app, version)
    if release is None:
        latest = current(tx, app)
        raise NotFound(
            f'app "{app}" has no release v{version} (the current one is v{latest.version}); '
            "list them with `dynoctl releases`"
        )
    return release


def get_release(store: Store, app: str, version: int | None = None) -> Release:
    """Release ``version``, or the current one. Raises NotFound."""
    with store.read() as tx:
        if version is None:
            return current(tx, app)
        apps.require(tx, app)
        return require(tx, app, version)


def create_release(
    store: Store, app: str, slug_id: str, user: str, description: str | None = None
) -> Release:
    """A new release of an uploaded slug with the current config.

    Raises NotFound (app, slug), FailedPrecondition (slug not uploaded yet).
    """
    with store.write() as tx:
        latest = current(tx, app)
        slug = slugs.require(tx, app, slug_id)
        if not slug.uploaded:
            raise FailedPrecondition(
                f'slug {slug_id} of app "{app}" has not been uploaded; upload its tarball '
                "first (dynoctl slugs:deploy does both)"
            )
        # Heroku: "Deploy <8-hex commit>"; a slug without a commit gets its checksum's.
        ref = (slug.commit or slug.checksum.removeprefix("sha256:"))[:8]
        return append_release(tx, app, description=description or f"Deploy {ref}", user=user,
                              slug_id=slug.id, config=latest.config)


def rollback(store: Store, app: str, version: int | None, user: str) -> Release:
    """A new release copying release ``version``'s slug and config (default: the one
    before the current release), described ``Rollback to vN``.

    Raises NotFound (app, version), FailedPrecondition (nothing before v1).
    """
    with store.write() as tx:
        latest = current(tx, app)
        if version is None:
            if latest.version <= 1:
                raise FailedPrecondition(
                    f'app "{app}" has only release v1; there is nothing to roll back to'
                )
            version = latest.version - 1
        target = require(tx, app, version)
        return append_release(tx, app, description=f"Rollback to v{target.version}",
                              user=user, slug_id=target.slug_id, config=target.config)
