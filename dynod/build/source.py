"""The app's source as a build receives it: a tar (or tar.gz), streamed in chunks."""

from __future__ import annotations

import tarfile
from collections.abc import Iterable
from pathlib import Path

from dynod.errors import InvalidArgument

# Heroku: the uncompressed checkout may be at most 1 GB (limits article).
MAX_SOURCE_BYTES = 1024 * 1024 * 1024


def receive_source(dest: Path, chunks: Iterable[bytes]) -> int:
    """Write ``chunks`` to ``dest`` whole and check it is a tar; return its size.
    Raises InvalidArgument (too large, empty, not a tar)."""
    received = 0
    with dest.open("wb") as f:
        for chunk in chunks:
            received += len(chunk)
            if received > MAX_SOURCE_BYTES:
                raise InvalidArgument(
                    "source is larger than 1 GB; leave big files out (.slugignore does not "
                    "apply to the upload: use .gitignore, or a smaller directory)"
                )
            f.write(chunk)
    if received == 0:
        raise InvalidArgument("source is empty; send a tar (or tar.gz) of the app's files")
    try:
        with tarfile.open(dest) as tar:
            tar.next()
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise InvalidArgument(f"source is not a tar archive ({exc}); send a tar of the "
                              "app's files") from exc
    return received
