"""The router's log line path: HAProxy's raw line in, Heroku's router line out.

HAProxy logs one line per request, in a raw key format of ours (``LOG_MARK`` first), to
a datagram socket that dynod reads (``LogReader``); :func:`router_line` turns it into
Heroku's router line (``at=info method=GET path="/" ... dyno=web.1 connect=0ms
service=3ms status=200``), with the H-code derived from HAProxy's termination state, and
dynod writes it to the app's stream in journald (``dynod[router]``). journald stays the
only store; if dynod is down, router lines are lost (HAProxy never blocks on logging).
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

from dynod.router.haproxy_config import LOG_MARK, dyno_of
from dynod.system import journal

log = logging.getLogger(__name__)

# Heroku error codes the router reports (error-codes page); info-level ones are not
# errors of the app.
DESCRIPTIONS = {
    "H10": "App crashed",
    "H11": "Backlog too deep",
    "H12": "Request timeout",
    "H13": "Connection closed without response",
    "H14": "No web processes running",
    "H15": "Idle connection",
    "H17": "Poorly formatted HTTP response",
    "H18": "Server Request Interrupted",
    "H19": "Backend connection timeout",
    "H21": "Backend connection refused",
    "H25": "HTTP Restriction",
    "H27": "Client Request Interrupted",
    "H28": "Client Connection Idle",
    "H80": "Maintenance mode",
    "H99": "Platform error",
}
INFO_CODES = {"H27", "H80"}

# HAProxy's termination state (first two characters of %tsc) -> Heroku code.
TERMINATION_CODES = {
    "sH": "H12",  # server timeout before the response headers
    "sD": "H15",  # server idle during the body
    "cD": "H15",  # client idle during the body
    "sC": "H19",  # connect timeout (after the retries)
    "SC": "H21",  # connection refused (after the retries)
    "SH": "H13",  # the dyno closed before answering
    "SD": "H18",  # the dyno closed during the body
    "PH": "H17",  # malformed response
    "sQ": "H11",  # queued too long
    "CH": "H27", "CD": "H27", "CR": "H27", "CC": "H27",  # the client went away
    "cR": "H28",  # the client sent no complete request in time
    "PR": "H25",  # malformed or oversized request
}


_TOKEN = re.compile(r'"((?:[^"\\]|\\.)*)"|(\S+)')


@dataclass(frozen=True)
class RouterLine:
    app: str
    message: str
    error: bool


def _field(value: str) -> str:
    return "" if value == "-" else value


def router_line(raw: str) -> RouterLine | None:
    """Heroku's router line for one raw HAProxy log line; None for other lines (server
    state changes, requests for unknown hosts)."""
    tokens = [q if q or not bare else bare for q, bare in _TOKEN.findall(raw.strip())]
    if len(tokens) != 17 or tokens[0] != LOG_MARK:
        return None
    (_, app, code, method, path, host, rid, fwd, server, tc, tw, tr, ta, status, nbytes,
     tsc, proto) = (_field(t) for t in tokens)
    if not app:
        return None
    if not code:
        code = TERMINATION_CODES.get(tsc[:2], "")
    if not code and status in ("502", "503", "504"):
        # The router answered with an error for a reason not mapped above.
        log.warning("router: unmapped termination state %s: %s", tsc, raw.strip())
        code = "H99"
    dyno = "" if server in ("", "<NOSRV>") else dyno_of(server)
    connect = service = ""
    if dyno:
        c, w, r, a = (max(int(x), 0) if x.lstrip("-").isdigit() else 0
                      for x in (tc, tw, tr, ta))
        connect = f"{c}ms"
        service = f"{max(a - c - w - r, 0)}ms"
    if code and code not in INFO_CODES and status in ("502", "503", "504"):
        status = "503"
    fields = [f"method={method}", f'path="{path}"', f"host={host}", f"request_id={rid}",
              f'fwd="{fwd}"', f"dyno={dyno}", f"connect={connect}", f"service={service}",
              f"status={status}", f"bytes={nbytes if dyno else ''}", f"protocol={proto}"]
    if code:
        at = "info" if code in INFO_CODES else "error"
        head = [f"at={at}", f"code={code}", f'desc="{DESCRIPTIONS.get(code, "")}"']
    else:
        at, head = "info", ["at=info"]
    return RouterLine(app, " ".join(head + fields), at == "error")



class LogReader:
    """The datagram socket HAProxy logs to, read in a thread until :meth:`close`."""

    def __init__(self, path: Path, journal_socket: str = journal.JOURNAL_SOCKET) -> None:
        self.path = path
        self.journal_socket = journal_socket
        self._sock: socket.socket | None = None

    def open(self) -> None:
        """Bind the socket (before HAProxy starts, so that its first lines arrive)."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(self.path))
        self.path.chmod(0o600)
        sock.settimeout(1.0)
        self._sock = sock

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()

    def run(self, stop: threading.Event) -> None:
        """Until ``stop`` is set or the socket is closed: each router line to the app's
        stream in journald; HAProxy's other lines to dynod's own log."""
        sock = self._sock
        assert sock is not None
        # One socket to journald for every line (journal.send opens one per entry).
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as out:
            while not stop.is_set():
                try:
                    data = sock.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    return
                raw = data.decode("utf-8", "replace").rstrip("\n")
                line = router_line(raw)
                if line is None:
                    if not raw.startswith(LOG_MARK):
                        log.info("haproxy: %s", raw)
                    continue
                entry = journal.encode({
                    "MESSAGE": line.message, "PRIORITY": "3" if line.error else "6",
                    "SYSLOG_IDENTIFIER": journal.SYSLOG_IDENTIFIER, journal.APP: line.app,
                    journal.SOURCE: "dynod", journal.DYNO: "router"})
                try:
                    out.sendto(entry, self.journal_socket)
                except OSError as exc:
                    log.debug("journal unavailable (%s): %s", exc, line.message)
