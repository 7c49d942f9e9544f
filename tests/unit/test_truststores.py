"""The Java trust store of JVM dynos: the stack's CAs plus dynod's local CA, in Debian's
JKS format (read back here field by field, and by the JDK's keytool where there is one)."""

from __future__ import annotations

import hashlib
import shutil
import struct
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509

from dynod import paths
from dynod.router import local_ca
from dynod.runtime import dynos, truststores
from dynod.settings import Settings
from dynod.system import mounts

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def read_jks(data: bytes, password: str) -> list[tuple[str, x509.Certificate]]:
    """The trusted certificates of a JKS keystore, checking its integrity digest."""
    body, digest = data[:-20], data[-20:]
    assert hashlib.sha1(password.encode("utf-16-be") + b"Mighty Aphrodite" + body,
                        usedforsecurity=False).digest() == digest, "integrity check"
    magic, version, count = struct.unpack_from(">III", body)
    assert (magic, version) == (0xFEEDFEED, 2)
    at, out = 12, []

    def utf() -> str:
        nonlocal at
        (n,) = struct.unpack_from(">H", body, at)
        at += 2 + n
        return body[at - n:at].decode()

    for _ in range(count):
        (tag,) = struct.unpack_from(">I", body, at)
        at += 4
        assert tag == 2  # a trusted certificate
        alias = utf()
        at += 8  # its date
        assert utf() == "X.509"
        (n,) = struct.unpack_from(">I", body, at)
        at += 4 + n
        out.append((alias, x509.load_der_x509_certificate(body[at - n:at])))
    assert at == len(body)
    return out


def cert(ca: local_ca.LocalCA) -> x509.Certificate:
    return x509.load_pem_x509_certificate(ca.cert_pem.encode())


def stack_with_bundle(tmp_path: Path, *cas: local_ca.LocalCA) -> Path:
    stack = tmp_path / "debian-13"
    bundle = stack / str(mounts.CA_BUNDLE_PATH).lstrip("/")
    bundle.parent.mkdir(parents=True)
    # A block that is no certificate is left out, not fatal.
    bundle.write_text("".join(ca.cert_pem for ca in cas)
                      + "-----BEGIN CERTIFICATE-----\nbad\n-----END CERTIFICATE-----\n")
    return stack


def test_a_jvm_dyno_trusts_the_local_ca_beside_the_stacks_own(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path / "state", runtime_dir=tmp_path / "run")
    public = local_ca.make_ca(NOW, "some public root")
    stack = stack_with_bundle(tmp_path, public)
    jvm = tmp_path / "debian-13+jvm"
    assert not truststores.has_java([jvm, stack])
    (jvm / str(mounts.JAVA_CACERTS_PATH).lstrip("/")).parent.mkdir(parents=True)
    (jvm / str(mounts.JAVA_CACERTS_PATH).lstrip("/")).write_bytes(b"Debian's, no local CA")
    assert truststores.has_java([jvm, stack])
    ca = local_ca.ensure_ca(paths.tls_dir(settings.state_dir))
    bundle = dynos.trust_bundle(settings, stack)
    assert bundle is not None

    store = truststores.java_trust_store(settings.runtime_dir, stack.name, bundle)
    got = read_jks(store.read_bytes(), "changeit")
    (cn,) = cert(ca).subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    assert [alias for alias, _ in got] == ["dynod local ca (some public root)",
                                           str(cn.value).lower()]
    assert [c for _, c in got] == [cert(public), cert(ca)]
    binds = mounts.dyno_binds(Path("/i"), None, None, bundle, store)
    assert [(str(b.target), b.read_only) for b in binds][-2:] == [
        ("/etc/ssl/certs/ca-certificates.crt", True), ("/etc/ssl/certs/java/cacerts", True)]

    # Made again only when the bundle changes: running dynos keep their file.
    inode = store.stat().st_ino
    assert truststores.java_trust_store(settings.runtime_dir, stack.name, bundle) == store
    assert store.stat().st_ino == inode
    bundle.write_text(ca.cert_pem)
    truststores.java_trust_store(settings.runtime_dir, stack.name, bundle)
    assert store.stat().st_ino != inode
    assert [c for _, c in read_jks(store.read_bytes(), "changeit")] == [cert(ca)]


def test_the_jdk_reads_it_with_and_without_the_password(tmp_path: Path) -> None:
    keytool = shutil.which("keytool")
    ca = local_ca.make_ca(NOW, "host")
    store = tmp_path / "cacerts"
    store.write_bytes(truststores.java_keystore([cert(ca)]))
    if keytool is None:  # no JDK on this machine: the integration test has one
        read_jks(store.read_bytes(), "changeit")
        return
    listed = subprocess.run([keytool, "-list", "-keystore", str(store), "-storepass",
                             "changeit"], capture_output=True, text=True, check=True).stdout
    assert "Keystore type: JKS" in listed and "1 entry" in listed, listed
    assert "dynod local ca (host), " in listed and "trustedCertEntry" in listed, listed
    wrong = subprocess.run([keytool, "-list", "-keystore", str(store), "-storepass",
                            "secret"], capture_output=True, text=True, check=False)
    assert wrong.returncode != 0, wrong.stdout
