"""dynod.model.certs: the router's TLS certificates as the API shows them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Protocol

# The default domain's certificate (signed by dynod's local CA, renewed by the router).
DEFAULT_CERT = "dynod-default"


class CertKind(StrEnum):
    # Heroku's `certs` Type column: SNI for a certificate the user uploaded.
    SNI = "SNI"
    # The default domain's, from dynod's local CA (Heroku's *.herokuapp.com one).
    LOCAL_CA = "Local CA"


@dataclass(frozen=True)
class Cert:
    name: str
    hostnames: tuple[str, ...]
    expires_at: datetime
    kind: CertKind = CertKind.SNI


class CertInstaller(Protocol):
    """Stores a certificate and has the router serve it (``router.cert_store``)."""

    def install(self, name: str, cert_pem: str, key_pem: str) -> Path: ...

    def remove(self, name: str) -> None: ...
