"""Slug trees checked against their manifest at each dyno start: a tree deleted or
changed on disk is unpacked again from its slug, whose checksum is verified first."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest

from dynod.errors import InvalidArgument
from dynod.settings import Settings
from dynod.slug import blobs, trees, unpack

UID = os.getuid()


def stored_slug(settings: Settings, files: dict[str, bytes]) -> str:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for name, data in {"./app": b"", **files}.items():
            info = tarfile.TarInfo(name)
            if name == "./app":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size, info.mode, info.mtime = len(data), 0o644, 1_700_000_000
                tar.addfile(info, io.BytesIO(data))
    data = raw.getvalue()
    checksum = "sha256:" + hashlib.sha256(data).hexdigest()
    blobs.write_blob(settings.state_dir / "slugs", [data], checksum, len(data))
    return checksum


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(state_dir=tmp_path / "state", runtime_dir=tmp_path / "run")


def test_an_intact_tree_is_used_as_it_is(settings: Settings) -> None:
    checksum = stored_slug(settings, {"./app/server.py": b"print(1)\n"})
    said: list[str] = []
    tree = trees.slug_tree(settings, checksum, UID, said.append)
    assert (tree / "app/server.py").read_bytes() == b"print(1)\n"
    inode = tree.stat().st_ino
    assert trees.slug_tree(settings, checksum, UID, said.append).stat().st_ino == inode
    assert said == []


def test_removing_a_tree_leaves_nothing_of_it(settings: Settings) -> None:
    # An app's destroy (or gc) must not leave the tree's manifest behind.
    checksum = stored_slug(settings, {"./app/server.py": b"print(1)\n"})
    tree = trees.slug_tree(settings, checksum, UID, None)
    assert trees.manifest_of(tree).exists()
    trees.remove(tree)
    assert sorted(p.name for p in tree.parent.iterdir()) == []


@pytest.mark.parametrize("damage, why", [
    (lambda t: (t / "app/server.py").unlink(), "app/server.py is missing"),
    (lambda t: (t / "app/server.py").write_bytes(b"garbage"), "app/server.py changed"),
    (unpack.remove_tree, "the tree is missing"),
])
def test_a_damaged_tree_is_unpacked_again_and_said(settings: Settings, damage: object,
                                                   why: str) -> None:
    checksum = stored_slug(settings, {"./app/server.py": b"print(1)\n"})
    tree = trees.slug_tree(settings, checksum, UID)
    damage(tree)  # type: ignore[operator]
    said: list[str] = []
    assert trees.slug_tree(settings, checksum, UID, said.append) == tree
    assert (tree / "app/server.py").read_bytes() == b"print(1)\n"
    assert said == [f"Slug tree repaired: {why}; unpacked again from slug {checksum} "
                    "(checksum verified)"]
    assert trees.check_tree(tree) is None


def test_a_changed_tarball_is_never_unpacked(settings: Settings) -> None:
    checksum = stored_slug(settings, {"./app/server.py": b"print(1)\n"})
    tarball = settings.state_dir / "slugs" / f"{checksum.removeprefix('sha256:')}.tgz"
    tarball.write_bytes(tarball.read_bytes()[:40])  # cut short, as by a full disk
    with pytest.raises(InvalidArgument, match="changed or cut short; deploy the app again"):
        trees.slug_tree(settings, checksum, UID)
    assert trees.list_trees(settings) == []
    assert not list((settings.state_dir / "slugs" / "trees").iterdir())
