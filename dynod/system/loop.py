"""A background thread that does one pass of some work, then waits: for the time the
pass asked for, or until ``kick`` wakes it early (a change it must act on). The placement
leader, ACM's orders and the cluster followers are each one.

A failed pass is logged once per distinct failure, not at every retry, and one line
says when passes succeed again; the thread never dies of a pass.
"""

from __future__ import annotations

import logging
import threading

from dynod.errors import DynodError

log = logging.getLogger(__name__)


class Loop:
    """Subclasses give ``name`` (the thread's, and the log lines' prefix) and ``step``;
    ``interval`` is the wait after a pass that names none, ``retry`` after a failed one."""

    name = "loop"
    # what the log line of a failure adds, and the line once passes succeed again
    on_failure = "retrying"
    on_recovery = "working again"

    def __init__(self, interval: float, retry: float | None = None) -> None:
        self.interval = interval
        self.retry = interval if retry is None else retry
        self._failing = ""
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def step(self) -> float | None:
        """One pass; the seconds to wait before the next (None: ``interval``). Raises
        what failed (DynodError for the failures a user can act on)."""
        raise NotImplementedError

    def failed(self) -> None:
        """Called after a failed pass, before the wait (state the pass left unsure)."""

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def kick(self) -> None:
        """Run the next pass now (or as soon as the current one ends)."""
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)

    def stopping(self) -> bool:
        return self._stop.is_set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                wait = self.step()
                if self._failing:
                    log.info("%s: %s", self.name, self.on_recovery)
                self._failing = ""
            except DynodError as exc:
                if exc.message != self._failing:
                    log.error("%s: %s; %s", self.name, exc.message, self.on_failure)
                self._failing = exc.message
                wait = self.retry
                self.failed()
            except Exception as exc:  # the thread must not die
                if str(exc) != self._failing:
                    log.exception("%s: a pass failed; %s", self.name, self.on_failure)
                self._failing = str(exc)
                wait = self.retry
                self.failed()
            self._wake.wait(self.interval if wait is None else max(wait, 0.0))
