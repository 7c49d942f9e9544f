"""The release phase: a slug's ``release:`` command, run before its release goes live.

Heroku (release-phase): whenever a release is created (a build, a config change, a
rollback) and its slug declares ``release``, that command runs in a one-off dyno
``release.N`` of the new release. "App dynos don't boot for a new release until the
release phase finishes successfully": the release stays ``pending`` (``releases``
shows ``release command executing``) and the formation keeps running the current
release (``releases.current``: the latest succeeded one). Exit 0 marks it
``succeeded`` and the supervisor rolls the formation to it; anything else (or being
stopped, or the 1-hour timeout) marks it ``failed`` (``release command failed``) and
nothing else changes.

The output goes to the app's logs (``app[release.N]``) and to
``<state_dir>/release-output/<app>/v<N>.log`` for ``releases:output`` and for the
``git push`` / ``slugs:deploy`` that made the release (``follow``).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO

from dynod.errors import DynodError, FailedPrecondition, NotFound
from dynod.model.events import EventBus, ReleaseFailed, ReleasePhaseStarted
from dynod.model.releases import RELEASE_TYPE, ReleaseStatus
from dynod.runtime.oneoff import OneOffs, Stdio
from dynod.settings import Settings
from dynod.store import reads
from dynod.store.protocol import Store
from dynod.system import journal

log = logging.getLogger(__name__)

# Heroku: "The release phase has a 1-hour timeout".
TIMEOUT = 3600.0
POLL = 0.1


def output_path(settings: Settings, app: str, version: int) -> Path:
    return settings.state_dir / "release-output" / app / f"v{version}.log"


class ReleasePhase:
    """Runs pending releases' commands, one thread per release. ``kick`` is safe from
    any thread; ``changed(app)`` is called when a release's status changes."""

    def __init__(self, store: Store, settings: Settings, oneoffs: OneOffs,
                 changed: Callable[[str], None], events: EventBus, *,
                 timeout: float = TIMEOUT) -> None:
        self.store = store
        self.settings = settings
        self.oneoffs = oneoffs
        self.changed = changed
        self.events = events
        self.timeout = timeout
        self._lock = threading.Lock()
        self._running: dict[tuple[str, int], threading.Event] = {}

    def kick(self, app: str) -> None:
        """Run the release phase of ``app``'s newest release if it is pending."""
        try:
            with self.store.read() as tx:
                if tx.app(app) is None:
                    return
                latest = reads.latest_release(tx, app)
        except NotFound:
            return
        if latest.status is not ReleaseStatus.PENDING:
            return
        key = (app, latest.version)
        with self._lock:
            if key in self._running:
                return
            self._running[key] = threading.Event()
        threading.Thread(target=self._run, args=key, daemon=True,
                         name=f"release {app} v{latest.version}").start()

    def kick_all(self) -> None:
        """At start: pending releases whose phase a dynod restart interrupted run again."""
        with self.store.read() as tx:
            names = [a.name for a in tx.apps()]
        for name in names:
            self.kick(name)

    def _run(self, app: str, version: int) -> None:
        path = output_path(self.settings, app, version)
        status = ReleaseStatus.FAILED
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("w", encoding="utf-8") as out:
                status = self._phase(app, version, out)
        except Exception:
            log.exception("release phase of %s v%d", app, version)
        with contextlib.suppress(NotFound), self.store.write() as tx:  # app deleted meanwhile
            reads.require_release(tx, app, version)
            tx.set_release_status(app, version, status)
        if status is ReleaseStatus.FAILED:
            self.events.publish(ReleaseFailed(
                app, version, f"Release v{version} failed: the release command did not "
                              "succeed"))
        with self._lock:
            done = self._running.pop((app, version), None)
        if done is not None:
            done.set()
        self.changed(app)

    def _phase(self, app: str, version: int, out: TextIO) -> ReleaseStatus:
        with self.store.read() as tx:
            release = reads.require_release(tx, app, version)
            command = reads.release_command(tx, release)
        if not command:
            return ReleaseStatus.SUCCEEDED
        self.events.publish(ReleasePhaseStarted(app, version, release.user))
        try:
            d = self.oneoffs.start(app, command, user=release.user, stdio=Stdio.PIPES,
                                   process_type=RELEASE_TYPE, version=version,
                                   merge_stderr=True)
        except DynodError as exc:
            out.write(f"release command could not start: {exc.message}\n")
            out.flush()
            return ReleaseStatus.FAILED
        self.oneoffs.close_stdin(d)
        timer = threading.Timer(self.timeout, lambda: self.oneoffs.stop(app, d.name))
        timer.daemon = True
        timer.start()
        pending = b""
        try:
            for _, data in self.oneoffs.output(d):
                pending += data
                *lines, pending = pending.split(b"\n")
                for raw in lines:
                    self._line(app, d.name, raw, out)
            if pending:
                self._line(app, d.name, pending, out)
        finally:
            timer.cancel()
        return ReleaseStatus.SUCCEEDED if d.exit_status == 0 else ReleaseStatus.FAILED

    @staticmethod
    def _line(app: str, dyno: str, raw: bytes, out: TextIO) -> None:
        line = raw.decode("utf-8", "replace").rstrip("\r")
        out.write(line + "\n")
        out.flush()
        journal.app_event(app, dyno, line, source="app")

    # --- reading the output -------------------------------------------------------

    def running(self, app: str, version: int) -> bool:
        with self._lock:
            return (app, version) in self._running

    def follow(self, app: str, version: int | None = None, *, follow: bool = True,
               timeout: float | None = None) -> Iterator[tuple[int, str | ReleaseStatus]]:
        """(version, line) for each line of release ``version``'s phase output (default:
        the newest release), then (version, status) last. With ``follow`` it waits for a
        pending release's phase to end. Raises NotFound, FailedPrecondition (no release
        command in that release's slug)."""
        with self.store.read() as tx:
            release = (reads.require_release(tx, app, version) if version is not None
                       else reads.latest_release(tx, app))
            command = reads.release_command(tx, release)
        version = release.version
        if not command:
            raise FailedPrecondition(
                f'app "{app}": release v{version} has no release command (no release: '
                "process type in its Procfile), so it has no release output")
        if follow:
            self.kick(app)
        path = output_path(self.settings, app, version)
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout + 60)
        offset = 0
        buffer = ""
        while True:
            status = self._status(app, version)
            done = status is not ReleaseStatus.PENDING and not self.running(app, version)
            with contextlib.suppress(FileNotFoundError), path.open(encoding="utf-8") as f:
                f.seek(offset)
                chunk = f.read()
                offset = f.tell()
                buffer += chunk
            *lines, buffer = buffer.split("\n")
            for line in lines:
                yield version, line
            if done or not follow or time.monotonic() > deadline:
                if buffer:
                    yield version, buffer
                yield version, self._status(app, version)
                return
            time.sleep(POLL)

    def follow_lines(self, app: str, version: int, on_line: Callable[[str], None],
                     indent: str = "") -> ReleaseStatus:
        """What a deploy prints while its release phase runs (Heroku's git push):
        ``Running release command...``, the output, ``Waiting for release.... done.``
        (or ``failed.``). Returns the release's final status."""
        on_line(f"{indent}Running release command...")
        on_line("")
        status: ReleaseStatus = ReleaseStatus.PENDING
        for _, item in self.follow(app, version):
            if isinstance(item, ReleaseStatus):
                status = item
            else:
                on_line(f"{indent}{item}")
        word = "done." if status is ReleaseStatus.SUCCEEDED else "failed."
        on_line(f"{indent}Waiting for release.... {word}")
        return status

    def _status(self, app: str, version: int) -> ReleaseStatus:
        with self.store.read() as tx:
            return reads.require_release(tx, app, version).status
