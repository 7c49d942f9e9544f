"""Slugs: a tar.gz of ``./app`` with its process types, stored once by checksum.

Heroku's Platform API flow: create a slug (process types, checksum), upload the
tarball, create a release from the slug. The tarball lives at
``<state_dir>/slugs/<sha256>.tgz``, written under a temporary name, verified, then
renamed, so a file with the final name is always complete and correct. Unpacking it
belongs to builds.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType

from dynod.errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted
from dynod.model.slugs import (
    LAYER_NAMES,
    MAX_SLUG_BYTES,
    Slug,
    parse_checksum,
    validate_process_types,
)
from dynod.slug.blobs import write_blob
from dynod.store import reads
from dynod.store.protocol import Store, Tx


def require(tx: Tx, app: str, slug_id: str) -> Slug:
    reads.require_app(tx, app)
    slug = tx.slug(app, slug_id)
    if slug is None:
        raise NotFound(f'app "{app}" has no slug {slug_id!r}; create one first')
    return slug


def create_slug(
    store: Store,
    app: str,
    *,
    checksum: str,
    size: int,
    process_types: Mapping[str, str],
    commit: str = "",
    stack: str | None = None,
    layers: tuple[str, ...] = (),
) -> Slug:
    """Record a slug whose tarball will be uploaded next, built on ``stack`` (the app's
    stack if None; the caller checks that it exists) with the stack's language
    ``layers``: its dynos run on that stack with those layers.

    Raises InvalidArgument (checksum, size, process types), ResourceExhausted (over
    500 MB), NotFound (app).
    """
    checksum = parse_checksum(checksum)
    if size <= 0:
        raise InvalidArgument(f"slug size {size} is invalid; give the tarball's size in bytes")
    if size > MAX_SLUG_BYTES:
        raise ResourceExhausted(
            f"slug of {size} bytes is over the limit of {MAX_SLUG_BYTES} (500 MB); "
            "make it smaller (.slugignore, fewer dependencies)"
        )
    validate_process_types(process_types)
    if len(commit) > 64:
        raise InvalidArgument("commit is too long; give a git commit id")
    for layer in layers:
        if layer not in LAYER_NAMES:
            raise InvalidArgument(
                f'layer "{layer}" does not exist; give some of: {", ".join(LAYER_NAMES)}')
    with store.write() as tx:
        reads.require_app(tx, app)
        if stack is None:
            settings = tx.app_build_settings(app)
            assert settings is not None  # the app exists
            stack = settings.stack
        slug = Slug(id=str(uuid.uuid4()), app=app, checksum=checksum, size=size,
                    created_at=datetime.now(UTC),
                    process_types=MappingProxyType(dict(process_types)), commit=commit,
                    stack=stack, layers=tuple(n for n in LAYER_NAMES if n in layers))
        tx.put_slug(slug)
        return slug


def get_slug(store: Store, app: str, slug_id: str) -> Slug:
    """Raises NotFound."""
    with store.read() as tx:
        return require(tx, app, slug_id)


def upload_slug(
    store: Store, slugs_dir: Path, app: str, slug_id: str, chunks: Iterable[bytes]
) -> Slug:
    """Store the tarball of a created slug, verifying its size, gzip header and checksum.

    Raises NotFound, FailedPrecondition (already uploaded), InvalidArgument (not what
    was declared).
    """
    with store.read() as tx:
        slug = require(tx, app, slug_id)
    if slug.uploaded:
        raise FailedPrecondition(
            f"slug {slug_id} is already uploaded; create a release from it"
        )
    write_blob(slugs_dir, chunks, slug.checksum, slug.size)
    with store.write() as tx:
        slug = require(tx, app, slug_id)
        uploaded = Slug(**{**slug.__dict__, "uploaded": True})
        tx.put_slug(uploaded)
        return uploaded




