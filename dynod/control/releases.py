"""Releases: the append-only ledger of (slug, config snapshot) pairs of an app.

Heroku (releases article): the first release is v1 and each change of code or config
makes the next one; a rollback is a new release copying an older one's slug and config.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from urllib.parse import urlsplit

from dynod.control import formation, slugs
from dynod.errors import FailedPrecondition
from dynod.model.events import EventBus, ReleaseCreated, RolledBack
from dynod.model.releases import RELEASE_TYPE, Release, ReleaseStatus
from dynod.store import reads
from dynod.store.protocol import Store, Tx

log = logging.getLogger(__name__)

# A release is dated at least this long after the one before it: a millisecond, so that
# the order survives a client that keeps only milliseconds (JavaScript's Date).
AFTER_PREVIOUS = timedelta(milliseconds=1)


def release_time(now: datetime, previous: datetime | None) -> datetime:
    """When a new release is dated: ``now``, or just after the ``previous`` release's
    time when the wall clock is not past it (stepped back by NTP or an operator's
    `date -s`), so that release times increase with their versions."""
    if previous is None or now >= previous + AFTER_PREVIOUS:
        return now
    return previous + AFTER_PREVIOUS


def set_status(store: Store, app: str, version: int, status: ReleaseStatus) -> None:
    """The release phase's verdict on release ``version`` (it tells the supervisor
    itself, so no event)."""
    with store.write() as tx:
        reads.require_release(tx, app, version)
        tx.set_release_status(app, version, status)


def append_release(
    tx: Tx,
    app: str,
    *,
    description: str,
    user: str,
    slug_id: str | None,
    config: Mapping[str, str],
    release_phase: bool = True,
) -> Release:
    """Add the next release of ``app`` inside ``tx`` and declare its process types in
    the formation. The version is the latest plus one, read in the same write
    transaction, so two writers can never make the same version. A slug with a
    ``release:`` process type makes a pending release: the release phase
    (``release_phase``) runs that command and marks it succeeded or failed. The
    caller publishes the event once the transaction has committed.

    ``release_phase=False`` (an add-on's config vars; Heroku: such releases "are marked
    successful without running" it) makes a succeeded release, unless the newest one
    is still pending: then the code has not passed its release phase yet, and the new
    release waits for it as well (its command runs with the new URLs)."""
    newest = tx.latest_release(app)
    slug = tx.slug(app, slug_id) if slug_id is not None else None
    pending = slug is not None and RELEASE_TYPE in slug.process_types
    if not release_phase and (newest is None or newest.status is not ReleaseStatus.PENDING):
        pending = False
    now = datetime.now(UTC)
    created_at = release_time(now, newest.created_at if newest else None)
    if newest is not None and now < newest.created_at:
        log.warning('app "%s": the wall clock (%s) is behind release v%d\'s time (%s); '
                    "v%d is dated %s, just after it, so that release times stay in order",
                    app, now.isoformat(), newest.version, newest.created_at.isoformat(),
                    newest.version + 1, created_at.isoformat())
    release = Release(
        app=app,
        version=1 if newest is None else newest.version + 1,
        description=description,
        user=user,
        created_at=created_at,
        slug_id=slug_id,
        config=MappingProxyType(dict(config)),
        status=ReleaseStatus.PENDING if pending else ReleaseStatus.SUCCEEDED,
    )
    tx.add_release(release)
    if slug is not None:
        formation.declare(tx, app, slug.process_types)
    return release


def list_releases(store: Store, app: str, limit: int | None = None) -> list[Release]:
    """Newest first, at most ``limit`` (all if None). Raises NotFound."""
    with store.read() as tx:
        reads.require_app(tx, app)
        return tx.releases(app, limit)


def get_release(store: Store, app: str, version: int | None = None) -> Release:
    """Release ``version``, or the current one. Raises NotFound."""
    with store.read() as tx:
        if version is None:
            return reads.current_release(tx, app)
        reads.require_app(tx, app)
        return reads.require_release(tx, app, version)


def create_release(
    store: Store, events: EventBus, app: str, slug_id: str, user: str, *,
    description: str | None = None,
) -> Release:
    """A new release of an uploaded slug with the current config; publishes
    ReleaseCreated.

    Raises NotFound (app, slug), FailedPrecondition (slug not uploaded yet).
    """
    with store.write() as tx:
        base = reads.latest_release(tx, app)
        slug = slugs.require(tx, app, slug_id)
        if not slug.uploaded:
            raise FailedPrecondition(
                f'slug {slug_id} of app "{app}" has not been uploaded; upload its tarball '
                "first (dynoctl slugs:deploy does both)"
            )
        # Heroku: "Deploy <8-hex commit>"; a slug without a commit gets its checksum's.
        ref = (slug.commit or slug.checksum.removeprefix("sha256:"))[:8]
        release = append_release(tx, app, description=description or f"Deploy {ref}",
                                 user=user, slug_id=slug.id, config=base.config)
    events.publish(ReleaseCreated(app, release))
    return release


def rollback(store: Store, events: EventBus, app: str, version: int | None,
             user: str) -> Release:
    """A new release copying release ``version``'s slug and config (default: the one
    before the current release), described ``Rollback to vN``; publishes RolledBack.
    The add-ons' URLs stay those of the app's current attachments (rollback_config).

    Raises NotFound (app, version), FailedPrecondition (nothing before v1).
    """
    with store.write() as tx:
        running = reads.current_release(tx, app)
        if version is None:
            if running.version <= 1:
                raise FailedPrecondition(
                    f'app "{app}" has only release v1; there is nothing to roll back to'
                )
            version = running.version - 1
        target = reads.require_release(tx, app, version)
        release = append_release(tx, app, description=f"Rollback to v{target.version}",
                                 user=user, slug_id=target.slug_id,
                                 config=rollback_config(tx, app, target.config))
    events.publish(RolledBack(app, release))
    return release


def attachment_vars(tx: Tx, app: str) -> dict[str, str]:
    """The config vars the app's add-on attachments hold now: ``DATABASE_URL`` -> URL."""
    out: dict[str, str] = {}
    for att in tx.list_attachments(app=app):
        addon = tx.get_addon(att.addon)
        if addon is not None:
            out[att.config_var] = addon.url
    return out


def _locator(url: str) -> tuple[str, str, int | None, str]:
    """A URL without its user and password, so rotated credentials still match."""
    try:
        parts = urlsplit(url)
        return (parts.scheme, parts.hostname or "", parts.port, parts.path)
    except ValueError:
        return ("", url, None, "")


def rollback_config(tx: Tx, app: str, config: Mapping[str, str]) -> dict[str, str]:
    """Heroku (releases): rolling back "does not add or remove add-ons". An older
    release's ``config`` without any value that is an add-on's URL, plus the URL of each
    current attachment of ``app``: a rollback never points the app at an add-on it no
    longer has attached, nor loses one it has."""
    servers = {_locator(a.url) for a in tx.list_addons()}
    kept = {k: v for k, v in config.items() if _locator(v) not in servers}
    kept.update(attachment_vars(tx, app))
    return kept
