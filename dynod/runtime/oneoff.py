"""One-off dynos: Heroku's ``run`` (attached), ``run:detached`` and the release phase's
``release.N``.

A one-off dyno is a dyno like any other (``dynos.Host.start``: the release's slug tree,
an overlay root, its own netns, the app's uid, the same unit hardening), named
``run.N`` with a random 4-digit N like Heroku's, that runs once and is never restarted.
Its stdio is one of:

- a pseudo-terminal (attached, the client has a terminal): dynod keeps the master, the
  slave is the unit's stdin/stdout/stderr, dyno-init makes it the command's controlling
  terminal; window-size changes are TIOCSWINSZ on the master (the kernel sends SIGWINCH);
- pipes (attached without a terminal, and the release phase);
- the journal (detached: output goes to the app's logs, tagged ``run.N``).

Heroku (one-off-dynos): when the client's connection closes the dyno gets SIGHUP
(``Client connection closed. Sending SIGHUP to all processes``); a process that keeps
running is an ``Error R16 (Detached)`` and the dyno is stopped. One-off dynos do not
survive a dynod restart: ``recover`` hangs up the attached ones (the supervisor
never tracks one-offs).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import random
import select
import signal
import struct
import termios
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from dynod.errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted
from dynod.model import sizes
from dynod.model.dynos import (
    ONE_OFF_TYPE,
    ONE_OFF_TYPES,
    DynoInfo,
    DynoMeta,
    DynoRef,
    DynoState,
)
from dynod.runtime.dynos import Host, read_meta, ref_of, unit_of
from dynod.settings import Settings
from dynod.store import reads
from dynod.store.protocol import Store
from dynod.system import journal, mounts, units

log = logging.getLogger(__name__)

# One-off dynos are never part of a rollout: one generation for all of them.
GENERATION = 1
# How long a dyno has to exit after SIGHUP before it is an R16 and gets stopped.
HUP_GRACE = 2.0
# Heroku: SIGTERM, then SIGKILL after 30 s.
STOP_TIMEOUT = 30.0
# Next to dyno.json: how a one-off is attached, for the next dynod after a restart.
MARK = "oneoff.json"
R16 = ("Error R16 (Detached) -> An attached process is not responding to SIGHUP after "
       "its external connection was closed.")


class Stdio:
    TTY = "tty"
    PIPES = "pipes"
    JOURNAL = "journal"


@dataclass(frozen=True)
class Terminal:
    term: str = "xterm"
    columns: int = 80
    lines: int = 24


@dataclass
class OneOffDyno:
    """A running one-off dyno and dynod's ends of its stdio."""

    ref: DynoRef
    meta: DynoMeta
    user: str
    since: float
    stdio: str
    master: int | None = None  # pty master (TTY)
    stdin: int | None = None  # write end (PIPES)
    stdout: int | None = None  # read end (PIPES; stderr too when merged)
    stderr: int | None = None  # read end (PIPES, not merged)
    exit_status: int | None = None
    finished: threading.Event = field(default_factory=threading.Event)
    hung_up: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def name(self) -> str:
        return self.ref.dyno

    @property
    def app(self) -> str:
        return self.ref.app


def resolve_command(command: str, process_types: Mapping[str, str]) -> str:
    """Heroku (one-off-dynos): a Procfile process type as the first word runs that
    type's command with the rest appended (``run worker 42`` -> ``python work.py 42``)."""
    first, _, rest = command.strip().partition(" ")
    if first in process_types:
        return f"{process_types[first]} {rest}".rstrip()
    return command


def pick_number(used: set[int], rng: random.Random | None = None) -> int:
    """A random 4-digit dyno number not in ``used`` (Heroku: ``run.4520``)."""
    rng = rng or random.Random()  # noqa: S311 - a name, not a secret
    for _ in range(1000):
        n = rng.randint(1000, 9999)
        if n not in used:
            return n
    return max(used | {9999}) + 1


def set_window(fd: int, columns: int, lines: int) -> None:
    """TIOCSWINSZ on the pty master: the kernel tells the foreground group (SIGWINCH)."""
    if columns > 0 and lines > 0:
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", lines, columns, 0, 0))


def _close(fd: int | None) -> None:
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)


class OneOffs:
    """Every one-off dyno of every app. Thread-safe."""

    def __init__(self, store: Store, settings: Settings, host: Callable[[], Host]) -> None:
        self.store = store
        self.settings = settings
        self._host = host
        self._lock = threading.Lock()
        self._dynos: dict[DynoRef, OneOffDyno] = {}

    # --- starting -----------------------------------------------------------------

    def start(self, app: str, command: str, *, user: str, size: str = "",
              env: Mapping[str, str] | None = None, stdio: str = Stdio.TTY,
              terminal: Terminal | None = None, process_type: str = ONE_OFF_TYPE,
              version: int | None = None, merge_stderr: bool = False) -> OneOffDyno:
        """Start a one-off dyno of ``app``'s current release (or release ``version``,
        for the release phase). Raises NotFound (app, release), FailedPrecondition (no
        slug deployed), InvalidArgument (size, env), ResourceExhausted (the limit of
        concurrent one-off dynos), Unavailable (systemd)."""
        if not command.strip():
            raise InvalidArgument("no command given; usage: dynoctl run COMMAND (e.g. bash)")
        with self.store.read() as tx:
            reads.require_app(tx, app)
            release = (reads.require_release(tx, app, version) if version is not None
                       else reads.current_release(tx, app))
            slug = tx.slug(app, release.slug_id) if release.slug_id else None
            uid = tx.app_uid(app)
            rows = {p.type: p for p in tx.processes(app)}
        if slug is None or not slug.uploaded or uid is None:
            raise FailedPrecondition(
                f'app "{app}" has no code deployed yet (release v{release.version} has no '
                "slug); push code first (git push, or dynoctl slugs:deploy)")
        size = sizes.parse_size(size).name if size else (
            rows[process_type].size if process_type in rows else sizes.DEFAULT_SIZE)
        if process_type == ONE_OFF_TYPE:
            command = resolve_command(command, slug.process_types)
        config = {**release.config, **(env or {})}
        terminal = terminal or Terminal()
        if stdio == Stdio.TTY:
            config.update({"TERM": terminal.term or "xterm",
                           "COLUMNS": str(terminal.columns), "LINES": str(terminal.lines)})
        with self._lock:
            live = [d for d in self._dynos.values() if d.app == app]
            if process_type == ONE_OFF_TYPE and sum(
                    d.ref.process_type == ONE_OFF_TYPE for d in live) >= self.settings.oneoff_limit:
                raise ResourceExhausted(
                    f'app "{app}" has {self.settings.oneoff_limit} one-off dynos running, the '
                    "limit (oneoff_limit in /etc/dynod/dynod.toml); stop one with "
                    "`dynoctl ps:stop run.N` or wait for one to finish")
            used = {d.ref.number for d in live if d.ref.process_type == process_type}
            ref = DynoRef(app, process_type, pick_number(used), GENERATION)
            # Reserve the name while the dyno starts.
            placeholder = OneOffDyno(ref, DynoMeta(app, process_type, ref.number, GENERATION,
                                                   release.version, command, size, "", 0),
                                     user, time.time(), stdio)
            self._dynos[ref] = placeholder
        ours: list[int] = []  # our ends
        theirs: list[int] = []  # the dyno's ends, closed once systemd has them
        fds: tuple[int, int, int] | None = None
        try:
            if stdio == Stdio.TTY:
                master, slave = os.openpty()
                ours.append(master)
                theirs.append(slave)
                set_window(master, terminal.columns, terminal.lines)
                placeholder.master = master
                fds = (slave, slave, slave)
            elif stdio == Stdio.PIPES:
                in_r, in_w = os.pipe()
                out_r, out_w = os.pipe()
                ours += [in_w, out_r]
                theirs += [in_r, out_w]
                placeholder.stdin, placeholder.stdout = in_w, out_r
                err_w = out_w
                if not merge_stderr:
                    err_r, err_w = os.pipe()
                    ours.append(err_r)
                    theirs.append(err_w)
                    placeholder.stderr = err_r
                fds = (in_r, out_w, err_w)
            journal.app_event(app, ref.dyno, f"Starting process with command `{command}` "
                                             f"by user {user}")
            meta = self._host().start(ref, release=release.version, command=command,
                                      size=size, checksum=slug.checksum, uid=uid,
                                      config=config, stdio=fds, stack=slug.stack)
        except BaseException:
            for fd in ours:
                _close(fd)
            with self._lock:
                self._dynos.pop(ref, None)
            raise
        finally:
            for fd in theirs:
                _close(fd)
        placeholder.meta = meta
        placeholder.since = time.time()
        with contextlib.suppress(OSError):
            (self._dyno_dir(ref) / MARK).write_text(json.dumps(
                {"stdio": stdio, "user": user, "since": placeholder.since}))
        journal.app_event(app, ref.dyno, "State changed from starting to up")
        log.info("one-off %s of %s started: %s", ref.dyno, app, command)
        if stdio == Stdio.JOURNAL:
            threading.Thread(target=self._watch, args=(placeholder,), daemon=True,
                             name=f"watch {unit_of(ref)}").start()
        return placeholder

    # --- attached I/O -------------------------------------------------------------

    def output(self, d: OneOffDyno, poll: float = 0.5) -> Iterator[tuple[str, bytes]]:
        """("stdout"|"stderr", bytes) as the dyno writes them, until it has exited and
        its output is drained; then ``finish`` it (``d.exit_status`` is set)."""
        streams: dict[int, str] = {}
        if d.master is not None:
            streams[d.master] = "stdout"
        if d.stdout is not None:
            streams[d.stdout] = "stdout"
        if d.stderr is not None:
            streams[d.stderr] = "stderr"
        last_check = time.monotonic()
        while streams and not d.finished.is_set():
            try:
                ready, _, _ = select.select(list(streams), [], [], poll)
            except (OSError, ValueError):
                break  # closed by a hang-up
            for fd in ready:
                try:
                    data = os.read(fd, 65536)
                except OSError:  # EIO: every slave end is closed, the dyno is gone
                    data = b""
                if data:
                    yield streams[fd], data
                else:
                    del streams[fd]
            if not ready and time.monotonic() - last_check > poll:
                last_check = time.monotonic()
                if self._exited(d):
                    # Whatever is still buffered, then stop.
                    for fd, name in list(streams.items()):
                        yield from self._drain(fd, name)
                    break
        self.wait_exit(d, timeout=10.0)
        self.finish(d)

    @staticmethod
    def _drain(fd: int, name: str) -> Iterator[tuple[str, bytes]]:
        while True:
            ready, _, _ = select.select([fd], [], [], 0)
            if not ready:
                return
            try:
                data = os.read(fd, 65536)
            except OSError:
                return
            if not data:
                return
            yield name, data

    def write_stdin(self, d: OneOffDyno, data: bytes) -> None:
        fd = d.master if d.master is not None else d.stdin
        if fd is None or d.finished.is_set():
            return
        with contextlib.suppress(OSError):
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]

    def close_stdin(self, d: OneOffDyno) -> None:
        """The client's stdin ended: without a terminal the dyno's stdin is closed
        (with one, Ctrl-D is just a byte, as in ssh)."""
        if d.stdin is not None:
            with d._lock:
                fd, d.stdin = d.stdin, None
            _close(fd)

    def resize(self, d: OneOffDyno, columns: int, lines: int) -> None:
        if d.master is not None and not d.finished.is_set():
            with contextlib.suppress(OSError):
                set_window(d.master, columns, lines)

    # --- ending -------------------------------------------------------------------

    def _exited(self, d: OneOffDyno) -> bool:
        """Ran and ended (or is gone). StartTransientUnit returns with the start job
        queued: a unit still inactive that never started its command has not exited."""
        status = units.dyno_status(unit_of(d.ref))
        if status is None:
            return True
        if status.active_state == "failed" or status.sub_state == "exited":
            return True
        return status.active_state == "inactive" and status.main_started_usec > 0

    def wait_exit(self, d: OneOffDyno, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if d.finished.is_set() or self._exited(d):
                return True
            time.sleep(0.05)
        return False

    def finish(self, d: OneOffDyno) -> int:
        """Read the exit status, log it, stop and tear the dyno down. Idempotent;
        returns the exit status (128+N for signal N)."""
        with d._lock:
            if d.finished.is_set():
                return d.exit_status if d.exit_status is not None else 1
            status = units.dyno_status(unit_of(d.ref))
            code = status.exit_status if status is not None else None
            d.exit_status = code if code is not None else 1
            journal.app_event(d.app, d.name, f"Process exited with status {d.exit_status}")
            journal.app_event(d.app, d.name, "State changed from up to complete")
            try:
                units.stop_dyno(unit_of(d.ref))
                units.wait_gone(unit_of(d.ref), timeout=STOP_TIMEOUT + 10)
                self._host().teardown(d.ref)
            except Exception:
                log.exception("tearing down %s", unit_of(d.ref))
            for fd in (d.master, d.stdin, d.stdout, d.stderr):
                _close(fd)
            d.master = d.stdin = d.stdout = d.stderr = None
            with self._lock:
                if self._dynos.get(d.ref) is d:
                    del self._dynos[d.ref]
            d.finished.set()
        log.info("one-off %s of %s exited with status %s", d.name, d.app, d.exit_status)
        return d.exit_status

    def hang_up(self, d: OneOffDyno) -> None:
        """The client went away: SIGHUP to every process, HUP_GRACE seconds, then R16
        and a stop (SIGTERM, 30 s, SIGKILL). Returns once the dyno is gone."""
        with d._lock:
            if d.finished.is_set() or d.hung_up:
                return
            d.hung_up = True
        if not self._exited(d):
            journal.app_event(d.app, d.name,
                              "Client connection closed. Sending SIGHUP to all processes")
            with contextlib.suppress(Exception):
                units.kill_dyno(unit_of(d.ref), signal.SIGHUP)
            if not self.wait_exit(d, HUP_GRACE):
                journal.app_event(d.app, d.name, R16, priority=3)
                journal.app_event(d.app, d.name, "Stopping all processes with SIGTERM")
                with contextlib.suppress(Exception):
                    units.kill_dyno(unit_of(d.ref), signal.SIGTERM)
                if not self.wait_exit(d, STOP_TIMEOUT):
                    journal.app_event(d.app, d.name,
                                      "Stopping remaining processes with SIGKILL")
                    with contextlib.suppress(Exception):
                        units.kill_dyno(unit_of(d.ref), signal.SIGKILL)
                    self.wait_exit(d, 10.0)
        self.finish(d)

    def stop(self, app: str, name: str) -> bool:
        """``ps:stop run.N``: SIGTERM, 30 s, SIGKILL. False when no such one-off."""
        with self._lock:
            found = [d for d in self._dynos.values() if d.app == app and d.name == name]
        if not found:
            return False
        d = found[0]

        def stop_it() -> None:
            journal.app_event(d.app, d.name, "Stopping all processes with SIGTERM")
            with contextlib.suppress(Exception):
                units.kill_dyno(unit_of(d.ref), signal.SIGTERM)
            if not self.wait_exit(d, STOP_TIMEOUT):
                with contextlib.suppress(Exception):
                    units.kill_dyno(unit_of(d.ref), signal.SIGKILL)
                self.wait_exit(d, 10.0)
            if d.stdio == Stdio.JOURNAL:
                self.finish(d)

        threading.Thread(target=stop_it, daemon=True, name=f"stop {unit_of(d.ref)}").start()
        return True

    def _watch(self, d: OneOffDyno) -> None:
        """A detached dyno: finish it once it exits."""
        while not d.finished.is_set():
            try:
                if self._exited(d):
                    self.finish(d)
                    return
            except Exception:
                log.exception("watching %s", unit_of(d.ref))
            time.sleep(0.5)

    # --- after a dynod restart ----------------------------------------------------

    def _dyno_dir(self, ref: DynoRef) -> Path:
        return mounts.dynos_dir(self.settings.runtime_dir) / ref.key

    def recover(self) -> None:
        """At start, for the one-off units a previous dynod left running (the supervisor
        leaves them alone): a detached one is tracked again and finished when it exits;
        an attached one or a release phase has lost its client or runner, so it is hung
        up (SIGHUP, R16 if ignored, stop). Returns at once; the work is in threads."""
        for unit in units.list_dynos():
            ref = ref_of(unit.dyno)
            if ref.process_type not in ONE_OFF_TYPES:
                continue
            with self._lock:
                if ref in self._dynos:
                    continue
            meta = read_meta(self.settings, ref)
            try:
                mark = json.loads((self._dyno_dir(ref) / MARK).read_text())
            except (OSError, ValueError):
                mark = {}
            if meta is None:
                meta = DynoMeta(ref.app, ref.process_type, ref.number, ref.generation, 0, "",
                                sizes.DEFAULT_SIZE, "", 0)
            d = OneOffDyno(ref, meta, str(mark.get("user", "")),
                           float(mark.get("since", time.time())),
                           str(mark.get("stdio", Stdio.PIPES)))
            with self._lock:
                self._dynos[ref] = d
            detached = d.stdio == Stdio.JOURNAL
            log.info("found one-off %s of %s (%s)", d.name, d.app,
                     "detached, watching" if detached else "attached, hanging up")
            target = self._watch if detached else self.hang_up
            threading.Thread(target=target, args=(d,), daemon=True,
                             name=f"recover {unit_of(ref)}").start()

    # --- ps -----------------------------------------------------------------------

    def get(self, app: str, name: str) -> OneOffDyno | None:
        with self._lock:
            return next((d for d in self._dynos.values()
                         if d.app == app and d.name == name), None)

    def dynos(self, app: str) -> list[DynoInfo]:
        """The app's one-off dynos for ``ps`` (run.N and release.N), by name."""
        with self.store.read() as tx:
            if tx.app(app) is None:
                raise NotFound(f'app "{app}" does not exist; list apps with `dynoctl apps`')
        with self._lock:
            found = sorted((d for d in self._dynos.values() if d.app == app),
                           key=lambda d: (d.ref.process_type, d.ref.number))
        out = []
        for d in found:
            status = units.dyno_status(unit_of(d.ref)) if d.meta.address else None
            size = sizes.SIZES.get(d.meta.size)
            out.append(DynoInfo(
                app=app, name=d.name, process_type=d.ref.process_type,
                state=DynoState.UP if d.meta.address else DynoState.STARTING, since=d.since,
                command=d.meta.command, size=d.meta.size, release=d.meta.release,
                unit=unit_of(d.ref), address=d.meta.address, port=d.meta.port,
                memory_bytes=status.memory_bytes if status else None,
                memory_quota=size.memory_mb * 1024 * 1024 if size else 0,
                cpu_nsec=status.cpu_nsec if status else None,
            ))
        return out
