"""Disk hygiene (issue 7): slugs and unpacked slug trees past a retention (the slugs of
each app's last ``keep`` deploys, counted as distinct slugs, and of its current release)
are removed, and so are the build caches of apps that no longer exist.

Slug tarballs are content-addressed (``<state>/slugs/<sha256>.tgz``, shared by apps) and
unpacked trees are ``<state>/slugs/trees/<sha256>-<uid>``. A tarball or tree is kept
while any kept release of any app refers to it; a tree is also kept while a dyno's root
still has it as a lower layer; a tarball no release refers to is kept for an hour (an
upload whose release is not made yet). A rollback to a collected release is refused by the
dyno start ("slug ... is gone"), as Heroku refuses rollbacks past its retention.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from dynod.settings import Settings
from dynod.slug import trees, unpack
from dynod.store import reads
from dynod.store.protocol import Store
from dynod.system import mounts

log = logging.getLogger(__name__)

KEEP = 10
UPLOAD_GRACE = 3600.0


@dataclass(frozen=True)
class Collected:
    slugs: int = 0
    trees: int = 0
    caches: int = 0
    bytes: int = 0


def size_of(path: Path) -> int:
    """Bytes on disk under ``path`` (files counted once per inode); 0 if missing."""
    if path.is_file():
        return path.stat().st_blocks * 512
    seen: set[int] = set()
    total = 0
    for directory, dirs, files in os.walk(path):
        for name in (*dirs, *files):
            with contextlib.suppress(OSError):
                st = (Path(directory) / name).lstat()
                if st.st_ino not in seen:
                    seen.add(st.st_ino)
                    total += st.st_blocks * 512
    return total


def checksums(store: Store, keep: int = KEEP) -> tuple[set[str], set[str]]:
    """sha256 of the slugs kept (each app's ``keep`` newest distinct slugs, and its
    current release's), and of those any release refers to."""
    kept: set[str] = set()
    referenced: set[str] = set()
    with store.read() as tx:
        for app in tx.apps():
            rels = sorted(tx.releases(app.name, None), key=lambda r: r.version, reverse=True)
            current = reads.current_release(tx, app.name)
            # The slugs of the last ``keep`` deploys, counted as distinct slugs: config
            # changes and restarts make releases too, and ten of them must not take every
            # older code out of reach of a rollback.
            newest: list[str] = []
            for r in rels:
                slug = tx.slug(app.name, r.slug_id) if r.slug_id else None
                if slug is None:
                    continue
                referenced.add(slug.sha256)
                if slug.sha256 not in newest:
                    newest.append(slug.sha256)
                if len(newest) <= keep or r.version == current.version:
                    kept.add(slug.sha256)
    return kept, referenced


def collect(store: Store, settings: Settings,
            in_use: Callable[[Path], bool] = mounts.is_overlay_lower,
            keep: int = KEEP) -> Collected:
    """Remove what no kept release needs. Safe to run at any time (dynos running)."""
    kept, referenced = checksums(store, keep)
    slugs_dir = settings.state_dir / "slugs"
    n_slugs = n_trees = n_caches = freed = 0
    now = time.time()
    for blob in sorted(slugs_dir.glob("*.tgz")) if slugs_dir.is_dir() else []:
        with contextlib.suppress(FileNotFoundError):
            if blob.stem in kept or (blob.stem not in referenced
                                     and now - blob.stat().st_mtime < UPLOAD_GRACE):
                continue  # a kept release's, or an upload whose release is not made yet
            freed += size_of(blob)
            blob.unlink()
            n_slugs += 1
            log.info("gc: removed slug %s", blob.name)
    for tree in trees.list_trees(settings):
        if tree.sha256 in kept or in_use(tree.path):
            continue
        freed += size_of(tree.path)
        trees.remove(tree.path)
        n_trees += 1
        log.info("gc: removed slug tree %s", tree.path.name)
    for damaged in trees.damaged_trees(settings):
        if in_use(damaged):
            continue  # a dyno started before the repair still runs on it
        freed += size_of(damaged)
        unpack.remove_tree(damaged)
        n_trees += 1
        log.info("gc: removed damaged slug tree %s", damaged.name)
    with store.read() as tx:
        live = {a.name for a in tx.apps()}
    caches = settings.state_dir / "cache"
    for cache in _dirs(caches):
        if cache.name not in live:
            freed += size_of(cache)
            shutil.rmtree(cache, ignore_errors=True)
            n_caches += 1
            log.info("gc: removed the build cache of %s (the app is gone)", cache.name)
    return Collected(n_slugs, n_trees, n_caches, freed)


def _dirs(path: Path) -> Iterable[Path]:
    try:
        return sorted(p for p in path.iterdir() if p.is_dir())
    except FileNotFoundError:
        return []


def disk_use(store: Store, settings: Settings, app: str) -> int:
    """Bytes the app's slugs (tarballs and trees) and build cache take on disk."""
    with store.read() as tx:
        uid = tx.app_uid(app)
        shas: set[str] = set()
        for r in tx.releases(app, None):
            slug = tx.slug(app, r.slug_id) if r.slug_id else None
            if slug is not None:
                shas.add(slug.sha256)
    total = sum(size_of(settings.state_dir / "slugs" / f"{sha}.tgz") for sha in shas)
    total += sum(size_of(t.path) for t in trees.list_trees(settings) if t.uid == uid)
    return total + size_of(settings.state_dir / "cache" / app)
