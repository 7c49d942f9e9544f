"""TLS certificates the router serves (by SNI): ``certs:add CERT KEY``.

Each is one PEM file (chain, then key, as HAProxy wants) in ``<state>/certs``, 0600,
listed in the router's crt-list. Checked with Python's own ssl module before it is
stored: both must parse and the key must match the certificate.
"""

from __future__ import annotations

import contextlib
import re
import ssl
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dynod.errors import InvalidArgument, NotFound
from dynod.model.certs import Cert
from dynod.model.events import CertsChanged, EventBus


def _decode(path: Path) -> dict[str, Any]:
    decoded: dict[str, Any] = ssl._ssl._test_decode_cert(str(path))  # type: ignore[attr-defined]
    return decoded


def _describe(path: Path) -> tuple[tuple[str, ...], datetime]:
    info = _decode(path)
    names = tuple(v for k, v in info.get("subjectAltName", ()) if k == "DNS")
    if not names:
        names = tuple(v for rdn in info.get("subject", ()) for k, v in rdn
                      if k == "commonName")
    expires = datetime.fromtimestamp(ssl.cert_time_to_seconds(info["notAfter"]), UTC)
    return names, expires


def cert_name(hostnames: tuple[str, ...]) -> str:
    first = hostnames[0] if hostnames else "cert"
    return re.sub(r"[^a-z0-9-]+", "-", first.lower().replace("*", "wildcard")).strip("-")


def add_cert(certs_dir: Path, events: EventBus, certificate_pem: str, key_pem: str) -> Cert:
    """Store the pair (replacing a certificate of the same name); publishes CertsChanged.
    Raises InvalidArgument (not PEM, key does not match, no host name)."""
    if "BEGIN CERTIFICATE" not in certificate_pem:
        raise InvalidArgument("the certificate is not PEM (-----BEGIN CERTIFICATE-----); "
                              "give the certificate file first, then the key")
    if "PRIVATE KEY" not in key_pem:
        raise InvalidArgument("the key is not a PEM private key (-----BEGIN ... PRIVATE "
                              "KEY-----); give the certificate file first, then the key")
    certs_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    bundle = certificate_pem.rstrip("\n") + "\n" + key_pem.rstrip("\n") + "\n"
    with tempfile.NamedTemporaryFile("w", dir=certs_dir, prefix=".new-", suffix=".tmp",
                                     delete=False) as f:
        f.write(bundle)
        tmp = Path(f.name)
    try:
        tmp.chmod(0o600)
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(tmp)
            hostnames, expires = _describe(tmp)
        except (ssl.SSLError, ValueError, KeyError) as exc:
            raise InvalidArgument(f"the certificate and key do not go together or do not "
                                  f"parse ({exc}); give the certificate, then its key") from exc
        if not hostnames:
            raise InvalidArgument("the certificate names no host (no subjectAltName or "
                                  "common name)")
        cert = Cert(cert_name(hostnames), hostnames, expires)
        tmp.replace(certs_dir / f"{cert.name}.pem")
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    events.publish(CertsChanged(cert.name))
    return cert


def list_certs(certs_dir: Path) -> list[Cert]:
    if not certs_dir.is_dir():
        return []
    out = []
    for path in sorted(certs_dir.glob("*.pem")):
        hostnames, expires = _describe(path)
        out.append(Cert(path.stem, hostnames, expires))
    return out


def remove_cert(certs_dir: Path, events: EventBus, name: str) -> None:
    """Publishes CertsChanged. Raises NotFound."""
    path = certs_dir / f"{name}.pem"
    if not re.fullmatch(r"[a-z0-9-]+", name) or not path.exists():
        raise NotFound(f"certificate {name!r} not found; see `dynoctl certs`")
    path.unlink()
    events.publish(CertsChanged(name))
