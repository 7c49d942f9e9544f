"""Slug trees: each slug unpacked once per app uid into a shared, read-only-to-dynos
tree (``<state>/slugs/trees/<sha256>-<uid>``) that every dyno of every release using it
mounts as its overlay's lower layer. Starting a dyno never copies the slug."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dynod.errors import NotFound
from dynod.model.slugs import path_of
from dynod.settings import Settings
from dynod.slug import unpack


def slug_tree(settings: Settings, checksum: str, uid: int,
              on_message: Callable[[str], None] | None = None) -> Path:
    """The slug's tree for ``uid`` (holding ``app/``), unpacked and chowned once.
    ``on_message`` gets what the unpacker said (an entry skipped or changed, and why).

    Owner-writable so the dyno's uid may write /app (writes land in its upper layer;
    the tree itself is only ever a lower layer). Raises NotFound for a missing tarball,
    InvalidArgument for a bad one.
    """
    sha = checksum.removeprefix("sha256:")
    trees = settings.state_dir / "slugs" / "trees"
    final = trees / f"{sha}-{uid}"
    if final.is_dir():
        return final
    tarball = path_of(settings.state_dir / "slugs", checksum)
    if not tarball.is_file():
        raise NotFound(f"slug {checksum} is not stored; deploy it again")
    staging = trees / f".{sha}-{uid}.tmp-{os.getpid()}-{threading.get_ident()}"
    unpack.remove_tree(staging)
    staging.mkdir(mode=0o755, parents=True)
    try:
        unpacked = unpack.unpack_slug(tarball, staging / "app")
        for message in unpacked.messages:
            if on_message is not None:
                on_message(message)
        app = staging / "app"
        for path in [app, *app.rglob("*")]:
            os.lchown(path, uid, uid)
            if not path.is_symlink():
                path.chmod(path.lstat().st_mode | 0o200)
        staging.rename(final)
    except OSError:
        unpack.remove_tree(staging)
        if not final.is_dir():
            raise
    except BaseException:
        unpack.remove_tree(staging)
        raise
    return final


@dataclass(frozen=True)
class SlugTree:
    path: Path
    sha256: str
    uid: int


def list_trees(settings: Settings) -> list[SlugTree]:
    """The unpacked slug trees (``<sha256>-<uid>``), for garbage collection."""
    try:
        entries = list((settings.state_dir / "slugs" / "trees").iterdir())
    except FileNotFoundError:
        return []
    out = []
    for entry in entries:
        sha, _, uid = entry.name.rpartition("-")
        if sha and uid.isdigit() and not entry.name.startswith("."):
            out.append(SlugTree(entry, sha, int(uid)))
    return sorted(out, key=lambda t: t.path)


