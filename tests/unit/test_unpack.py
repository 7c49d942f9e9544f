"""Hostile slugs: every kind the unpacker must refuse or neutralise.

Each test builds a tarball by hand (tarfile lets us write anything: absolute names,
``..``, devices, links anywhere), unpacks it into ``tmp/work/tree`` and checks that
nothing landed outside ``tmp/work/tree`` (the whole ``tmp`` is snapshotted before and
after), and that the tree holds no special file and no privileged bit.
"""

from __future__ import annotations

import gzip
import io
import os
import stat
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from dynod.errors import InvalidArgument, ResourceExhausted
from dynod.slug.unpack import (
    Limits,
    Unpacked,
    check_slug_size,
    remove_tree,
    unpack_slug,
)


@dataclass
class Entry:
    name: str
    type: bytes = tarfile.REGTYPE
    data: bytes = b""
    mode: int = 0o644
    linkname: str = ""
    size: int | None = None  # declared size if not len(data)
    extra: dict[str, str] = field(default_factory=dict)


def make_slug(path: Path, entries: list[Entry], *, level: int = 6) -> Path:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for e in entries:
            info = tarfile.TarInfo(e.name)
            info.type = e.type
            info.mode = e.mode
            info.linkname = e.linkname
            info.mtime = 1_700_000_000
            info.pax_headers = e.extra
            if e.type == tarfile.REGTYPE:
                info.size = len(e.data)
                tar.addfile(info, io.BytesIO(e.data))
            else:
                tar.addfile(info)
    path.write_bytes(gzip.compress(buf.getvalue(), compresslevel=level))
    return path


BASE = [Entry("./app", tarfile.DIRTYPE, mode=0o755), Entry("./app/ok.txt", data=b"fine\n")]


def snapshot(root: Path, skip: Path) -> set[str]:
    """Every path under ``root`` except inside ``skip``."""
    found: set[str] = set()
    for directory, dirs, files in os.walk(root):
        if Path(directory) == skip or skip in Path(directory).parents:
            dirs[:] = []
            continue
        for name in dirs + files:
            found.add(str((Path(directory) / name).relative_to(root)))
    return found


def walk(tree: Path) -> Iterator[Path]:
    for directory, dirs, files in os.walk(tree):
        for name in dirs + files:
            yield Path(directory) / name


def assert_safe_tree(tree: Path) -> None:
    """No special file, no privileged bit, no write bit, no link leading outside."""
    real_tree = tree.resolve()
    for path in [tree, *walk(tree)]:
        st = path.lstat()
        kind = stat.S_IFMT(st.st_mode)
        assert kind in (stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK), path
        if kind == stat.S_IFLNK:
            target = str(path.readlink())
            assert not target.startswith("/"), path
            resolved = path.resolve()
            assert resolved == real_tree or real_tree in resolved.parents, (path, target)
            continue
        assert st.st_mode & (stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX) == 0, path
        assert st.st_mode & 0o222 == 0, (path, oct(st.st_mode))
        assert st.st_mode & 0o444 == 0o444, path


def unpack(tmp_path: Path, entries: list[Entry], limits: Limits | None = None) -> Unpacked:
    """Unpack into tmp/work/tree, with a decoy tree around it; assert nothing escaped."""
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text("root:x:0:0\n")
    work = tmp_path / "work"
    work.mkdir()
    slug = make_slug(tmp_path / "slug.tgz", entries)
    before = snapshot(tmp_path, work)
    try:
        result = unpack_slug(slug, work / "tree", limits or Limits())
    finally:
        assert snapshot(tmp_path, work) == before
        assert (tmp_path / "etc/passwd").read_text() == "root:x:0:0\n"
        assert sorted(p.name for p in work.iterdir()) in ([], ["tree"])
    assert_safe_tree(result.root)
    assert (result.root / "ok.txt").read_text() == "fine\n"
    return result


def one_message(result: Unpacked, *needles: str) -> str:
    hits = [m for m in result.messages if all(n in m for n in needles)]
    assert len(hits) == 1, result.messages
    return hits[0]


def test_plain_slug(tmp_path: Path) -> None:
    result = unpack(
        tmp_path,
        [
            *BASE,
            Entry("./app/bin", tarfile.DIRTYPE, mode=0o700),
            Entry("./app/bin/run", data=b"#!/bin/sh\n", mode=0o700),
            Entry("./app/lib/deep/x.py", data=b"x = 1\n"),  # parents implied
            Entry("./app/link", tarfile.SYMTYPE, linkname="bin/run"),
            Entry("./app/bin/up", tarfile.SYMTYPE, linkname="../ok.txt"),
            Entry("./app/hard", tarfile.LNKTYPE, linkname="./app/ok.txt"),
            Entry("./app/abs", tarfile.SYMTYPE, linkname="/app/lib/deep/x.py"),
            Entry("./README", data=b"outside ./app: ignored silently"),
        ],
    )
    tree = result.root
    assert result.messages == ()
    assert stat.S_IMODE((tree / "bin/run").stat().st_mode) == 0o555
    assert stat.S_IMODE((tree / "ok.txt").stat().st_mode) == 0o444
    assert stat.S_IMODE((tree / "bin").stat().st_mode) == 0o555
    assert stat.S_IMODE(tree.stat().st_mode) == 0o555
    assert (tree / "link").read_text() == "#!/bin/sh\n"
    assert (tree / "bin/up").read_text() == "fine\n"
    assert (tree / "hard").stat().st_ino == (tree / "ok.txt").stat().st_ino
    assert str((tree / "abs").readlink()) == "lib/deep/x.py"
    assert (tree / "lib/deep/x.py").stat().st_mtime == 1_700_000_000
    assert not (tree / "README").exists()
    assert not (tree.parent / "README").exists()


def test_absolute_path(tmp_path: Path) -> None:
    target = tmp_path / "etc/evil"
    result = unpack(tmp_path, [*BASE, Entry(str(target), data=b"pwned")])
    one_message(result, str(target), "absolute path", "skipped")
    assert not target.exists()


def test_dotdot(tmp_path: Path) -> None:
    result = unpack(
        tmp_path,
        [
            *BASE,
            Entry("./app/../../etc/passwd", data=b"pwned"),
            Entry("app/x/../../../evil", data=b"pwned"),
        ],
    )
    assert len([m for m in result.messages if "'..'" in m]) == 2


def test_symlink_absolute_outside_then_write_through_it(tmp_path: Path) -> None:
    result = unpack(
        tmp_path,
        [
            *BASE,
            Entry("./app/etc", tarfile.SYMTYPE, linkname=str(tmp_path / "etc")),
            Entry("./app/etc/passwd", data=b"pwned"),
        ],
    )
    one_message(result, "./app/etc", "leads outside ./app")
    # the file landed inside the tree, in a real directory, not through the link
    assert (result.root / "etc").is_dir()
    assert (result.root / "etc/passwd").read_bytes() == b"pwned"


def test_symlink_relative_outside(tmp_path: Path) -> None:
    result = unpack(
        tmp_path,
        [*BASE, Entry("./app/a/up", tarfile.SYMTYPE, linkname="../../../etc")],
    )
    one_message(result, "./app/a/up", "leads outside ./app")
    assert not (result.root / "a/up").exists()


def test_symlink_chain_escaping_through_another_symlink(tmp_path: Path) -> None:
    # Each link is inside lexically; together they leave: l2 -> x/l1/.. where x/l1 -> ..
    result = unpack(
        tmp_path,
        [
            *BASE,
            Entry("./app/x", tarfile.DIRTYPE),
            Entry("./app/x/l1", tarfile.SYMTYPE, linkname=".."),
            Entry("./app/l2", tarfile.SYMTYPE, linkname="x/l1/.."),
        ],
    )
    one_message(result, "./app/l2", "through other symlinks")
    assert not (result.root / "l2").is_symlink()
    assert (result.root / "x/l1").is_symlink()  # it alone stays inside


def test_write_through_inside_symlink_is_refused(tmp_path: Path) -> None:
    # Even a link that stays inside is never written through.
    result = unpack(
        tmp_path,
        [
            *BASE,
            Entry("./app/real", tarfile.DIRTYPE),
            Entry("./app/alias", tarfile.SYMTYPE, linkname="real"),
            Entry("./app/alias/f", data=b"x"),
        ],
    )
    one_message(result, "./app/alias/f", "is a symlink")
    assert not (result.root / "real/f").exists()


def test_symlink_replaced_by_file_is_not_followed(tmp_path: Path) -> None:
    result = unpack(
        tmp_path,
        [
            *BASE,
            Entry("./app/f", tarfile.SYMTYPE, linkname="ok.txt"),
            Entry("./app/f", data=b"new"),
        ],
    )
    assert (result.root / "f").read_bytes() == b"new"
    assert not (result.root / "f").is_symlink()


def test_hardlink_outside(tmp_path: Path) -> None:
    result = unpack(
        tmp_path,
        [
            *BASE,
            Entry("./app/h1", tarfile.LNKTYPE, linkname=str(tmp_path / "etc/passwd")),
            Entry("./app/h2", tarfile.LNKTYPE, linkname="./app/../etc/passwd"),
            Entry("./app/h3", tarfile.LNKTYPE, linkname="./etc/passwd"),
            Entry("./app/h4", tarfile.LNKTYPE, linkname="./app/not-yet"),
        ],
    )
    for name in ("h1", "h2", "h3", "h4"):
        one_message(result, f"./app/{name}", "hard link")
        assert not (result.root / name).exists()
    assert (tmp_path / "etc/passwd").stat().st_nlink == 1


def test_hardlink_to_symlink_is_refused(tmp_path: Path) -> None:
    result = unpack(
        tmp_path,
        [
            *BASE,
            Entry("./app/s", tarfile.SYMTYPE, linkname="ok.txt"),
            Entry("./app/h", tarfile.LNKTYPE, linkname="./app/s"),
        ],
    )
    one_message(result, "./app/h", "not a file unpacked before it")


@pytest.mark.parametrize(
    ("kind", "why"),
    [
        (tarfile.CHRTYPE, "device node"),
        (tarfile.BLKTYPE, "device node"),
        (tarfile.FIFOTYPE, "FIFO"),
    ],
)
def test_special_files(tmp_path: Path, kind: bytes, why: str) -> None:
    result = unpack(tmp_path, [*BASE, Entry("./app/dev", kind, mode=0o666)])
    one_message(result, "./app/dev", why, "skipped")
    assert not (result.root / "dev").exists()


@pytest.mark.parametrize(
    ("mode", "label"),
    [(0o4755, "setuid"), (0o2755, "setgid"), (0o1777, "sticky"), (0o6755, "setuid/setgid")],
)
def test_privileged_bits_are_dropped(tmp_path: Path, mode: int, label: str) -> None:
    result = unpack(
        tmp_path,
        [
            *BASE,
            Entry("./app/suid", data=b"#!/bin/sh\n", mode=mode),
            Entry("./app/sdir", tarfile.DIRTYPE, mode=mode),
        ],
    )
    one_message(result, "./app/suid", f"{label} bit removed")
    one_message(result, "./app/sdir", f"{label} bit removed")
    assert stat.S_IMODE((result.root / "suid").stat().st_mode) == 0o555
    assert stat.S_IMODE((result.root / "sdir").stat().st_mode) == 0o555


def test_bomb_total_bytes(tmp_path: Path) -> None:
    limits = Limits(max_unpacked_bytes=1024 * 1024, ratio_floor_bytes=1 << 40)
    entries = [*BASE, *(Entry(f"./app/z{i}", data=b"\0" * 300_000) for i in range(5))]
    with pytest.raises(ResourceExhausted, match=r"more than 1 MiB \(at \"./app/z3\"\)"):
        unpack(tmp_path, entries, limits)
    assert not (tmp_path / "work/tree").exists()


def test_bomb_entries(tmp_path: Path) -> None:
    entries = [*BASE, *(Entry(f"./app/e{i}") for i in range(50))]
    with pytest.raises(ResourceExhausted, match="more than 20 entries"):
        unpack(tmp_path, entries, Limits(max_entries=20))
    assert not (tmp_path / "work/tree").exists()


def test_bomb_ratio(tmp_path: Path) -> None:
    # 4 MiB of zeros compress to a few KiB: far past a ratio of 100.
    limits = Limits(ratio_floor_bytes=1024 * 1024)
    with pytest.raises(ResourceExhausted, match="times its compressed size"):
        unpack(tmp_path, [*BASE, Entry("./app/zeros", data=b"\0" * (4 * 1024 * 1024))], limits)
    assert not (tmp_path / "work/tree").exists()


def test_small_compressible_slug_is_not_a_bomb(tmp_path: Path) -> None:
    result = unpack(tmp_path, [*BASE, Entry("./app/zeros", data=b"\0" * (1024 * 1024))])
    assert result.unpacked_bytes == 1024 * 1024 + 5


def test_bomb_giant_header(tmp_path: Path) -> None:
    entries = [*BASE, Entry("./app/p", data=b"x", extra={"comment": "A" * (2 * 1024 * 1024)})]
    with pytest.raises(ResourceExhausted, match="tar header"):
        unpack(tmp_path, entries)


def test_slug_size_limits() -> None:
    mib = 1024 * 1024
    assert check_slug_size(10 * mib) is None
    warning = check_slug_size(346 * mib)
    assert warning == (
        "Warning: Your slug size (346 MB) exceeds our soft limit (300 MB) "
        "which may affect boot time."
    )
    with pytest.raises(
        ResourceExhausted, match=r"Compiled slug size: 731M is too large \(max is 500M\)"
    ):
        check_slug_size(731 * mib)


def test_slug_over_limit_is_refused_before_reading(tmp_path: Path) -> None:
    limits = Limits(max_compressed_bytes=100, warn_compressed_bytes=50)
    with pytest.raises(ResourceExhausted, match="too large"):
        unpack(tmp_path, [*BASE, Entry("./app/r", data=os.urandom(4096))], limits)


def test_size_warning_is_a_message(tmp_path: Path) -> None:
    result = unpack(tmp_path, BASE, Limits(warn_compressed_bytes=10))
    one_message(result, "exceeds our soft limit")


def test_not_a_tarball(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tgz"
    bad.write_bytes(b"not gzip at all")
    with pytest.raises(InvalidArgument, match=r"not a valid tar\.gz"):
        unpack_slug(bad, tmp_path / "tree")
    gz = tmp_path / "gz.tgz"
    gz.write_bytes(gzip.compress(b"gzip but not tar" * 100))
    with pytest.raises(InvalidArgument, match=r"not a valid tar\.gz"):
        unpack_slug(gz, tmp_path / "tree")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.tgz", "gz.tgz"]


def test_no_app_dir(tmp_path: Path) -> None:
    slug = make_slug(tmp_path / "s.tgz", [Entry("./other/x", data=b"x")])
    with pytest.raises(InvalidArgument, match=r"nothing under \./app"):
        unpack_slug(slug, tmp_path / "tree")


def test_existing_tree_is_kept_and_removable(tmp_path: Path) -> None:
    first = unpack(tmp_path, BASE)
    slug = make_slug(tmp_path / "other.tgz", [*BASE, Entry("./app/new", data=b"n")])
    again = unpack_slug(slug, first.root)
    assert again.root == first.root
    assert not (first.root / "new").exists()
    remove_tree(first.root)
    assert not first.root.exists()
