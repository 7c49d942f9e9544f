"""dynod.model.certs"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Cert:
    name: str
    hostnames: tuple[str, ...]
    expires_at: datetime


