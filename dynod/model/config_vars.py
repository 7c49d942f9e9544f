"""dynod.model.config_vars"""

from __future__ import annotations

import re
from collections.abc import Mapping

from dynod.errors import InvalidArgument

KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


# Set by dynod in every dyno; an app-provided value would be silently overridden.
RESERVED_KEYS = frozenset({"PORT", "DYNO"})


RESERVED_PREFIX = "DYNOD_"


MAX_BYTES = 64 * 1024


def validate_key(key: str) -> None:
    """Raises InvalidArgument for a malformed or platform-reserved key."""
    if not KEY_RE.match(key):
        raise InvalidArgument(
            f"config key {key!r} is invalid: use letters, digits and underscores, "
            "not starting with a digit"
        )
    if key in RESERVED_KEYS or key.startswith(RESERVED_PREFIX):
        raise InvalidArgument(
            f"config key {key!r} is reserved: dynod sets PORT, DYNO and DYNOD_* itself; "
            "choose another name"
        )


def size_of(config: Mapping[str, str]) -> int:
    """Bytes counted against the 64 KB limit: every key and value, UTF-8 encoded."""
    return sum(len(k.encode()) + len(v.encode()) for k, v in config.items())


