"""A thread that keeps something of this machine in step with the cluster by reading
it again every second or so (``sync``), the way ``runtime.cluster_network`` and
``runtime.cluster_routes`` follow the members and the located dynos. A failed pass is
logged once per distinct failure, not every second, and retried; what the last good
pass applied stays meanwhile.
"""

from __future__ import annotations

import logging
import threading

from dynod.errors import DynodError

log = logging.getLogger(__name__)


class Follower:
    """Subclasses give ``name`` (the thread's, and the log lines' prefix) and ``sync``."""

    name = "follower"

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._failing = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sync(self) -> bool:
        """One pass; True when it changed something. Raises DynodError."""
        raise NotImplementedError

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)

    def _run(self) -> None:
        while True:
            try:
                self.sync()
                if self._failing:
                    log.info("%s: in step again", self.name)
                self._failing = ""
            except DynodError as exc:
                if exc.message != self._failing:
                    log.error("%s: %s; what was applied stays, retrying", self.name,
                              exc.message)
                self._failing = exc.message
            except Exception as exc:  # the follower must not die
                if str(exc) != self._failing:
                    log.exception("%s: a pass failed", self.name)
                self._failing = str(exc)
            if self._stop.wait(self.interval):
                return
