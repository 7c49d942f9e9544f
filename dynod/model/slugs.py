"""dynod.model.slugs"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import MappingProxyType

from dynod.errors import InvalidArgument

# Heroku: a compressed slug may be at most 500 MB (slug-compiler article).
MAX_SLUG_BYTES = 500 * 1024 * 1024


# Heroku's classic Procfile: ^([A-Za-z0-9_-]+):\s*(.+)$ (buildpacks-procfile SPEC.md).
PROCESS_TYPE_RE = re.compile(r"^[A-Za-z0-9_-]{1,63}$")


CHECKSUM_RE = re.compile(r"^sha256:([0-9a-f]{64})$")


GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class Slug:
    """A slug of ``app``. ``checksum`` is ``sha256:<hex>``; ``uploaded`` once its
    tarball is stored and verified. ``stack``: the stack it was built on, which its
    dynos run on too (a venv holds the stack's python); ``create_slug`` always sets it."""

    id: str
    app: str
    checksum: str
    size: int
    created_at: datetime
    process_types: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    commit: str = ""
    uploaded: bool = False
    stack: str = ""
    # The stack's language layers its dynos run with (those its build had: layers.py).
    layers: tuple[str, ...] = ()

    @property
    def sha256(self) -> str:
        return self.checksum.removeprefix("sha256:")


# The language layers a stack can have, in stacking order (dynod/build/layers.py makes them).
LAYER_NAMES = ("ruby", "jvm", "php", "go")


def path_of(slugs_dir: Path, checksum: str) -> Path:
    return slugs_dir / f"{checksum.removeprefix('sha256:')}.tgz"


def parse_checksum(text: str) -> str:
    """``sha256:<hex>`` (Heroku writes ``SHA256:``), lower-cased. Raises InvalidArgument."""
    checksum = text.strip().lower()
    if not CHECKSUM_RE.match(checksum):
        raise InvalidArgument(
            f"slug checksum {text!r} is invalid; give sha256:<64 hex digits> of the tar.gz"
        )
    return checksum


def validate_process_types(process_types: Mapping[str, str]) -> None:
    for name, command in process_types.items():
        if not PROCESS_TYPE_RE.match(name):
            raise InvalidArgument(
                f"process type {name!r} is invalid: use letters, digits, '_' and '-'"
            )
        if not command.strip() or "\0" in command:
            raise InvalidArgument(f"process type {name!r}: give it a command")


