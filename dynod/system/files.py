"""Files written whole or not at all: a temporary file beside the target, created with
its final mode (so a secret is never readable by others, not even for an instant),
fsynced, then renamed over the target."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def write_atomic(path: Path, text: str, mode: int) -> None:
    """Replace ``path`` with ``text``, mode ``mode``, in one rename."""
    tmp = path.with_name(f".{path.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
