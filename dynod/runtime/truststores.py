"""The Java trust store of dynos with a JVM: the stack's CAs plus dynod's local CA.

OpenSSL, curl, Python, Ruby and Node.js read /etc/ssl/certs/ca-certificates.crt, which
every dyno gets with the local CA added (``dynos.trust_bundle``). The JVM reads its own
keystore instead, /etc/ssl/certs/java/cacerts, which Debian's ca-certificates-java made
from the same certificates when the jvm layer was built, without dynod's local CA; so a
Java app calling ``https://<app>.<domain>`` failed the TLS handshake (PKIX path building
failed). A dyno whose layers have that keystore gets, bound over it, one made from its
trust bundle: the same certificates, the local CA among them.

The format is Debian's: a JKS keystore of trusted certificates whose integrity check
uses the password "changeit", so the JVM's default (no password: no check) and
``keytool -list -cacerts -storepass changeit`` both read it as they read Debian's.
(cryptography's PKCS#12 Java trust store cannot be both: with its certificates in the
clear, its MAC is under the empty password and "changeit" fails it.)
"""

from __future__ import annotations

import hashlib
import os
import re
import struct
import threading
import warnings
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from dynod.system.mounts import JAVA_CACERTS_PATH

# Debian's and the JDK's password of cacerts.
CACERTS_PASSWORD = "changeit"  # noqa: S105 - public, the same on every JDK
_PEM = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)
# JKS (sun.security.provider.JavaKeyStore): magic, version 2, then the entries.
_JKS_MAGIC = 0xFEEDFEED
_TRUSTED_CERT = 2


def certificates(pem: bytes) -> list[x509.Certificate]:
    """The certificates of a PEM bundle; one that cannot be parsed is left out (a
    bundle's odd CA must not cost a dyno every other one)."""
    out = []
    for block in _PEM.findall(pem):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. a CA with a negative serial number
            try:
                out.append(x509.load_pem_x509_certificate(block))
            except ValueError:
                continue
    return out


def _utf(text: str) -> bytes:
    data = text.encode()  # Java's modified UTF-8 equals UTF-8 for these names
    return struct.pack(">H", len(data)) + data


def _alias(cert: x509.Certificate, taken: set[str]) -> str:
    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    base = (str(names[0].value) if names else cert.subject.rfc4514_string()).lower()
    alias, n = base, 1
    while alias in taken:
        n += 1
        alias = f"{base} {n}"
    taken.add(alias)
    return alias


def java_keystore(certs: Iterable[x509.Certificate],
                  password: str = CACERTS_PASSWORD) -> bytes:
    """A JKS keystore holding ``certs`` as trusted certificates (aliases: their common
    names, lower-cased as the JDK writes them). The same certificates give the same
    bytes (each entry's date is its certificate's notBefore)."""
    taken: set[str] = set()
    entries = []
    for cert in certs:
        der = cert.public_bytes(Encoding.DER)
        millis = int(cert.not_valid_before_utc.timestamp() * 1000)
        entries.append(struct.pack(">I", _TRUSTED_CERT) + _utf(_alias(cert, taken))
                       + struct.pack(">q", millis) + _utf("X.509")
                       + struct.pack(">I", len(der)) + der)
    body = struct.pack(">III", _JKS_MAGIC, 2, len(entries)) + b"".join(entries)
    # The JDK's integrity check: SHA-1 over the password (UTF-16BE), a fixed phrase
    # and everything before it.
    digest = hashlib.sha1(password.encode("utf-16-be") + b"Mighty Aphrodite" + body,
                          usedforsecurity=False).digest()
    return body + digest


def has_java(lowers: Iterable[Path]) -> bool:
    """Whether a root of these lower directories has Debian's Java trust store."""
    rel = str(JAVA_CACERTS_PATH).lstrip("/")
    return any((lower / rel).is_file() for lower in lowers)


def java_trust_store(runtime_dir: Path, name: str, bundle: Path) -> Path:
    """The Java trust store of the certificates in ``bundle``, written under
    ``runtime_dir`` as ``tls/<name>-java-cacerts`` when the bundle changed (a running
    dyno keeps the one it was started with: the file is replaced, not rewritten)."""
    pem = bundle.read_bytes()
    out = runtime_dir / "tls" / f"{name}-java-cacerts"
    stamp = out.with_name(out.name + ".source")
    source = hashlib.sha256(pem).hexdigest()
    try:
        if out.is_file() and stamp.read_text() == source:
            return out
    except FileNotFoundError:
        pass
    out.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    suffix = f".{os.getpid()}.{threading.get_ident()}.tmp"
    for path, data in ((out, java_keystore(certificates(pem))), (stamp, source.encode())):
        tmp = path.with_name(f".{path.name}{suffix}")
        tmp.write_bytes(data)
        tmp.chmod(0o644)
        tmp.replace(path)
    return out
