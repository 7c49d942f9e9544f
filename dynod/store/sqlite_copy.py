"""A consistent copy of a SQLite state file (the WAL's committed pages included)."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path


def backup_sqlite(source: Path, target: Path) -> None:
    """Copy the database at ``source`` to ``target`` (0600) with SQLite's online backup:
    what is committed, whatever the WAL still holds, while writers wait or not."""
    target.unlink(missing_ok=True)
    with contextlib.closing(sqlite3.connect(source)) as src, \
            contextlib.closing(sqlite3.connect(target)) as dst:
        src.backup(dst)
    target.chmod(0o600)
