"""A dyno's root filesystem: an overlay of [slug tree, stack] with a throw-away upper layer.

The plan is pure data (``plan_rootfs``); ``apply_rootfs`` and ``remove_rootfs`` are the
only functions that touch the machine. Layout under the runtime directory::

    <runtime_dir>/dynos/<dyno>/upper   per-dyno writes (the ephemeral filesystem)
    <runtime_dir>/dynos/<dyno>/work    overlayfs work directory (same filesystem as upper)
    <runtime_dir>/dynos/<dyno>/root    the merged tree, the unit's RootDirectory=

The slug tree is the unpacked slug as stored once per slug: its top-level entry is
``app/`` (the Heroku slug layout, a tar of ``./app``), so as the upper lower layer it
appears at ``/app`` over the stack. Starting a dyno never copies the slug.

Files that the dyno needs from the host (dyno-init, resolv.conf, ...) are ``Bind``
entries: systemd bind-mounts them in the unit's own mount namespace
(``BindReadOnlyPaths=``), so they leave nothing on the host to clean up.
"""

from __future__ import annotations

import errno
import os
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from dynod.errors import InvalidArgument, NotFound, Unavailable
from dynod.system import libc

# Characters overlayfs's option parser treats specially in a lowerdir list.
_OVERLAY_SPECIAL = frozenset(":,\\\n")


@dataclass(frozen=True)
class Bind:
    """A host path bind-mounted into the dyno by systemd (never by dynod)."""

    source: Path  # absolute host path
    target: PurePosixPath  # absolute path inside the dyno's root
    read_only: bool = True


# Where the host's dyno-init and resolv.conf appear inside every dyno.
INIT_PATH = PurePosixPath("/dyno-init")
# dyno-init of this source tree (development), when the configured one is missing.
PROJECT_INIT = Path(__file__).resolve().parents[2] / "build" / "dyno-init"
RESOLV_CONF_PATH = PurePosixPath("/etc/resolv.conf")
HOSTS_PATH = PurePosixPath("/etc/hosts")
# Debian's CA bundle (update-ca-certificates), which OpenSSL, curl, git and Python's ssl
# read; the stack's own plus dynod's local CA, so dynos trust the apps' default domain.
CA_BUNDLE_PATH = PurePosixPath("/etc/ssl/certs/ca-certificates.crt")
# journald's stream socket, alone (journal.link_stdout_socket): dyno-init reconnects there.
JOURNAL_DIR_PATH = PurePosixPath("/run/systemd/journal")


# The JVM's own trust store (Debian's ca-certificates-java), in the jvm layer.
JAVA_CACERTS_PATH = PurePosixPath("/etc/ssl/certs/java/cacerts")


def find_init(configured: Path) -> Path:
    """dyno-init, the PID 1 of every dyno and the wrapper of every build step: the
    configured path, else build/dyno-init of this source tree. Raises NotFound."""
    for path in (configured, PROJECT_INIT):
        if os.access(path, os.X_OK):
            return path
    raise NotFound(
        f"dyno-init is missing at {configured}; build it with "
        f"dynod/init/build.sh {configured} (or set dyno_init in dynod.toml)"
    )


def dyno_binds(init_binary: Path, resolv_conf: Path | None, hosts: Path | None = None,
               ca_bundle: Path | None = None,
               java_cacerts: Path | None = None, *,
               journal_dir: Path | None = None) -> tuple[Bind, ...]:
    """The host files every dyno gets, read-only: dyno-init, and the resolv.conf and
    hosts file that ``netns.ensure_bridge`` wrote, the CA bundle and (with a JVM) the
    Java trust store that trust the local CA, and the directory that holds only
    journald's stream socket."""
    binds = [Bind(init_binary, INIT_PATH)]
    for source, target in ((resolv_conf, RESOLV_CONF_PATH), (hosts, HOSTS_PATH),
                           (ca_bundle, CA_BUNDLE_PATH), (java_cacerts, JAVA_CACERTS_PATH),
                           (journal_dir, JOURNAL_DIR_PATH)):
        if source is not None:
            binds.append(Bind(source, target))
    return tuple(binds)


@dataclass(frozen=True)
class RootfsPlan:
    """Everything needed to mount and later remove one dyno's root filesystem."""

    dyno: str  # the dyno's key, also its directory name, e.g. "shop-web.1"
    dyno_dir: Path
    lower: tuple[Path, ...]  # top first: (slug tree, stack)
    binds: tuple[Bind, ...]

    @property
    def root(self) -> Path:
        return self.dyno_dir / "root"

    @property
    def upper(self) -> Path:
        return self.dyno_dir / "upper"

    @property
    def work(self) -> Path:
        return self.dyno_dir / "work"

    @property
    def overlay_options(self) -> str:
        lower = ":".join(str(p) for p in self.lower)
        return f"lowerdir={lower},upperdir={self.upper},workdir={self.work}"


def dynos_dir(runtime_dir: Path) -> Path:
    return runtime_dir / "dynos"


def _check_path(what: str, path: Path) -> None:
    if not path.is_absolute():
        raise InvalidArgument(f"{what} {str(path)!r} must be an absolute path")
    if _OVERLAY_SPECIAL & set(str(path)):
        raise InvalidArgument(
            f"{what} {str(path)!r} contains one of ':', ',', '\\' or a newline, which "
            "overlayfs cannot take; move it to a plain path"
        )


def plan_rootfs(
    runtime_dir: Path,
    dyno: str,
    slug_tree: Path,
    stack: Path | tuple[Path, ...],
    binds: tuple[Bind, ...] = (),
) -> RootfsPlan:
    """The overlay plan for ``dyno``: lower = [slug_tree, stack], upper under runtime_dir.
    ``stack`` may be several directories, top first (a stack's language layers over it).

    Raises InvalidArgument for a dyno key that is not a plain file name, relative
    paths, paths overlayfs cannot parse, or a bind target that is not absolute.
    """
    if not dyno or dyno in {".", ".."} or "/" in dyno or "\0" in dyno:
        raise InvalidArgument(f"dyno key {dyno!r} must be a plain file name")
    _check_path("runtime directory", runtime_dir)
    _check_path("slug tree", slug_tree)
    stack_dirs = (stack,) if isinstance(stack, Path) else stack
    for layer in stack_dirs:
        _check_path("stack", layer)
    for bind in binds:
        if not bind.source.is_absolute() or not bind.target.is_absolute():
            raise InvalidArgument(
                f"bind {bind.source} -> {bind.target}: both paths must be absolute"
            )
    return RootfsPlan(
        dyno=dyno,
        dyno_dir=dynos_dir(runtime_dir) / dyno,
        lower=(slug_tree, *stack_dirs),
        binds=binds,
    )


def unescape_mountinfo(field: str) -> str:
    """Undo the kernel's octal escaping of space, tab, newline and backslash."""
    out: list[str] = []
    i = 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


@dataclass(frozen=True)
class MountEntry:
    """One line of /proc/<pid>/mountinfo (proc(5)), the fields dynod reads."""

    mount_point: str  # unescaped
    fstype: str
    super_options: str  # the filesystem's own options, still escaped (lowerdir=...)

    def option(self, name: str) -> str | None:
        """A superblock option's value (``lowerdir``), unescaped; None when absent."""
        for opt in self.super_options.split(","):
            key, eq, value = opt.partition("=")
            if key == name and eq:
                return unescape_mountinfo(value)
        return None


def parse_mountinfo(mountinfo: str) -> list[MountEntry]:
    """The entries of a /proc/<pid>/mountinfo text, in order. The optional fields
    between field 6 and the ``-`` separator vary in number, so the separator anchors
    the filesystem type and options."""
    entries = []
    for line in mountinfo.splitlines():
        fields = line.split(" ")
        if len(fields) <= 4:
            continue
        try:
            sep = fields.index("-", 6)
        except ValueError:
            sep = len(fields)
        fstype = fields[sep + 1] if sep + 1 < len(fields) else ""
        options = fields[sep + 3] if sep + 3 < len(fields) else ""
        entries.append(MountEntry(unescape_mountinfo(fields[4]), fstype, options))
    return entries


def mount_points(mountinfo: str) -> list[str]:
    """Mount points listed in a /proc/<pid>/mountinfo text, in order (field 5)."""
    return [e.mount_point for e in parse_mountinfo(mountinfo)]


def own_mounts() -> list[MountEntry]:
    """The mounts of dynod's own mount namespace."""
    return parse_mountinfo(Path("/proc/self/mountinfo").read_text())


def is_mounted(path: Path) -> bool:
    return str(path) in (e.mount_point for e in own_mounts())


def overlay_lowers(entries: list[MountEntry]) -> set[str]:
    """Every lower layer of the overlays among ``entries`` (a dyno's slug tree and stack)."""
    lowers: set[str] = set()
    for entry in entries:
        if entry.fstype == "overlay":
            lowers.update(filter(None, (entry.option("lowerdir") or "").split(":")))
    return lowers


def is_overlay_lower(path: Path) -> bool:
    """Is ``path`` still a lower layer of a mounted overlay (a dyno root)? A tree in use
    must not be deleted under a running or stopping dyno."""
    return str(path) in overlay_lowers(own_mounts())


def _mount(source: str, target: Path, fstype: str, flags: int, data: str) -> None:
    try:
        libc.mount(source, target, fstype, flags, data)
    except OSError as exc:
        raise Unavailable(f"mount {fstype} on {target}: {exc.strerror} ({data})") from exc


def _umount_detach(target: Path) -> None:
    try:
        libc.umount(target, libc.MNT_DETACH)
    except OSError as exc:
        if exc.errno not in {errno.EINVAL, errno.ENOENT}:  # not mounted / gone: already done
            raise Unavailable(f"umount {target}: {exc.strerror}") from exc


def _ensure_bind_target(root: Path, bind: Bind) -> None:
    """Create a missing bind target in the merged tree (it lands in the upper layer)."""
    target = root / bind.target.relative_to("/")
    if target.exists() or target.is_symlink():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    if bind.source.is_dir():
        target.mkdir()
    else:
        target.touch()


def apply_rootfs(plan: RootfsPlan) -> None:
    """Make the dyno directory and mount the overlay at ``plan.root``.

    Idempotent: an already mounted root is left as it is. Raises InvalidArgument when
    a lower layer is missing and Unavailable when the kernel refuses the mount (e.g.
    the upper directory is on overlayfs itself: keep the runtime dir off overlayfs).
    """
    for lower in plan.lower:
        if not lower.is_dir():
            raise InvalidArgument(f"dyno {plan.dyno}: layer {lower} is not a directory")
    if is_mounted(plan.root):
        return
    plan.dyno_dir.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    plan.dyno_dir.mkdir(mode=0o700, exist_ok=True)
    for d in (plan.upper, plan.work, plan.root):
        d.mkdir(mode=0o755, exist_ok=True)
    _mount("overlay", plan.root, "overlay", libc.MS_NOSUID | libc.MS_NODEV,
           plan.overlay_options)
    try:
        for bind in plan.binds:
            _ensure_bind_target(plan.root, bind)
    except OSError as exc:
        remove_rootfs(plan)
        raise Unavailable(f"dyno {plan.dyno}: preparing bind targets: {exc}") from exc


def remove_rootfs(plan: RootfsPlan) -> None:
    """Unmount (MNT_DETACH) and delete the dyno directory, upper layer included.

    Idempotent. Raises Unavailable if the root is still mounted afterwards, and then
    deletes nothing (never recurse into a mounted tree).
    """
    if is_mounted(plan.root):
        _umount_detach(plan.root)
        if is_mounted(plan.root):
            raise Unavailable(f"dyno {plan.dyno}: {plan.root} is still mounted; retry")
    if plan.dyno_dir.exists():
        shutil.rmtree(plan.dyno_dir)


def list_dyno_dirs(runtime_dir: Path) -> list[str]:
    """Dyno keys that have a directory under the runtime dir (for the supervisor)."""
    try:
        return sorted(p.name for p in dynos_dir(runtime_dir).iterdir() if p.is_dir())
    except FileNotFoundError:
        return []
