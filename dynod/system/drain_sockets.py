"""The network side of log drains: TCP and TLS connections to syslog servers, HTTPS
POSTs to logplex receivers, and the probe ``drains:add`` makes before it keeps a URL.

TLS is always verified: the system's CAs plus dynod's local CA (so a receiver with a
certificate from ``dynoctl certs:ca``'s CA works too), the host name checked. Every
operation has a timeout, so a drain that stops reading costs its own thread a wait and
nothing else.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import uuid
from pathlib import Path

CONNECT_TIMEOUT = 5.0
# A send that makes no progress for this long gives the connection up (and reconnects).
SEND_TIMEOUT = 10.0
USER_AGENT = "dynod-logplex"


class DeliveryFailed(OSError):
    """The receiver refused, could not be reached, or answered an HTTP error."""


def tls_context(local_ca: Path | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    if local_ca is not None and local_ca.is_file():
        ctx.load_verify_locations(cafile=str(local_ca))
    return ctx


def _why(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"its TLS certificate is not trusted ({exc.verify_message})"
    if isinstance(exc, socket.gaierror):
        return f"its host name does not resolve ({exc.strerror})"
    if isinstance(exc, TimeoutError | socket.timeout):
        return "it did not answer within 5 s"
    if isinstance(exc, ConnectionRefusedError):
        return "it refused the connection"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _connect(host: str, port: int, ctx: ssl.SSLContext | None,
             timeout: float) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        if ctx is not None:
            sock = ctx.wrap_socket(sock, server_hostname=host)
    except BaseException:
        sock.close()
        raise
    return sock


def probe(host: str, port: int, ctx: ssl.SSLContext | None,
          timeout: float = CONNECT_TIMEOUT) -> None:
    """Connect (and shake hands, for TLS) once; raises DeliveryFailed saying why not."""
    try:
        _connect(host, port, ctx, timeout).close()
    except (OSError, ssl.SSLError) as exc:
        raise DeliveryFailed(_why(exc)) from exc


class SyslogConnection:
    """Octet-counted syslog frames over one TCP (or TLS) connection."""

    def __init__(self, host: str, port: int, ctx: ssl.SSLContext | None) -> None:
        try:
            self.sock = _connect(host, port, ctx, CONNECT_TIMEOUT)
        except (OSError, ssl.SSLError) as exc:
            raise DeliveryFailed(_why(exc)) from exc
        self.sock.settimeout(SEND_TIMEOUT)

    def send(self, frames: list[bytes]) -> None:
        try:
            self.sock.sendall(b"".join(frames))
        except (OSError, ssl.SSLError) as exc:
            raise DeliveryFailed(_why(exc)) from exc

    def close(self) -> None:
        self.sock.close()


class HttpsConnection:
    """Logplex's HTTPS drain: each POST carries several frames (``Logplex-Msg-Count``)
    and a ``Logplex-Frame-Id`` that a retry keeps, so a receiver can drop duplicates."""

    def __init__(self, host: str, port: int, path: str, ctx: ssl.SSLContext,
                 token: str) -> None:
        self.conn = http.client.HTTPSConnection(host, port, timeout=SEND_TIMEOUT,
                                                context=ctx)
        self.path = path
        self.token = token
        try:
            self.conn.connect()
        except (OSError, ssl.SSLError) as exc:
            raise DeliveryFailed(_why(exc)) from exc

    @staticmethod
    def frame_id() -> str:
        return uuid.uuid4().hex

    def send(self, frames: list[bytes], frame_id: str = "") -> None:
        headers = {"Content-Type": "application/logplex-1",
                   "Logplex-Msg-Count": str(len(frames)),
                   "Logplex-Frame-Id": frame_id or self.frame_id(),
                   "Logplex-Drain-Token": self.token,
                   "User-Agent": USER_AGENT}
        try:
            self.conn.request("POST", self.path, body=b"".join(frames), headers=headers)
            reply = self.conn.getresponse()
            reply.read()
        except (OSError, ssl.SSLError, http.client.HTTPException) as exc:
            raise DeliveryFailed(_why(exc)) from exc
        if not 200 <= reply.status < 300:
            raise DeliveryFailed(f"it answered HTTP {reply.status} {reply.reason}")

    def close(self) -> None:
        self.conn.close()
