"""Slug blobs: each slug tarball stored once, named by its sha256, written atomically and
checked against its declared size and checksum before it is kept."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from dynod.errors import InvalidArgument
from dynod.model.slugs import (
    GZIP_MAGIC,
    path_of,
)


def write_blob(slugs_dir: Path, chunks: Iterable[bytes], checksum: str, size: int) -> Path:
    """Write ``chunks`` to ``path_of(slugs_dir, checksum)`` if they match; return it.

    The same content uploaded twice is stored once (the rename replaces identical bytes).
    """
    slugs_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    final = path_of(slugs_dir, checksum)
    digest = hashlib.sha256()
    received = 0
    head = b""
    fd, tmp_name = tempfile.mkstemp(dir=slugs_dir, prefix=".upload-", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                received += len(chunk)
                if received > size:
                    raise InvalidArgument(
                        f"slug tarball is larger than the declared {size} bytes; "
                        "create the slug with its real size"
                    )
                if len(head) < 2:
                    head += chunk[: 2 - len(head)]
                digest.update(chunk)
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        if received != size:
            raise InvalidArgument(
                f"slug tarball has {received} bytes, not the declared {size}; "
                "the upload was cut short, retry it"
            )
        if head != GZIP_MAGIC:
            raise InvalidArgument("slug tarball is not gzip-compressed; give a .tar.gz of ./app")
        actual = "sha256:" + digest.hexdigest()
        if actual != checksum:
            raise InvalidArgument(
                f"slug tarball's checksum is {actual}, not the declared {checksum}; "
                "the file changed or was corrupted, create the slug again"
            )
        tmp.chmod(0o644)
        tmp.replace(final)
        dir_fd = os.open(slugs_dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return final


def remove_blobs(slugs_dir: Path, checksums: Iterable[str]) -> None:
    """Delete tarballs that no slug refers to any more (after destroying an app)."""
    for checksum in checksums:
        with contextlib.suppress(FileNotFoundError):
            path_of(slugs_dir, checksum).unlink()


