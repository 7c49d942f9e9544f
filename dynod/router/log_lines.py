"""The router's log line path: HAProxy's raw line in, Heroku's router lines out, batched.

HAProxy writes one raw line per request (``haproxy_config.LOG_FORMAT``) into a ring in
its own memory and forwards the ring over a stream socket, octet-counted, to dynod's
``LogReader``. The reader turns each line into Heroku's router line (``at=info
method=GET path="/" ... dyno=web.1 connect=0ms service=3ms status=200``, the H-code from
HAProxy's termination state) and writes them to the app's stream in journald several at
a time: one entry per app per flush (every ``FLUSH_SECONDS`` or ``BATCH_LINES`` lines),
whose MESSAGE holds the lines and ``DYNOD_TIMES`` their times; ``dynoctl logs``
expands them back to lines (``dynod.control.logs``). journald's cost is per entry, not
per line (measured: benchmarks/router.py), and its rate limit counts entries too.

Nothing is dropped silently: HAProxy counts the lines its ring could not keep and says so
in the stream (``N events dropped``); the reader adds the lines journald refused, and
both go into Heroku's ``Error L10 (output buffer overflow): N messages dropped since
...`` in the apps' streams and :attr:`LogReader.dropped` (``apps:info``).
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
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

# HAProxy's termination state (first two characters of %tsc) -> Heroku code
# (configuration.txt 8.5). Pairs not listed fall back on the first character
# (FIRST_CODES), and anything else that is not a clean end is H99.
TERMINATION_CODES = {
    "sH": "H12",  # server timeout before the response headers
    "sD": "H15",  # server idle during the body
    "sC": "H19",  # connect timeout (after the retries)
    "sQ": "H11",  # queued too long
    "SC": "H21",  # connection refused (after the retries)
    "SH": "H13",  # the dyno closed before answering
    "SD": "H18",  # the dyno closed during the body
    "PH": "H17",  # malformed response
    "PR": "H25",  # malformed or oversized request
    "cR": "H28",  # the client sent no complete request in time
    "cD": "H15",  # client idle during the body
    "cC": "H28", "cH": "H28", "cQ": "H28", "cT": "H28",
}
FIRST_CODES = {
    "C": "H27",  # the client went away (any phase)
    "c": "H28",  # the client was idle too long
    "S": "H13",  # the dyno reset or refused
    "s": "H12",  # the dyno was too slow
    "P": "H17",  # HAProxy refused something as a proxy
    "I": "H99", "D": "H99", "U": "H99", "K": "H99", "R": "H99",  # HAProxy itself
}

# The raw line's leading, space-free fields (haproxy_config.LOG_FORMAT); the rest is the
# middle of Heroku's line, already written by HAProxy.
_HEAD_FIELDS = 12
FLUSH_SECONDS = 0.2
BATCH_LINES = 1000
BATCH_BYTES = 256 * 1024
# After a short read the reader waits this long before the next one, so that lines come
# many to a read (HAProxy's ring holds them meanwhile): one recv and one parse call per
# line at tens of thousands of lines a second cost dynod more than the lines themselves.
READ_CHUNK = 262144
READ_PAUSE = 0.05
_DROPPED = re.compile(r"^(\d+) events? dropped$")


@dataclass(frozen=True)
class RouterLine:
    app: str
    message: str
    error: bool
    # For metrics: the status Heroku logs, the H-code ("" for none), the request's
    # total time in ms (HAProxy's Ta) and the response's bytes.
    status: str = ""
    code: str = ""
    total_ms: int = 0
    bytes: int = 0


def _ms(x: str) -> int:
    return max(int(x), 0) if x.lstrip("-").isdigit() else 0


def code_for(tsc: str, status: str, server: str) -> str:
    """The H-code of a request HAProxy ended with this termination state and status,
    "" for a clean end (whatever the app answered)."""
    state = tsc[:2]
    if len(state) == 2 and state[0] not in "-L":
        return TERMINATION_CODES.get(state) or FIRST_CODES.get(state[0], "H99")
    if server in ("-", "<NOSRV>") and status[:1] == "5":
        return "H99"  # the router answered an error itself, for no reason mapped here
    return ""


def router_line(raw: str) -> RouterLine | None:
    """Heroku's router line for one raw HAProxy log line; None for other lines (server
    state changes, requests for unknown hosts, lines of another format)."""
    parts = raw.rstrip("\n").split(" ", _HEAD_FIELDS)
    if len(parts) != _HEAD_FIELDS + 1 or parts[0] != LOG_MARK or parts[1] == "-":
        return None
    _, app, code, tsc, status, tc, tw, tr, ta, server, nbytes, proto, middle = parts
    if code == "-":
        code = code_for(tsc, status, server)
    error = bool(code) and code not in INFO_CODES
    if error and status in ("500", "502", "503", "504"):
        status = "503"  # Heroku answers its own errors with 503
    dyno = "" if server in ("-", "<NOSRV>") else dyno_of(server)
    if dyno:
        c, w, r, a = _ms(tc), _ms(tw), _ms(tr), _ms(ta)
        tail = (f"dyno={dyno} connect={c}ms service={max(a - c - w - r, 0)}ms "
                f"status={status} bytes={nbytes}")
    else:
        tail = f"dyno= connect= service= status={status} bytes="
    if code:
        head = (f"at={'error' if error else 'info'} code={code} "
                f'desc="{DESCRIPTIONS.get(code, "")}" ')
    else:
        head = "at=info "
    return RouterLine(app, f"{head}{middle} {tail} protocol={proto}", error, status, code,
                      _ms(ta), _ms(nbytes))


def l10_line(dropped: int, since: datetime) -> str:
    """Heroku's L10 (logplex): lines lost before they reached the stream."""
    when = since.astimezone(UTC).isoformat(timespec="microseconds")
    return f"Error L10 (output buffer overflow): {dropped} messages dropped since {when}."


def frames(buf: bytearray) -> list[bytes]:
    """Take the complete octet-counted frames (``<len> <msg>``) off the front of ``buf``.
    Raises ValueError for a stream that is not octet-counted."""
    out = []
    pos, end = 0, len(buf)
    while True:
        sp = buf.find(b" ", pos, pos + 12)
        if sp < 0:
            if end - pos >= 12:
                raise ValueError(f"not an octet-counted frame: {bytes(buf[pos:pos + 40])!r}")
            break
        length = bytes(buf[pos:sp])
        if not length.isdigit():
            raise ValueError(f"not an octet-counted frame: {bytes(buf[pos:pos + 40])!r}")
        n = int(length)
        stop = sp + 1 + n
        if stop > end:
            break
        out.append(bytes(buf[sp + 1:stop]))
        pos = stop
    del buf[:pos]
    return out


@dataclass
class _Batch:
    lines: list[str] = field(default_factory=list)
    times: list[str] = field(default_factory=list)
    size: int = 0


class LogReader:
    """The stream socket HAProxy's ring forwards to (one connection per HAProxy worker:
    an old one finishing after a reload, and the new one), read until :meth:`close`."""

    def __init__(self, path: Path, journal_socket: str = journal.JOURNAL_SOCKET, *,
                 clock: Callable[[], float] = time.time,
                 observe: Callable[[list[RouterLine]], None] | None = None) -> None:
        self.path = path
        # Told of every router line, a batch at a time, outside the lock (metrics).
        self.observe = observe
        self.journal_socket = journal_socket
        self.clock = clock
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._batches: dict[tuple[str, bool], _Batch] = {}
        self._apps: set[str] = set()
        self._out: socket.socket | None = None
        self._unreported = 0
        self._unreported_since: datetime | None = None
        # Lines lost since dynod started, and when the first was lost.
        self.dropped = 0
        self.dropped_since: datetime | None = None
        self.lines = 0

    def open(self) -> None:
        """Bind the socket (before HAProxy starts, so that its first lines arrive)."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(self.path))
        self.path.chmod(0o600)
        sock.listen(16)
        sock.settimeout(FLUSH_SECONDS)
        self._sock = sock
        out = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        # Room for a whole batch in one datagram (root may pass wmem_max).
        for opt in (getattr(socket, "SO_SNDBUFFORCE", 32), socket.SO_SNDBUF):
            with contextlib.suppress(OSError):
                out.setsockopt(socket.SOL_SOCKET, opt, 4 * BATCH_BYTES)
                break
        self._out = out

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()

    def run(self, stop: threading.Event) -> None:
        """Until ``stop`` is set or the socket is closed: accept HAProxy's connections,
        and flush the batches every ``FLUSH_SECONDS``."""
        sock = self._sock
        assert sock is not None
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                pass
            except OSError as exc:
                if sock.fileno() == -1:
                    break  # closed: dynod is stopping
                log.warning("router log socket: %s", exc)
                stop.wait(FLUSH_SECONDS)
            else:
                threading.Thread(target=self._read, args=(conn, stop), daemon=True,
                                 name="router-log-conn").start()
            self.flush()
        self.flush()

    def _read(self, conn: socket.socket, stop: threading.Event) -> None:
        """One HAProxy worker's stream; any error ends this connection only (HAProxy
        connects again and goes on from where its ring's reader was)."""
        buf = bytearray()
        with conn:
            conn.settimeout(1.0)
            while not stop.is_set():
                try:
                    data = conn.recv(READ_CHUNK)
                except TimeoutError:
                    continue
                except OSError as exc:
                    log.warning("router log stream: %s", exc)
                    return
                if not data:
                    return
                buf += data
                try:
                    self.take([f.decode("utf-8", "replace") for f in frames(buf)])
                except Exception:  # never lose the reader to one bad line
                    log.exception("router log stream: unreadable data, reconnecting")
                    return
                if len(data) < READ_CHUNK:
                    stop.wait(READ_PAUSE)

    def take(self, raws: list[str]) -> None:
        """Raw lines in: router lines into their app's batch, HAProxy's drop reports
        counted, its other lines to dynod's own log."""
        now = self.clock()
        usec = str(int(now * 1_000_000))
        full = []
        seen: list[RouterLine] = []
        with self._lock:
            for raw in raws:
                line = router_line(raw)
                if line is None:
                    if raw.startswith(LOG_MARK):
                        continue  # a request for no app (unknown host)
                    m = _DROPPED.match(raw.strip())
                    if m:
                        self._count_dropped(int(m.group(1)), now)
                    else:
                        log.info("haproxy: %s", raw.strip())
                    continue
                self.lines += 1
                seen.append(line)
                key = (line.app, line.error)
                batch = self._batches.get(key)
                if batch is None:
                    batch = self._batches[key] = _Batch()
                    self._apps.add(line.app)
                batch.lines.append(line.message)
                batch.times.append(usec)
                batch.size += len(line.message) + 18
                if len(batch.lines) >= BATCH_LINES or batch.size >= BATCH_BYTES:
                    full.append((key, self._batches.pop(key)))
        for key, batch in full:
            self._send(key, batch)
        if self.observe is not None and seen:
            try:
                self.observe(seen)
            except Exception:  # metrics never cost a log line
                log.exception("router log observer")

    def _count_dropped(self, n: int, now: float) -> None:
        when = datetime.fromtimestamp(now, UTC)
        self.dropped += n
        self._unreported += n
        if self.dropped_since is None:
            self.dropped_since = when
        if self._unreported_since is None:
            self._unreported_since = when

    def flush(self) -> None:
        """Send every batch; then report drops not yet reported (L10) to every app
        whose lines this reader has seen."""
        with self._lock:
            batches, self._batches = self._batches, {}
        for key, batch in batches.items():
            self._send(key, batch)
        with self._lock:
            n, since = self._unreported, self._unreported_since
            apps = sorted(self._apps)
            if not n or since is None:
                return
            self._unreported, self._unreported_since = 0, None
        message = l10_line(n, since)
        log.warning("router: %s", message)
        for app in apps:
            self._entry({"MESSAGE": message, "PRIORITY": "3"}, app)

    def _send(self, key: tuple[str, bool], batch: _Batch) -> None:
        app, error = key
        ok = self._entry({"MESSAGE": "\n".join(batch.lines),
                          "PRIORITY": "3" if error else "6",
                          journal.TIMES: " ".join(batch.times)}, app)
        if not ok:
            with self._lock:
                self._count_dropped(len(batch.lines), self.clock())

    def _entry(self, fields: dict[str, str], app: str) -> bool:
        entry = journal.encode({**fields, "SYSLOG_IDENTIFIER": journal.SYSLOG_IDENTIFIER,
                                journal.APP: app, journal.SOURCE: "dynod",
                                journal.DYNO: "router"})
        out = self._out
        if out is None:
            return False
        try:
            out.sendto(entry, self.journal_socket)
        except OSError as exc:
            log.debug("journal unavailable (%s)", exc)
            return False
        return True
