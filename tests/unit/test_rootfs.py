from __future__ import annotations

import errno
from pathlib import Path, PurePosixPath

import pytest

from dynod.errors import InvalidArgument
from dynod.system import libc, mounts
from dynod.system.mounts import Bind


def test_plan_layout_and_overlay_options() -> None:
    binds = mounts.dyno_binds(Path("/usr/lib/dynod/dyno-init"), Path("/run/dynod/resolv.conf"))
    plan = mounts.plan_rootfs(
        Path("/run/dynod"),
        "shop-web.1",
        Path("/var/lib/dynod/slugs/ab12/tree"),
        Path("/var/lib/dynod/stacks/debian-13"),
        binds,
    )
    assert plan.dyno_dir == Path("/run/dynod/dynos/shop-web.1")
    assert plan.root == plan.dyno_dir / "root"
    assert plan.upper == plan.dyno_dir / "upper"
    assert plan.work == plan.dyno_dir / "work"
    # Slug tree on top of the stack: its app/ appears at /app.
    assert plan.overlay_options == (
        "lowerdir=/var/lib/dynod/slugs/ab12/tree:/var/lib/dynod/stacks/debian-13,"
        "upperdir=/run/dynod/dynos/shop-web.1/upper,workdir=/run/dynod/dynos/shop-web.1/work"
    )
    assert plan.binds == (
        Bind(Path("/usr/lib/dynod/dyno-init"), PurePosixPath("/dyno-init")),
        Bind(Path("/run/dynod/resolv.conf"), PurePosixPath("/etc/resolv.conf")),
    )
    assert mounts.dyno_binds(Path("/i"), None) == (Bind(Path("/i"), mounts.INIT_PATH),)
    # The directory holding journald's stream socket alone is the dyno's /run/systemd/journal.
    assert mounts.dyno_binds(Path("/i"), None, journal_dir=Path("/run/dynod/journal"))[-1] == (
        Bind(Path("/run/dynod/journal"), PurePosixPath("/run/systemd/journal"), read_only=True))


@pytest.mark.parametrize(
    ("dyno", "slug", "stack"),
    [
        ("a/b", "/s", "/t"),
        ("..", "/s", "/t"),
        ("", "/s", "/t"),
        ("x", "relative", "/t"),
        ("x", "/s:evil", "/t"),
        ("x", "/s", "/t,upperdir=/etc"),
    ],
)
def test_plan_rejects_bad_input(dyno: str, slug: str, stack: str) -> None:
    with pytest.raises(InvalidArgument):
        mounts.plan_rootfs(Path("/run/dynod"), dyno, Path(slug), Path(stack))


def test_plan_rejects_relative_bind() -> None:
    with pytest.raises(InvalidArgument, match="absolute"):
        mounts.plan_rootfs(
            Path("/r"), "x", Path("/s"), Path("/t"), (Bind(Path("/a"), PurePosixPath("etc/x")),)
        )


def test_mount_points_unescapes_octal() -> None:
    text = (
        "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
        "99 22 0:50 / /run/dynod/dynos/a\\040b/root rw - overlay overlay rw,lowerdir=/x\n"
        "100 22 0:51 / /tmp/back\\134slash rw - tmpfs tmpfs rw\n"
    )
    assert mounts.mount_points(text) == ["/", "/run/dynod/dynos/a b/root", "/tmp/back\\slash"]


def test_mountinfo_entries_and_overlay_lowers() -> None:
    text = (
        "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
        "99 22 0:50 / /run/dynod/dynos/a/root rw shared:5 master:2 - overlay overlay "
        "rw,lowerdir=/var/lib/dynod/slugs/t\\040x:/var/lib/dynod/stacks/s,"
        "upperdir=/run/dynod/dynos/a/upper,workdir=/run/dynod/dynos/a/work\n"
        "100 22 0:51 / /tmp rw - tmpfs tmpfs rw,lowerdir=/not/an/overlay\n"
    )
    entries = mounts.parse_mountinfo(text)
    assert [(e.mount_point, e.fstype) for e in entries] == [
        ("/", "ext4"), ("/run/dynod/dynos/a/root", "overlay"), ("/tmp", "tmpfs")]
    assert entries[1].option("upperdir") == "/run/dynod/dynos/a/upper"
    assert entries[0].option("lowerdir") is None
    # Only overlays count, each lower layer whole (never a prefix of a longer path).
    assert mounts.overlay_lowers(entries) == {"/var/lib/dynod/slugs/t x",
                                              "/var/lib/dynod/stacks/s"}


def test_list_dyno_dirs(tmp_path: Path) -> None:
    assert mounts.list_dyno_dirs(tmp_path) == []
    (tmp_path / "dynos" / "b-web.1").mkdir(parents=True)
    (tmp_path / "dynos" / "a-web.1").mkdir()
    (tmp_path / "dynos" / "stray-file").touch()
    assert mounts.list_dyno_dirs(tmp_path) == ["a-web.1", "b-web.1"]


def test_remove_of_unmounted_plan_is_idempotent(tmp_path: Path) -> None:
    plan = mounts.plan_rootfs(tmp_path, "shop-web.1", Path("/s"), Path("/t"))
    mounts.remove_rootfs(plan)  # nothing there: no error
    plan.upper.mkdir(parents=True)
    (plan.upper / "written-by-app").write_text("x")
    mounts.remove_rootfs(plan)
    assert not plan.dyno_dir.exists()


def test_apply_requires_lower_layers(tmp_path: Path) -> None:
    plan = mounts.plan_rootfs(tmp_path, "x", tmp_path / "missing", tmp_path)
    with pytest.raises(InvalidArgument, match="not a directory"):
        mounts.apply_rootfs(plan)
    assert not plan.dyno_dir.exists()


def test_libc_failures_raise_oserror_with_errno(tmp_path: Path) -> None:
    # Neither call changes anything: tmp_path is no mount point, the type does not exist.
    with pytest.raises(OSError) as umount:
        libc.umount(tmp_path, libc.MNT_DETACH)
    assert umount.value.errno in {errno.EINVAL, errno.EPERM}
    assert umount.value.filename == str(tmp_path)
    with pytest.raises(OSError) as mount:
        libc.mount("none", tmp_path, "dynod-no-such-fs", 0)
    assert mount.value.errno in {errno.ENODEV, errno.EPERM}
