"""What a TLS server presents, before trusting it: the first step of joining a
cluster, whose CA the joiner knows only by its hash (dynod.model.membership)."""

from __future__ import annotations

import socket
import ssl

from dynod.errors import Unavailable


def presented_chain(host: str, port: int, timeout: float = 10.0) -> list[str]:
    """The certificates (PEM) the server at host:port presents, unverified: the caller
    picks the CA it trusts among them by its hash, then verifies with it."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw, \
                context.wrap_socket(raw, server_hostname=host) as tls:
            # Public from Python 3.13 (SSLSocket.get_unverified_chain); 3.11's is the
            # private object's method of the same name.
            chain = getattr(tls, "get_unverified_chain", None) or \
                tls._sslobj.get_unverified_chain  # type: ignore[attr-defined]
            certs = chain() or []
    except OSError as exc:
        raise Unavailable(f"{host}:{port}: {exc.strerror or exc}; check the address and "
                          "that dynod's API listens there (api_listen)") from exc
    return [str(c.public_bytes()) for c in certs]  # PEM, the default encoding
