"""dynod.model.domains"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from dynod.errors import InvalidArgument

# RFC 1123 labels; a leading "*." wildcard is not supported (yet).
_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"


HOSTNAME_RE = re.compile(rf"^{_LABEL}(\.{_LABEL})+$")


@dataclass(frozen=True)
class Domain:
    """A custom host name routed to ``app``."""

    hostname: str
    app: str
    created_at: datetime


def normalize_hostname(hostname: str) -> str:
    """Lower-cased, without a trailing dot. Raises InvalidArgument for a bad name."""
    name = hostname.strip().lower().rstrip(".")
    if len(name) > 253 or not HOSTNAME_RE.match(name):
        raise InvalidArgument(
            f"domain {hostname!r} is not a valid host name; use letters, digits, dashes "
            "and dots, e.g. www.example.com"
        )
    return name


def default_hostname(app: str, domain: str) -> str:
    return f"{app}.{domain}"


