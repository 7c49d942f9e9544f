"""Unpacking a slug into the read-only tree that dynos use as their /app layer.

A slug is Heroku's format: a gzip-compressed tar of ``./app`` ("Slugs may contain files
outside of ./app; however, they will be ignored when unpacked", platform-api-deploying-
slugs). Its content was produced by untrusted code (the app and its buildpacks), so
unpacking is a security boundary:

* entries with an absolute path or a ``..`` component, device nodes, FIFOs and unknown
  entry types are skipped; so are symlinks and hard links that lead outside ``./app``
  (absolute symlink targets under ``/app`` are rewritten as relative ones);
* setuid, setgid and sticky bits are dropped, and nothing is ever written through a
  symlink (every parent of an entry must be a real directory made by this unpacker);
* decompression bombs are refused: caps on the total unpacked bytes, on the number of
  entries, on the ratio of unpacked to compressed size and on the size of one tar
  header, all checked before the bytes are written;
* Heroku's slug size limits: a warning above 300 MB, refusal above 500 MB (compressed).

Each skipped or changed entry yields a message naming the entry and why. The tree is
made in a temporary directory beside its destination, made read-only (files 0444 or
0555, directories 0555, no owner write bit) and renamed into place, so a tree that
exists is complete.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import os
import shutil
import stat
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, cast

from dynod.errors import InvalidArgument, ResourceExhausted

MIB = 1024 * 1024
# Heroku: soft limit 300 MB (warning), hard limit 500 MB compressed (slug-compiler).
SLUG_WARN_BYTES = 300 * MIB
SLUG_MAX_BYTES = 500 * MIB
APP_DIR = "app"
_CHUNK = MIB
_SYMLINK_HOPS = 40  # as the kernel's MAXSYMLINKS


@dataclass(frozen=True)
class Limits:
    """Caps against decompression bombs. The defaults fit any real slug: Heroku allows
    500 MB compressed, which real slugs turn into 1-3 GB."""

    max_compressed_bytes: int = SLUG_MAX_BYTES
    warn_compressed_bytes: int = SLUG_WARN_BYTES
    max_unpacked_bytes: int = 4096 * MIB
    max_entries: int = 300_000
    # Real slugs compress 2-10x; a bomb 1000x. Checked once past ``ratio_floor_bytes``
    # so a tiny slug holding one file of zeros is not refused.
    max_ratio: int = 100
    ratio_floor_bytes: int = 64 * MIB
    # A tar header (pax or GNU long name) is read into memory whole.
    max_header_bytes: int = 1 * MIB


@dataclass(frozen=True)
class Unpacked:
    """The result: where the tree is, what was said about it, what it holds."""

    root: Path
    messages: tuple[str, ...]
    entries: int
    unpacked_bytes: int


def format_size(size: int) -> str:
    """Heroku's short size, e.g. ``21.2M``."""
    return f"{size / MIB:.1f}M"


def check_slug_size(size: int, limits: Limits = Limits()) -> str | None:
    """Heroku's slug size rule for a compressed slug of ``size`` bytes.

    Returns the warning line above the soft limit (None below it). Raises
    ResourceExhausted with Heroku's message above the hard limit.
    """
    if size > limits.max_compressed_bytes:
        raise ResourceExhausted(
            f"Compiled slug size: {size // MIB}M is too large "
            f"(max is {limits.max_compressed_bytes // MIB}M); "
            "remove what the app does not need at run time, e.g. with a .slugignore "
            "(see http://devcenter.heroku.com/articles/slug-size)"
        )
    if size > limits.warn_compressed_bytes:
        return (
            f"Warning: Your slug size ({size // MIB} MB) exceeds our soft limit "
            f"({limits.warn_compressed_bytes // MIB} MB) which may affect boot time."
        )
    return None


class _GuardedGzip(gzip.GzipFile):
    """A GzipFile that refuses a single read larger than a tar header may be.

    tarfile reads pax and GNU long-name headers with one ``read`` of their declared
    size; this stops a header claiming gigabytes before anything is allocated. File
    data is read by ``_extract_file`` in chunks no larger than the limit.
    """

    max_read = MIB

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0 or size > max(self.max_read, _CHUNK):
            raise ResourceExhausted(
                f"slug has a tar header of {size} bytes (at most {self.max_read} allowed); "
                "the slug is malformed or a decompression bomb"
            )
        return super().read(size)


def _entry_path(name: str) -> tuple[PurePosixPath | None, str | None]:
    """Map a member name to a path inside the tree, or (None, why it is skipped).

    ``./app/x`` and ``app/x`` give ``x``; ``./app`` gives ``.``.
    """
    if name.startswith("/"):
        return None, "absolute path"
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        return None, "path contains '..'"
    if "\0" in name:
        return None, "path contains a NUL byte"
    if not parts or parts[0] != APP_DIR:
        return None, "outside ./app (Heroku ignores it)"
    return PurePosixPath(*parts[1:]) if len(parts) > 1 else PurePosixPath("."), None


def _lexical_target(link: PurePosixPath, target: str) -> PurePosixPath | None:
    """Where a symlink at ``link`` (tree-relative) points, tree-relative, judged
    lexically with the tree mounted at /app; None if it leaves the tree."""
    if target.startswith("/"):
        parts = [p for p in target.split("/") if p not in ("", ".")]
        if not parts or parts[0] != APP_DIR:
            return None
        parts = parts[1:]
    else:
        parts = [*link.parent.parts, *target.split("/")]
    resolved: list[str] = []
    for part in parts:
        if part in ("", "."):
            continue
        if part == "..":
            if not resolved:
                return None
            resolved.pop()
        else:
            resolved.append(part)
    return PurePosixPath(*resolved) if resolved else PurePosixPath(".")


def _escapes(root: Path, link: PurePosixPath) -> bool:
    """True if following symlink ``link`` inside the finished tree, with the tree as
    /app, would leave it (for instance through another symlink and ``..``)."""
    todo = [*reversed(_readlink_parts(root, link))]
    current: list[str] = list(link.parent.parts)
    hops = 0
    while todo:
        part = todo.pop()
        if part in ("", "."):
            continue
        if part == "..":
            if not current:
                return True
            current.pop()
            continue
        if part == "/":
            current = []
            continue
        candidate = root.joinpath(*current, part)
        if candidate.is_symlink():
            hops += 1
            if hops > _SYMLINK_HOPS:
                return True
            todo.extend(reversed(_readlink_parts(root, PurePosixPath(*current, part))))
        else:
            current.append(part)
    return False


def _readlink_parts(root: Path, link: PurePosixPath) -> list[str]:
    target = str((root / link).readlink())
    if target.startswith("/"):
        # Targets under /app were rewritten to relative ones; any other absolute
        # target leaves the tree.
        return ["..", *[".."] * len(link.parts), *target.split("/")]
    return target.split("/")


class _Unpacker:
    def __init__(self, tree: Path, limits: Limits, compressed: int) -> None:
        self.tree = tree
        self.limits = limits
        self.compressed = compressed
        self.messages: list[str] = []
        self.entries = 0
        self.declared = 0
        self.written = 0
        self.dirs: dict[PurePosixPath, int] = {PurePosixPath("."): 0o755}
        self.files: set[PurePosixPath] = set()
        self.symlinks: set[PurePosixPath] = set()
        self.saw_app = False

    def skip(self, name: str, why: str) -> None:
        self.messages.append(f'slug entry "{name}": {why}; skipped')

    def count(self, member: tarfile.TarInfo) -> None:
        self.entries += 1
        if self.entries > self.limits.max_entries:
            raise ResourceExhausted(
                f"slug has more than {self.limits.max_entries} entries; refusing to unpack it"
            )
        self.declared += max(member.size, 0)
        self._check_bytes(self.declared, member.name)

    def _check_bytes(self, total: int, name: str) -> None:
        if total > self.limits.max_unpacked_bytes:
            raise ResourceExhausted(
                f"slug unpacks to more than {self.limits.max_unpacked_bytes // MIB} MiB "
                f'(at "{name}"); refusing to unpack it'
            )
        if total > self.limits.ratio_floor_bytes and total > self.limits.max_ratio * max(
            self.compressed, 1
        ):
            raise ResourceExhausted(
                f"slug unpacks to more than {self.limits.max_ratio} times its compressed size "
                f'(at "{name}"); refusing a likely decompression bomb'
            )

    def parent_ok(self, rel: PurePosixPath, name: str) -> bool:
        """Make the parents of ``rel`` as real directories; False (and a message) if a
        parent is a symlink or a file, which the entry would be written through."""
        current = PurePosixPath(".")
        for part in rel.parent.parts:
            current = current / part
            if current in self.symlinks:
                self.skip(name, f'its parent "{current}" is a symlink')
                return False
            if current in self.files:
                self.skip(name, f'its parent "{current}" is a file')
                return False
            if current not in self.dirs:
                (self.tree / current).mkdir(mode=0o700)
                self.dirs[current] = 0o755
        return True

    def clear(self, rel: PurePosixPath, name: str) -> bool:
        """Remove an earlier non-directory entry of the same name (tar: last one wins)."""
        if rel in self.dirs:
            self.skip(name, "a directory of that name exists")
            return False
        if rel in self.files or rel in self.symlinks:
            (self.tree / rel).unlink()
            self.files.discard(rel)
            self.symlinks.discard(rel)
        return True

    def mode(self, member: tarfile.TarInfo) -> int:
        special = member.mode & (stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX)
        if special:
            bits = [
                label
                for bit, label in (
                    (stat.S_ISUID, "setuid"),
                    (stat.S_ISGID, "setgid"),
                    (stat.S_ISVTX, "sticky"),
                )
                if member.mode & bit
            ]
            self.messages.append(f'slug entry "{member.name}": {"/".join(bits)} bit removed')
        return member.mode & 0o777

    def add(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        self.count(member)
        rel, why = _entry_path(member.name)
        if rel is None:
            assert why is not None
            if why.startswith("outside ./app"):
                return  # Heroku ignores it silently; so do we.
            self.skip(member.name, why)
            return
        self.saw_app = True
        if member.isdir():
            self.add_dir(rel, member)
        elif member.isreg():
            self.add_file(tar, rel, member)
        elif member.issym():
            self.add_symlink(rel, member)
        elif member.islnk():
            self.add_hardlink(rel, member)
        elif member.ischr() or member.isblk():
            self.skip(member.name, "device node")
        elif member.isfifo():
            self.skip(member.name, "FIFO")
        else:
            self.skip(member.name, f"unsupported entry type {member.type!r}")

    def add_dir(self, rel: PurePosixPath, member: tarfile.TarInfo) -> None:
        mode = self.mode(member)
        if rel == PurePosixPath("."):
            self.dirs[rel] = mode
            return
        if not self.parent_ok(rel, member.name) or not self._replace_nondir(rel):
            return
        if rel not in self.dirs:
            (self.tree / rel).mkdir(mode=0o700)
        self.dirs[rel] = mode

    def _replace_nondir(self, rel: PurePosixPath) -> bool:
        if rel in self.files or rel in self.symlinks:
            (self.tree / rel).unlink()
            self.files.discard(rel)
            self.symlinks.discard(rel)
        return True

    def add_file(self, tar: tarfile.TarFile, rel: PurePosixPath, member: tarfile.TarInfo) -> None:
        mode = self.mode(member)
        if rel == PurePosixPath(".") or not self.parent_ok(rel, member.name):
            if rel == PurePosixPath("."):
                self.skip(member.name, "./app must be a directory")
            return
        if not self.clear(rel, member.name):
            return
        source = tar.extractfile(member)
        assert source is not None
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(self.tree / rel, flags, 0o600)
        with os.fdopen(fd, "wb") as out:
            while chunk := source.read(_CHUNK):
                self.written += len(chunk)
                self._check_bytes(self.written, member.name)
                out.write(chunk)
            out.flush()
            os.fchmod(out.fileno(), _readonly(mode))
            os.utime(out.fileno(), (member.mtime, member.mtime))
        self.files.add(rel)

    def add_symlink(self, rel: PurePosixPath, member: tarfile.TarInfo) -> None:
        target = member.linkname
        if rel == PurePosixPath("."):
            self.skip(member.name, "./app must be a directory")
            return
        if not target or "\0" in target:
            self.skip(member.name, "symlink with an empty target")
            return
        inside = _lexical_target(rel, target)
        if inside is None:
            self.skip(member.name, f'symlink to "{target}" leads outside ./app')
            return
        if target.startswith("/"):
            # /app/x is right in a dyno but means the host's /app/x to anything on the
            # host that follows it; a relative link means the same in both places.
            target = os.path.relpath(inside, rel.parent) if inside.parts else "."
        if not self.parent_ok(rel, member.name) or not self.clear(rel, member.name):
            return
        (self.tree / rel).symlink_to(target)
        self.symlinks.add(rel)

    def add_hardlink(self, rel: PurePosixPath, member: tarfile.TarInfo) -> None:
        target, why = _entry_path(member.linkname)
        if target is None:
            self.skip(member.name, f'hard link to "{member.linkname}": {why}')
            return
        if target not in self.files:
            self.skip(
                member.name,
                f'hard link to "{member.linkname}", which is not a file unpacked before it',
            )
            return
        if rel == target:
            return
        if not self.parent_ok(rel, member.name) or not self.clear(rel, member.name):
            return
        os.link(self.tree / target, self.tree / rel, follow_symlinks=False)
        self.files.add(rel)

    def finish(self) -> None:
        """Drop symlinks that leave the tree through other symlinks, then make every
        directory read-only, deepest first."""
        for link in sorted(self.symlinks):
            if _escapes(self.tree, link):
                (self.tree / link).unlink()
                self.symlinks.discard(link)
                self.messages.append(
                    f'slug entry "./app/{link}": symlink leads outside ./app through '
                    "other symlinks; skipped"
                )
        for rel in sorted(self.dirs, key=lambda p: len(p.parts), reverse=True):
            (self.tree / rel).chmod(_readonly(self.dirs[rel] | 0o500))


def _readonly(mode: int) -> int:
    """World-readable, nobody-writable; executable for all if it was for anyone."""
    return 0o555 if mode & 0o111 else 0o444


def unpack_slug(tarball: Path, dest: Path, limits: Limits = Limits()) -> Unpacked:
    """Unpack the slug ``tarball`` so that ``dest`` holds the content of its ``./app``.

    Does nothing but return ``dest`` if it exists already (a tree exists only once
    complete). Raises InvalidArgument for a file that is not a gzip-compressed tar
    (or holds no ``./app``), ResourceExhausted for a slug over Heroku's 500 MB limit or
    over one of ``limits``. Nothing is left behind on failure.
    """
    if dest.is_dir():
        return Unpacked(root=dest, messages=(), entries=0, unpacked_bytes=0)
    size = tarball.stat().st_size
    messages: list[str] = []
    warning = check_slug_size(size, limits)
    if warning:
        messages.append(warning)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        unpacker = _Unpacker(tmp, limits, size)
        with tarball.open("rb") as raw, _GuardedGzip(fileobj=raw, mode="rb") as gz:
            gz.max_read = limits.max_header_bytes
            try:
                with tarfile.open(fileobj=_as_io(gz), mode="r:") as tar:
                    for member in tar:
                        unpacker.add(tar, member)
            except (tarfile.TarError, EOFError, OSError, gzip.BadGzipFile) as exc:
                if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise  # a full disk, not a bad slug: the caller says so
                raise InvalidArgument(
                    f"slug {tarball.name} is not a valid tar.gz ({exc}); build it again"
                ) from exc
        if not unpacker.saw_app:
            raise InvalidArgument(
                f"slug {tarball.name} holds nothing under ./app; "
                "a slug is a tar.gz of ./app (tar czf slug.tgz ./app)"
            )
        unpacker.finish()
        messages.extend(unpacker.messages)
        try:
            tmp.rename(dest)
        except OSError:
            if not dest.is_dir():
                raise
            # Another unpack of the same slug won the race; its tree is as good.
            remove_tree(tmp)
    except BaseException:
        remove_tree(tmp)
        raise
    return Unpacked(
        root=dest,
        messages=tuple(messages),
        entries=unpacker.entries,
        unpacked_bytes=unpacker.written,
    )


def _as_io(gz: gzip.GzipFile) -> IO[bytes]:
    # GzipFile is a BufferedIOBase with all tarfile needs; the stubs ask for IO[bytes].
    return cast(IO[bytes], gz)


def remove_tree(path: Path) -> None:
    """Remove an unpacked (read-only) tree; a missing one is fine."""
    if not path.exists():
        return
    for directory, _dirs, _files in os.walk(path):
        with contextlib.suppress(OSError):
            Path(directory).chmod(0o700)
    shutil.rmtree(path, ignore_errors=True)
