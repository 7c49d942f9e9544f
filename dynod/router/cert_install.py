"""Certificates into a running HAProxy without a reload: its runtime API (HAProxy 2.6,
management guide "set ssl cert", "add ssl crt-list").

The seam for every part of dynod that installs a certificate (ACM's renewals, later the
default domain's own): ``install_cert`` puts a PEM bundle (chain, then key) into the
running HAProxy and then its file, replacing the one served under that file name or adding it
to the crt-list; ``uninstall_cert`` takes it out. Both work on the file too, so a later
reload or restart reads the same certificates. A bind serves a certificate committed
here from the next TLS handshake on; connections already open keep theirs.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from dynod.errors import InvalidArgument, Unavailable

Admin = Callable[[str], str]


def write_bundle(path: Path, bundle: str) -> None:
    """Atomically replace ``path`` with ``bundle`` (0600: it holds a private key)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(bundle)
        Path(tmp).replace(path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            Path(tmp).unlink()


def loaded(admin: Admin, crt_list: Path) -> list[str]:
    """The certificate files the running HAProxy serves from ``crt_list``."""
    out = admin(f"show ssl crt-list {crt_list}")
    return [line.split()[0] for line in out.splitlines()
            if line.strip() and not line.startswith("#")]


def install_cert(admin: Admin, crt_list: Path, cert_file: Path, bundle: str) -> None:
    """Serve ``bundle`` as ``cert_file`` from now on, without a reload: replace it in
    place when HAProxy has it, else create it and add it to ``crt_list``; then write the
    file. Raises InvalidArgument (HAProxy refused the PEM: nothing changed, the file and
    the certificate served are the old ones), Unavailable (HAProxy does not answer)."""
    pem = "\n".join(line for line in bundle.splitlines() if line.strip())
    name = str(cert_file)
    known = name in loaded(admin, crt_list)
    if not known:
        out = admin(f"new ssl cert {name}")
        if "already exists" not in out and "New empty certificate store" not in out:
            raise Unavailable(f"router: new ssl cert {name}: {out.strip()}")
    # The payload ends at the first empty line: the PEM has none.
    out = admin(f"set ssl cert {name} <<\n{pem}\n")
    if "Transaction created" not in out and "Transaction updated" not in out:
        admin(f"abort ssl cert {name}")
        if not known:
            admin(f"del ssl cert {name}")
        raise InvalidArgument(f"router: HAProxy refused the certificate {name}: "
                              f"{' '.join(out.split())}")
    out = admin(f"commit ssl cert {name}")
    if "Success" not in out:
        raise Unavailable(f"router: commit ssl cert {name}: {out.strip()}")
    if not known:
        out = admin(f"add ssl crt-list {crt_list} {name}")
        if "Success" not in out:
            raise Unavailable(f"router: add ssl crt-list {crt_list} {name}: {out.strip()}")
    write_bundle(cert_file, pem + "\n")


def uninstall_cert(admin: Admin, crt_list: Path, cert_file: Path) -> None:
    """Stop serving ``cert_file`` (no reload) and remove the file. Raises Unavailable."""
    name = str(cert_file)
    if name in loaded(admin, crt_list):
        out = admin(f"del ssl crt-list {crt_list} {name}")
        if "deleted" not in out:
            raise Unavailable(f"router: del ssl crt-list {crt_list} {name}: {out.strip()}")
        admin(f"del ssl cert {name}")
    with contextlib.suppress(FileNotFoundError):
        cert_file.unlink()
