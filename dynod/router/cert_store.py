"""The router's certificates: one PEM file each, and installing one into the running
HAProxy without a reload.

This is the one place a certificate reaches HAProxy, whoever made it: ``certs:add``
(a user's), the default domain's (``local_ca``, renewed by the router), and ACME's.
``install(name, cert_pem, key_pem)`` and ``remove(name)`` are the whole API.

* Files: ``<state_dir>/certs/<name>.pem`` (chain then key, 0600, replaced atomically),
  listed in the router's crt-list, the default certificate first (what a client that
  sends no SNI gets). HAProxy reads them at start and at each reload.
* The running HAProxy (2.6's runtime API on the admin socket): a new certificate is
  ``new ssl cert`` + ``set ssl cert`` + ``commit ssl cert`` + ``add ssl crt-list``; a
  replaced one ``set`` + ``commit`` (connections in flight keep the old one, new
  handshakes get the new one); a removed one ``del ssl crt-list`` + ``del ssl cert``.
  When HAProxy is not running the files are enough: it reads them when it starts.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Callable
from pathlib import Path

from dynod.errors import InvalidArgument, NotFound, Unavailable
from dynod.model.certs import DEFAULT_CERT

# The default domain's certificate (local_ca), first in the crt-list. No name a user's
# certificate gets (control/certs.cert_name) can be this one: it has no dot and
# control refuses it.
DEFAULT = DEFAULT_CERT
# A user's certificate: its first host name with dashes for dots (control/certs); ACM's:
# ``acm--`` and the host name (ACM_PREFIX; no host name starts so: RFC 5891 keeps "--" in
# the third and fourth places for IDNA prefixes).
_NAME = re.compile(r"[a-z0-9][a-z0-9.-]*")
ACM_PREFIX = "acm--"

Admin = Callable[[str], str]


def normalize_bundle(pem: str) -> str:
    """``pem`` as the store keeps it: without the empty lines (HAProxy's runtime API
    payload ends at the first one; PEM has none), one newline after each line."""
    return "".join(line + "\n" for line in pem.splitlines() if line.strip())


class CertStore:
    """Certificate files and the running HAProxy's copy of them. Thread-safe. ``admin``
    is HAProxy's admin socket (``AdminSocket``); None: files only."""

    def __init__(self, certs_dir: Path, crt_list: Path, admin: Admin | None = None) -> None:
        self.certs_dir = certs_dir
        self.crt_list = crt_list
        self.admin = admin
        self._lock = threading.Lock()

    def path(self, name: str) -> Path:
        if not _NAME.fullmatch(name):
            raise InvalidArgument(f"certificate name {name!r}: use lowercase letters, digits, "
                                  "dots and dashes")
        return self.certs_dir / f"{name}.pem"

    def names(self) -> list[str]:
        """The stored certificates, the default first."""
        if not self.certs_dir.is_dir():
            return []
        found = sorted(p.stem for p in self.certs_dir.glob("*.pem"))
        # SNI takes the first of equal matches: a user's own certificate before ACM's.
        return sorted(found, key=lambda n: (n != DEFAULT, n.startswith(ACM_PREFIX)))

    def read(self, name: str) -> str | None:
        """The stored PEM bundle of ``name`` (chain then key), None if there is none."""
        try:
            return self.path(name).read_text()
        except FileNotFoundError:
            return None

    def install(self, name: str, cert_pem: str, key_pem: str) -> Path:
        """Store the pair as ``name`` (replacing one of that name) and have the running
        HAProxy serve it for new handshakes, without a reload. The caller has checked
        that they parse and match. Raises InvalidArgument (a bad name, HAProxy refused
        it: nothing changed) or Unavailable (HAProxy failed after taking it)."""
        return self.install_bundle(name, cert_pem + "\n" + key_pem)

    def install_bundle(self, name: str, pem: str) -> Path:
        """``install`` of a bundle already joined (chain, then key: ACME's). The running
        HAProxy takes it first: one it refuses changes nothing (InvalidArgument), so a
        file HAProxy cannot load is never stored for its next start."""
        path = self.path(name)
        bundle = normalize_bundle(pem)
        with self._lock:
            try:
                self._runtime_install(path, bundle)
            except Unavailable as exc:  # taken, then a later step failed: a reload has it
                self._store(path, bundle)
                raise Unavailable(f"{exc.message}; the file is stored and served after "
                                  "`systemctl reload dynod-router`") from exc
            self._store(path, bundle)
        return path

    def _store(self, path: Path, bundle: str) -> None:
        self.certs_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(bundle)
        tmp.replace(path)
        self._write_crt_list()

    def remove(self, name: str) -> None:
        """Stop serving ``name`` and delete it. Raises NotFound, Unavailable."""
        path = self.path(name)
        with self._lock:
            if not path.exists():
                raise NotFound(f"certificate {name!r} not found; see `dynoctl certs`")
            path.unlink()
            self._write_crt_list()
            self._runtime_remove(path)

    def write_crt_list(self) -> bool:
        """The crt-list file as the stored certificates say; True if it changed (for a
        router about to (re)start HAProxy)."""
        with self._lock:
            return self._write_crt_list()

    # -- internals

    def _write_crt_list(self) -> bool:
        text = "".join(f"{self.certs_dir / n}.pem\n" for n in self.names())
        with contextlib.suppress(FileNotFoundError):
            if self.crt_list.read_text() == text:
                return False
        self.crt_list.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.crt_list.with_name(f".{self.crt_list.name}.tmp")
        tmp.write_text(text)
        tmp.replace(self.crt_list)
        return True

    def _loaded(self) -> set[str] | None:
        """The certificate files the running HAProxy has; None when it is not running."""
        if self.admin is None:
            return None
        try:
            out = self.admin("show ssl cert")
        except Unavailable:
            return None
        return {line.strip() for line in out.splitlines()
                if line.strip() and not line.startswith("#")}

    def _call(self, command: str, ok: str, what: str) -> None:
        assert self.admin is not None
        out = self.admin(command)
        if ok not in out:
            raise Unavailable(f"router: {what}: HAProxy said {out.strip()!r}")

    def _runtime_install(self, path: Path, bundle: str) -> None:
        loaded = self._loaded()
        if loaded is None:
            return
        p = str(path)
        new = p not in loaded
        if new:
            self._call(f"new ssl cert {p}", "New empty certificate store", f"new ssl cert {p}")
        try:
            self._call(f"set ssl cert {p} <<\n{bundle}", "Transaction", f"set ssl cert {p}")
        except Unavailable as exc:
            assert self.admin is not None
            with contextlib.suppress(Unavailable):
                self.admin(f"abort ssl cert {p}")
                if new:
                    self.admin(f"del ssl cert {p}")
            raise InvalidArgument(f"HAProxy refused the certificate {path.stem}: "
                                  f"{exc.message.split('HAProxy said ', 1)[-1]}") from exc
        self._call(f"commit ssl cert {p}", "Success", f"commit ssl cert {p}")
        if new:
            self._call(f"add ssl crt-list {self.crt_list} {p}", "Success",
                       f"add ssl crt-list {self.crt_list} {p}")

    def _runtime_remove(self, path: Path) -> None:
        loaded = self._loaded()
        if loaded is None or str(path) not in loaded:
            return
        p = str(path)
        self._call(f"del ssl crt-list {self.crt_list} {p}", "deleted", f"del ssl crt-list {p}")
        self._call(f"del ssl cert {p}", "deleted", f"del ssl cert {p}")
