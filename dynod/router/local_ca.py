"""dynod's local certificate authority, and the default domain's certificate it signs.

Every app has HTTPS on ``<app>.<domain>`` from its first deploy, as on Heroku, where
``*.herokuapp.com`` carries a certificate nobody had to ask for. No public CA signs
``*.dynod.localhost``, so dynod makes its own CA once (at install or first start) and
signs a wildcard certificate for the platform domain with it; a user who wants their
browser to trust the apps trusts the CA (``dynoctl certs:ca > ca.pem``), and dynos trust
it already (their CA bundle has it).

Layout, under ``<state_dir>/tls``::

    ca.key   the CA's private key (0600, never leaves the machine)
    ca.crt   the CA certificate (PEM, what `dynoctl certs:ca` prints)

The CA's key is ECDSA P-256; the default certificate's is RSA 2048 (see ``issue``). The
pure parts
take ``now`` so tests can move the clock. ``cryptography`` (PyCA, in Debian as
python3-cryptography) does the X.509 work: no openssl subprocess.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from dynod import paths
from dynod.errors import FailedPrecondition
from dynod.system.files import write_atomic

CA_KEY = "ca.key"
CA_CERT = paths.ca_certificate(Path("/")).name
CA_VALIDITY = timedelta(days=3650)
# Like Let's Encrypt's: 90 days, renewed 30 days before expiry (checked daily).
LEAF_VALIDITY = timedelta(days=90)
RENEW_BEFORE = timedelta(days=30)
# A client's clock a little behind ours must not see a certificate from the future.
BACKDATE = timedelta(hours=1)


@dataclass(frozen=True)
class LocalCA:
    """The CA certificate and key, PEM."""

    cert_pem: str
    key_pem: str


def _key_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _cert_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def make_ca(now: datetime, machine: str) -> LocalCA:
    """A new self-signed CA (pure but for the key's randomness)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "dynod"),
        x509.NameAttribute(NameOID.COMMON_NAME, f"dynod local CA ({machine})"),
    ])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE).not_valid_after(now + CA_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256()))
    return LocalCA(_cert_pem(cert), _key_pem(key))


def ensure_ca(directory: Path, now: datetime | None = None) -> LocalCA:
    """The CA in ``directory``, made there first if it is missing (key 0600, written
    before the certificate, each atomically: a crash never leaves a certificate whose
    key is lost). Raises FailedPrecondition when only one of the two files is there."""
    key_path, cert_path = directory / CA_KEY, directory / CA_CERT
    have_key, have_cert = key_path.exists(), cert_path.exists()
    if have_key and have_cert:
        return LocalCA(cert_path.read_text(), key_path.read_text())
    if have_cert:
        raise FailedPrecondition(
            f"local CA: {cert_path} is there but its key {key_path} is not; restore the key, "
            f"or remove {cert_path} to make a new CA (clients must then trust the new one)")
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    ca = make_ca(now or datetime.now(UTC), socket.gethostname())
    if have_key:  # a crash between the two writes: the key alone is worth nothing
        key_path.unlink()
    write_atomic(key_path, ca.key_pem, 0o600)
    write_atomic(cert_path, ca.cert_pem, 0o644)
    return ca


def default_names(domain: str) -> tuple[str, ...]:
    """What the default certificate covers: every app (``*.domain``) and the domain."""
    return (f"*.{domain}", domain)


def _general_name(name: str) -> x509.GeneralName:
    """An address as an IP SAN (clients check those, not a DNS name, for an IP)."""
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def issue(ca: LocalCA, names: tuple[str, ...], now: datetime,
          validity: timedelta = LEAF_VALIDITY, *, client_auth: bool = False
          ) -> tuple[str, str]:
    """A server certificate for ``names`` signed by ``ca``: (certificate chain PEM,
    key PEM). The chain is the leaf then the CA, as HAProxy serves it. ``client_auth``
    makes it a client's certificate too (an etcd member is both to its peers)."""
    ca_key = serialization.load_pem_private_key(ca.key_pem.encode(), password=None)
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem.encode())
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise FailedPrecondition("local CA: its key is not an EC key; remove the CA to make "
                                 "a new one")
    # RSA, not ECDSA: HAProxy picks among every certificate matching the SNI name, exact
    # and wildcard alike, ECDSA before RSA, and only then the exact name first. An ECDSA
    # *.domain would beat the RSA certificate a user adds for shop.domain (openssl req's
    # default key), so the default one must never outrank a user's.
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE).not_valid_after(now + validity)
            .add_extension(x509.SubjectAlternativeName([_general_name(n) for n in names]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH,
                 *([ExtendedKeyUsageOID.CLIENT_AUTH] if client_auth else [])]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return _cert_pem(cert) + ca.cert_pem, _key_pem(key)


def expires_at(cert_pem: str) -> datetime:
    """The first certificate's notAfter (UTC)."""
    return x509.load_pem_x509_certificate(cert_pem.encode()).not_valid_after_utc


def names_of(cert_pem: str) -> tuple[str, ...]:
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return ()
    return tuple(san.value.get_values_for_type(x509.DNSName))


def needs_renewal(cert_pem: str | None, ca: LocalCA, names: tuple[str, ...],
                  now: datetime, before: timedelta = RENEW_BEFORE) -> bool:
    """True when the default certificate is missing, unreadable, due (less than
    ``before`` left), for other names (the domain changed) or not signed by this CA."""
    if not cert_pem:
        return True
    try:
        cert = x509.load_pem_x509_certificate(cert_pem.encode())
        ca_cert = x509.load_pem_x509_certificate(ca.cert_pem.encode())
    except ValueError:
        return True
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return True
    return cert.not_valid_after_utc - now < before or names_of(cert_pem) != names


class Installer(Protocol):
    """Where the default certificate goes (``cert_store.CertStore``)."""

    def read(self, name: str) -> str | None: ...
    def install(self, name: str, cert_pem: str, key_pem: str) -> Path: ...


def renew_default(store: Installer, name: str, ca: LocalCA, domain: str,
                  now: datetime) -> bool:
    """Issue and install the default domain's certificate when it is missing or due
    (``needs_renewal``); True if it did. Raises what ``store.install`` raises."""
    names = default_names(domain)
    if not needs_renewal(store.read(name), ca, names, now):
        return False
    cert_pem, key_pem = issue(ca, names, now)
    store.install(name, cert_pem, key_pem)
    return True
