"""Slug trees: each slug unpacked once per app uid into a shared, read-only-to-dynos
tree (``<state>/slugs/trees/<sha256>-<uid>``) that every dyno of every release using it
mounts as its overlay's lower layer. Starting a dyno never copies the slug.

Each tree has a manifest beside it (``.<sha256>-<uid>.manifest``: every entry's kind,
size, mtime and link target), checked at each dyno start: a tree deleted or changed on
disk is moved aside (running dynos keep their lower layer; gc removes it once unused)
and unpacked again from the slug, whose checksum is verified first."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dynod.errors import InvalidArgument, NotFound, ResourceExhausted
from dynod.model.slugs import path_of
from dynod.settings import Settings
from dynod.slug import unpack
from dynod.slug.fetch import SlugPeers, fetch_slug


def slug_tree(settings: Settings, checksum: str, uid: int,
              on_message: Callable[[str], None] | None = None, *,
              peers: SlugPeers | None = None) -> Path:
    """The slug's tree for ``uid`` (holding ``app/``), unpacked and chowned once, and
    unpacked again if it was deleted or changed on disk since (checked against its
    manifest). ``on_message`` gets what the unpacker said (an entry skipped or changed,
    and why), that a tree was repaired, and how a slug was fetched. A slug this
    machine does not store is fetched from ``peers`` (the other machines of a
    cluster) first, when given.

    Owner-writable so the dyno's uid may write /app (writes land in its upper layer;
    the tree itself is only ever a lower layer). Raises NotFound for a missing tarball,
    InvalidArgument for a bad one or one whose content is not its checksum's,
    ResourceExhausted when the disk is full (nothing half-unpacked is kept).
    """
    sha = checksum.removeprefix("sha256:")
    trees = settings.state_dir / "slugs" / "trees"
    final = trees / f"{sha}-{uid}"
    manifest = manifest_of(final)
    damage = check_tree(final)
    if damage is None:
        return final
    if final.is_dir() or manifest.exists():
        _set_aside(final)
    else:
        damage = ""  # never unpacked: the first start
    tarball = path_of(settings.state_dir / "slugs", checksum)
    if not tarball.is_file():
        if peers is None:
            raise NotFound(f"slug {checksum} is not stored; deploy it again")
        fetch_slug(settings.state_dir / "slugs", checksum, peers, on_message)
    staging = trees / f".{sha}-{uid}.tmp-{os.getpid()}-{threading.get_ident()}"
    unpack.remove_tree(staging)
    staging.mkdir(mode=0o755, parents=True)
    try:
        # A tarball cut short or changed on disk is never unpacked.
        verify_checksum(tarball, checksum)
        unpacked = unpack.unpack_slug(tarball, staging / "app")
        for message in unpacked.messages:
            if on_message is not None:
                on_message(message)
        app = staging / "app"
        for path in [app, *app.rglob("*")]:
            os.lchown(path, uid, uid)
            if not path.is_symlink():
                path.chmod(path.lstat().st_mode | 0o200)
        _write_manifest(manifest, scan_tree(staging))
        staging.rename(final)
    except OSError as exc:
        unpack.remove_tree(staging)
        if final.is_dir():
            pass  # another start unpacked it meanwhile
        elif exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise ResourceExhausted(
                f"No space left on device unpacking slug {checksum} into {trees}; free "
                "space on the disk holding dynod's state and restart the dyno") from exc
        else:
            raise
    except BaseException:
        unpack.remove_tree(staging)
        raise
    if damage and on_message is not None:
        on_message(f"Slug tree repaired: {damage}; unpacked again from slug {checksum} "
                   "(checksum verified)")
    return final


def manifest_of(tree: Path) -> Path:
    """Where the manifest of ``tree`` is kept (beside it, so dynos never see it)."""
    return tree.with_name(f".{tree.name}.manifest")


def remove(tree: Path) -> None:
    """Remove an unpacked slug tree and its manifest."""
    unpack.remove_tree(tree)
    with contextlib.suppress(FileNotFoundError):
        manifest_of(tree).unlink()


def scan_tree(tree: Path) -> dict[str, list[object]]:
    """Every entry under ``tree``: relative path -> [kind, size, mtime_ns, link]."""
    out: dict[str, list[object]] = {}
    for directory, dirs, files in os.walk(tree):
        for name in [*dirs, *files]:
            path = Path(directory) / name
            st = path.lstat()
            rel = str(path.relative_to(tree))
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ["l", 0, 0, str(path.readlink())]
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ["d", 0, 0, ""]
            else:
                out[rel] = ["f", st.st_size, st.st_mtime_ns, ""]
    return out


def check_tree(tree: Path) -> str | None:
    """None if ``tree`` is as it was unpacked, else what is wrong with it, e.g.
    ``app/server.py changed``. A tree unpacked before manifests existed gets one now."""
    manifest = manifest_of(tree)
    if not tree.is_dir():
        return "the tree is missing"
    try:
        want = json.loads(manifest.read_text())
    except FileNotFoundError:
        _write_manifest(manifest, scan_tree(tree))
        return None
    except (OSError, ValueError):
        return "its manifest is unreadable"
    have = scan_tree(tree)
    if have == want:
        return None
    missing = sorted(set(want) - set(have))
    if missing:
        return f"{missing[0]} is missing" + (f" ({len(missing)} entries)"
                                             if len(missing) > 1 else "")
    changed = sorted(k for k in have if want.get(k) != have[k])
    return f"{changed[0]} changed" + (f" ({len(changed)} entries)" if len(changed) > 1 else "")


def verify_checksum(tarball: Path, checksum: str) -> None:
    """Raise InvalidArgument unless ``tarball``'s sha256 is ``checksum``."""
    digest = hashlib.sha256()
    with tarball.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    actual = "sha256:" + digest.hexdigest()
    if actual != "sha256:" + checksum.removeprefix("sha256:"):
        raise InvalidArgument(
            f"slug {checksum} on disk has checksum {actual}: the file was changed or "
            "cut short; deploy the app again to store its slug anew")


def _write_manifest(manifest: Path, entries: dict[str, list[object]]) -> None:
    tmp = manifest.with_name(f"{manifest.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    try:
        tmp.write_text(json.dumps(entries, sort_keys=True))
        tmp.replace(manifest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _set_aside(tree: Path) -> None:
    """Move a damaged tree out of the way (dynos running on it keep it as their lower
    layer; gc removes it once no overlay uses it) and drop its manifest."""
    with contextlib.suppress(FileNotFoundError):
        tree.rename(tree.with_name(f".{tree.name}.damaged-{time.time_ns()}"))
    with contextlib.suppress(FileNotFoundError):
        manifest_of(tree).unlink()


def damaged_trees(settings: Settings) -> list[Path]:
    """Trees set aside as damaged, for garbage collection."""
    return sorted((settings.state_dir / "slugs" / "trees").glob(".*.damaged-*"))


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


