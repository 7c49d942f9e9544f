"""Ships each app's log stream to its drains: one reader and one sender thread per drain.

The reader follows the app's stream in journald (``journalctl --follow``, the same
entries and the same expansion of batched router entries as ``dynoctl logs``, see
:mod:`dynod.control.logs`) into a bounded buffer; the sender frames what is buffered
and writes it to the drain. A drain that is slow, dead or never reads only fills its
own buffer: the reader drops the oldest lines (counted, and reported to the drain as
Heroku's L10 line once it takes lines again), and nothing else waits for it.

Position: after each delivered batch the sender writes the journal cursor (and the
line within a batched entry) it reached to ``<state>/drains/<token>.position``; a
restarted dynod resumes every drain from there, so what was buffered, or written to
the journal while dynod was down, is delivered then. A new drain starts at the time it
was added. The position is runtime state, not desired state: it lives beside the
shipper, not in the store, and is rewritten many times a second under load.

Written here in control/ rather than runtime/ because it reads the stream through
:mod:`dynod.control.logs` (runtime/ never imports control/).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from dynod.control import logs
from dynod.model.drains import Drain, Scheme, Target, frame, overflow_message, parse_url
from dynod.store.protocol import Store
from dynod.system import drain_sockets, journal, processes

log = logging.getLogger(__name__)

# Heroku: Logplex keeps 1024 messages per drain before it drops (L10).
BUFFER_LINES = 1024
# Lines per write (syslog) or per POST (https).
BATCH_LINES = 500
RETRY_MAX = 10.0


@dataclass(frozen=True)
class Position:
    """The last delivered line: the journal entry's cursor, and its index among the
    lines of that entry (a batched router entry holds many)."""

    cursor: str
    line: int


@dataclass(frozen=True)
class DrainStats:
    """What a metrics exporter shows of one drain."""

    app: str
    token: str
    url: str
    buffered: int  # lines read from the journal, not yet delivered
    dropped: int  # lines lost to a full buffer since dynod started
    delivered: int  # lines delivered since dynod started
    connected: bool
    last_error: str


class Connection(Protocol):
    def send(self, frames: list[bytes]) -> None:
        """Raises DeliveryFailed (an OSError)."""
        ...

    def close(self) -> None: ...


class Journal(Protocol):
    def __iter__(self) -> Iterator[str]: ...
    def close(self) -> int | None: ...


Connect = Callable[[Drain, Target], Connection]
OpenJournal = Callable[[list[str]], Journal]


def read_position(path: Path) -> Position | None:
    try:
        cursor, line = path.read_text().splitlines()[:2]
        return Position(cursor, int(line))
    except (OSError, ValueError):
        return None


def write_position(path: Path, pos: Position) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{pos.cursor}\n{pos.line}\n")
    tmp.replace(path)


def journal_argv(app: str, since: datetime, start: Position | None) -> list[str]:
    """The app's stream from ``start`` (that entry again: its later lines may be
    undelivered), else from ``since``, then following."""
    argv = ["journalctl", "--output=json", "--no-pager", "--all", "--follow", "--no-tail",
            f"{journal.APP}={app}", *(f"{journal.SOURCE}={s}" for s in logs.SOURCES)]
    if start is not None:
        argv.append(f"--cursor={start.cursor}")
    else:
        argv.append(f"--since=@{since.timestamp():.6f}")
    return argv


def drain_frame(token: str, line: logs.LogLine) -> bytes:
    """Heroku's names on a drain: ``heroku`` for the platform (dynod) source."""
    app_name = "heroku" if line.source == "dynod" else "app"
    return frame(line.time, token, app_name, line.dyno, line.message)


def stream_items(raw_lines: Iterable[str],
                 start: Position | None) -> Iterator[tuple[Position, logs.LogLine]]:
    """Each stream line with its position, skipping what ``start`` says was delivered."""
    for raw in raw_lines:
        entry = logs.decode_entry(raw)
        if entry is None:
            continue
        cursor = str(entry.get("__CURSOR", ""))
        for i, line in enumerate(logs.entry_lines(entry)):
            if start is not None and cursor == start.cursor and i <= start.line:
                continue
            yield Position(cursor, i), line


class DrainShipper:
    """One drain's reader, buffer and sender."""

    def __init__(self, drain: Drain, position_file: Path, connect: Connect,
                 open_journal: OpenJournal, buffer_lines: int = BUFFER_LINES) -> None:
        self.drain = drain
        self.target = parse_url(drain.url)
        self.position_file = position_file
        self._connect = connect
        self._open_journal = open_journal
        self._limit = buffer_lines
        self._buffer: deque[tuple[Position | None, bytes]] = deque()
        self._inflight = 0
        self._cond = threading.Condition()
        self._stopping = threading.Event()
        self._journal: Journal | None = None
        self._conn: Connection | None = None
        self._pending_drops = 0
        self._drops_since: datetime | None = None
        self.dropped = 0
        self.delivered = 0
        self.connected = False
        self.last_error = ""
        self._threads = [threading.Thread(target=self._read, daemon=True,
                                          name=f"drain-read {drain.token}"),
                         threading.Thread(target=self._send, daemon=True,
                                          name=f"drain-send {drain.token}")]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self, wait: float = 0.0) -> None:
        """Stops both threads; waits up to ``wait`` s for them."""
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
        journal_ = self._journal
        if journal_ is not None:
            journal_.close()
        conn = self._conn
        if conn is not None:
            conn.close()
        for t in self._threads:
            if t.is_alive() and wait:
                t.join(wait)

    def buffered(self) -> int:
        with self._cond:
            return len(self._buffer) + self._inflight

    def stats(self) -> DrainStats:
        return DrainStats(self.drain.app, self.drain.token, self.drain.url,
                          self.buffered(), self.dropped, self.delivered, self.connected,
                          self.last_error)

    # the reader: journal -> buffer
    def _read(self) -> None:
        delay = 1.0
        while not self._stopping.is_set():
            # After journalctl ended: after the last line read; at start: after the
            # last line delivered before dynod stopped.
            start = self._last_read or read_position(self.position_file)
            argv = journal_argv(self.drain.app, self.drain.created_at, start)
            try:
                self._journal = self._open_journal(argv)
            except processes.CommandFailed as exc:
                log.error("drain %s: journal: %s", self.drain.token, exc)
                self._stopping.wait(delay)
                continue
            for pos, line in stream_items(self._journal, start):
                self._push(pos, drain_frame(self.drain.token, line), line.time)
                self._last_read = pos
            self._journal.close()
            # journalctl ended (rotated away, killed): resume after the last line read.
            self._stopping.wait(delay)

    _last_read: Position | None = None

    def _push(self, pos: Position | None, data: bytes, when: datetime) -> None:
        with self._cond:
            if len(self._buffer) >= self._limit:
                self._buffer.popleft()
                self.dropped += 1
                self._pending_drops += 1
                if self._drops_since is None:
                    self._drops_since = when
            self._buffer.append((pos, data))
            self._cond.notify()

    # the sender: buffer -> drain
    def _take(self) -> list[tuple[Position | None, bytes]] | None:
        with self._cond:
            while not self._buffer and not self._stopping.is_set():
                self._cond.wait()
            if self._stopping.is_set():
                return None
            batch = [self._buffer.popleft()
                     for _ in range(min(BATCH_LINES, len(self._buffer)))]
            if self._pending_drops:
                since = self._drops_since or datetime.now(UTC)
                note = frame(datetime.now(UTC), self.drain.token, "heroku", "logplex",
                             overflow_message(self._pending_drops, since))
                batch.insert(0, (None, note))
                self._pending_drops = 0
                self._drops_since = None
            self._inflight = len(batch)
            return batch

    def _send(self) -> None:
        delay = 1.0
        while True:
            batch = self._take()
            if batch is None:
                return
            frames = [data for _, data in batch]
            while not self._stopping.is_set():
                try:
                    if self._conn is None:
                        self._conn = self._connect(self.drain, self.target)
                    self._conn.send(frames)
                except drain_sockets.DeliveryFailed as exc:
                    self._failed(str(exc))
                    self._stopping.wait(delay)
                    delay = min(delay * 2, RETRY_MAX)
                    continue
                delay = 1.0
                if not self.connected:
                    log.info("drain %s of %s: delivering to %s", self.drain.token,
                             self.drain.app, self.drain.url)
                self.connected, self.last_error = True, ""
                break
            else:
                return
            with self._cond:
                self._inflight = 0
            self.delivered += sum(1 for pos, _ in batch if pos is not None)
            last = next((pos for pos, _ in reversed(batch) if pos is not None), None)
            if last is not None:
                with contextlib.suppress(OSError):
                    write_position(self.position_file, last)

    def _failed(self, why: str) -> None:
        if self.connected or why != self.last_error:
            log.warning("drain %s of %s (%s): %s; retrying", self.drain.token,
                        self.drain.app, self.drain.url, why)
        self.connected, self.last_error = False, why
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


def connect(local_ca: Path | None) -> Connect:
    """Connections to a drain's receiver, TLS verified against the system's CAs and
    dynod's local CA, as they are when it connects (a CA added later counts)."""
    def open_(drain: Drain, target: Target) -> Connection:
        ctx = drain_sockets.tls_context(local_ca)
        if target.scheme is Scheme.HTTPS:
            return drain_sockets.HttpsConnection(target.host, target.port, target.path,
                                                 ctx, drain.token)
        return drain_sockets.SyslogConnection(target.host, target.port,
                                              ctx if target.tls else None)
    return open_


def probe(local_ca: Path | None) -> Callable[[Target], None]:
    """Connects once to a new drain's receiver; raises DeliveryFailed saying why not."""
    def probe_(target: Target) -> None:
        ctx = drain_sockets.tls_context(local_ca)
        drain_sockets.probe(target.host, target.port, ctx if target.tls else None)
    return probe_


class DrainShippers:
    """A shipper per drain in the store; :meth:`sync` follows drains:add/remove."""

    def __init__(self, store: Store, directory: Path, connect: Connect,
                 open_journal: OpenJournal = processes.Lines) -> None:
        self.store = store
        self.directory = directory
        self._connect = connect
        self._open_journal = open_journal
        self._lock = threading.Lock()
        self._shippers: dict[str, DrainShipper] = {}

    def sync(self) -> None:
        with self.store.read() as tx:
            wanted = {d.token: d for d in tx.drains()}
        with self._lock:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            for token in set(self._shippers) - set(wanted):
                self._shippers.pop(token).stop()
                with contextlib.suppress(OSError):
                    (self.directory / f"{token}.position").unlink()
            for token in set(wanted) - set(self._shippers):
                shipper = DrainShipper(wanted[token], self.directory / f"{token}.position",
                                       self._connect, self._open_journal)
                self._shippers[token] = shipper
                shipper.start()

    def stats(self) -> list[DrainStats]:
        """Every drain's buffer, drops and deliveries, by app then token."""
        with self._lock:
            shippers = list(self._shippers.values())
        return sorted((s.stats() for s in shippers), key=lambda s: (s.app, s.token))

    def stop(self) -> None:
        with self._lock:
            shippers = list(self._shippers.values())
            self._shippers.clear()
        for s in shippers:
            s.stop(wait=2.0)
