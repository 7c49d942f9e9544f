"""TLS certificates the router serves (by SNI): ``certs``, ``certs:add CERT KEY``,
``certs:remove NAME``, ``certs:ca``.

Each is one PEM file (chain, then key, as HAProxy wants) in ``<state>/certs``, 0600,
stored and handed to the running router by a ``CertInstaller`` (``router.cert_store``,
no reload). Checked before: the certificate and the key must parse and the key must be
the certificate's. The default domain's certificate (``dynod-default``) is the router's
own: it is listed, never added or removed by hand.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import NameOID

from dynod import paths
from dynod.errors import FailedPrecondition, InvalidArgument, NotFound
from dynod.model.certs import DEFAULT_CERT, Cert, CertInstaller, CertKind
from dynod.model.events import CertsChanged, EventBus


def _describe(cert_pem: str) -> tuple[tuple[str, ...], datetime]:
    """(host names, expiry) of the first certificate: subjectAltName's DNS names, else
    the common name. Raises ValueError when it does not parse."""
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names = tuple(san.value.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        names = ()
    if not names:
        names = tuple(str(a.value) for a in cert.subject.get_attributes_for_oid(
            NameOID.COMMON_NAME))
    return names, cert.not_valid_after_utc


def _public(key: PrivateKeyTypes | x509.Certificate) -> bytes:
    public = key.public_key()
    return public.public_bytes(serialization.Encoding.DER,
                               serialization.PublicFormat.SubjectPublicKeyInfo)


def cert_name(hostnames: tuple[str, ...]) -> str:
    first = hostnames[0] if hostnames else "cert"
    return re.sub(r"[^a-z0-9-]+", "-", first.lower().replace("*", "wildcard")).strip("-")


def add_cert(installer: CertInstaller, events: EventBus, certificate_pem: str,
             key_pem: str) -> Cert:
    """Store the pair (replacing a certificate of the same name) and serve it;
    publishes CertsChanged. Raises InvalidArgument (not PEM, key does not match, no host
    name, the default certificate's name), Unavailable (the router refused it)."""
    if "BEGIN CERTIFICATE" not in certificate_pem:
        raise InvalidArgument("the certificate is not PEM (-----BEGIN CERTIFICATE-----); "
                              "give the certificate file first, then the key")
    if "PRIVATE KEY" not in key_pem:
        raise InvalidArgument("the key is not a PEM private key (-----BEGIN ... PRIVATE "
                              "KEY-----); give the certificate file first, then the key")
    try:
        cert = x509.load_pem_x509_certificate(certificate_pem.encode())
        key = serialization.load_pem_private_key(key_pem.encode(), password=None)
        hostnames, expires = _describe(certificate_pem)
        if _public(key) != _public(cert):
            raise ValueError("the key is not the certificate's")
    except (ValueError, TypeError) as exc:
        raise InvalidArgument(f"the certificate and key do not go together or do not "
                              f"parse ({exc}); give the certificate, then its key "
                              "(unencrypted)") from exc
    if not hostnames:
        raise InvalidArgument("the certificate names no host (no subjectAltName or "
                              "common name)")
    name = cert_name(hostnames)
    if name == DEFAULT_CERT:
        raise InvalidArgument(f"the name {DEFAULT_CERT!r} is the default domain's "
                              "certificate; give a certificate for your own domain")
    installer.install(name, certificate_pem, key_pem)
    events.publish(CertsChanged(name))
    return Cert(name, hostnames, expires)


def list_certs(certs_dir: Path) -> list[Cert]:
    """Every stored certificate, the default domain's first."""
    if not certs_dir.is_dir():
        return []
    out = []
    for path in sorted(certs_dir.glob("*.pem"), key=lambda p: (p.stem != DEFAULT_CERT, p.stem)):
        try:
            hostnames, expires = _describe(path.read_text())
        except (OSError, ValueError):
            continue  # replaced meanwhile, or not ours to list
        kind = CertKind.LOCAL_CA if path.stem == DEFAULT_CERT else CertKind.SNI
        out.append(Cert(path.stem, hostnames, expires, kind))
    return out


def remove_cert(installer: CertInstaller, events: EventBus, name: str) -> None:
    """Publishes CertsChanged. Raises NotFound, FailedPrecondition (the default one)."""
    if name == DEFAULT_CERT:
        raise FailedPrecondition(f"certificate {name!r} is the default domain's, made and "
                                 "renewed by dynod; it cannot be removed")
    if not re.fullmatch(r"[a-z0-9-]+", name):
        raise NotFound(f"certificate {name!r} not found; see `dynoctl certs`")
    installer.remove(name)
    events.publish(CertsChanged(name))


def ca_certificate(state_dir: Path) -> str:
    """The local CA's certificate (PEM), for ``dynoctl certs:ca``. Raises
    FailedPrecondition when dynod has not made it yet."""
    path = paths.ca_certificate(state_dir)
    try:
        return path.read_text()
    except FileNotFoundError as exc:
        raise FailedPrecondition(f"the local CA is not made yet ({path}); start dynod "
                                 "(`systemctl start dynod`) and try again") from exc
