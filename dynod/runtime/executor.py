"""Applying the planner's actions: the only code that changes dyno records.

The executor does what ``plan`` decided, through ``Effects`` (the machine, the router,
the store and the app's log); ``SystemEffects`` is the production one, over systemd
(``dynod.system.units``), the dyno host (``runtime.dynos.Host``) and a ``Router``.
Stopping takes up to a minute (drain, SIGTERM, 30 s, SIGKILL), so each stop runs in
its own thread; everything else is applied in the pass.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

from dynod.errors import DynodError, NotFound
from dynod.model.dynos import DynoMeta, DynoRef, DynoState
from dynod.model.events import EventBus, ReleaseFailed
from dynod.model.releases import ReleaseStatus
from dynod.router.protocol import Backend, Router
from dynod.runtime import plan
from dynod.runtime.dynos import Host, unit_of
from dynod.runtime.plan import Dyno
from dynod.store import reads
from dynod.store.protocol import Store
from dynod.system import journal, units

log = logging.getLogger(__name__)

# Heroku: SIGTERM, then SIGKILL after 30 s (R12).
STOP_TIMEOUT = 30.0
# Rollouts: an old web dyno leaves the router, then gets SIGTERM once its in-flight
# requests finished (or after this long, as Heroku's router gives a request 30 s).
DRAIN_TIMEOUT = 30.0


class Effects(Protocol):
    """What applying an action may do outside the dyno records."""

    def event(self, ref: DynoRef, message: str) -> None: ...
    def start(self, action: plan.Start) -> DynoMeta: ...
    def kill(self, ref: DynoRef, sig: signal.Signals) -> None: ...
    def wait_exit(self, ref: DynoRef, timeout: float) -> bool: ...
    def exit_status(self, ref: DynoRef) -> int | None: ...
    def remove(self, ref: DynoRef, timeout: float) -> None: ...
    def set_backends(self, app: str, backends: list[Backend]) -> None: ...
    def remove_app(self, app: str) -> None: ...
    def in_flight(self, app: str, backend: Backend) -> int | None: ...
    def set_generation(self, app: str, generation: int) -> None: ...
    def release_failed(self, app: str, version: int, message: str, cause: str) -> None: ...


class SystemEffects:
    """Effects on this machine: systemd units, the dyno host, the router, the store."""

    def __init__(self, store: Store, host: Callable[[], Host], router: Router,
                 events: EventBus) -> None:
        self.store = store
        self.host = host
        self.router = router
        self.events = events

    def event(self, ref: DynoRef, message: str) -> None:
        journal.app_event(ref.app, ref.dyno, message)

    def start(self, action: plan.Start) -> DynoMeta:
        return self.host().start(action.ref, release=action.release, command=action.command,
                                 size=action.size, checksum=action.checksum, uid=action.uid,
                                 config=dict(action.config), stack=action.stack)

    def kill(self, ref: DynoRef, sig: signal.Signals) -> None:
        units.kill_dyno(unit_of(ref), sig)

    def wait_exit(self, ref: DynoRef, timeout: float) -> bool:
        unit = unit_of(ref)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [u for u in units.list_dynos() if u.name == unit]
            if not found or found[0].exited:
                return True
            time.sleep(0.1)
        return False

    def exit_status(self, ref: DynoRef) -> int | None:
        status = units.dyno_status(unit_of(ref))
        return status.exit_status if status is not None else None

    def remove(self, ref: DynoRef, timeout: float) -> None:
        units.stop_dyno(unit_of(ref))
        units.wait_gone(unit_of(ref), timeout=timeout)
        self.host().teardown(ref)

    def set_backends(self, app: str, backends: list[Backend]) -> None:
        self.router.set_backends(app, backends)

    def remove_app(self, app: str) -> None:
        self.router.remove_app(app)

    def in_flight(self, app: str, backend: Backend) -> int | None:
        """Requests the router has on ``backend``; None if the router cannot tell."""
        count = getattr(self.router, "in_flight", None)
        return None if count is None else int(count(app, backend))

    def set_generation(self, app: str, generation: int) -> None:
        with self.store.write() as tx:
            reads.require_app(tx, app)
            tx.set_generation(app, generation)

    def release_failed(self, app: str, version: int, message: str, cause: str) -> None:
        with self.store.write() as tx:
            reads.require_release(tx, app, version)
            tx.set_release_status(app, version, ReleaseStatus.FAILED, failure=cause)
        self.events.publish(ReleaseFailed(app, version, message))


def _mb(size: int) -> str:
    return f"{size / (1024 * 1024):.0f}M"


def _exit_cause(action: plan.MarkCrashed) -> str:
    """How the unit ended, briefly: "exit status 3", "R15, exit status 137",
    "exit status 139, core-dump", "exit status unknown, resources" (systemd's Result=
    when it says more than the code: a unit it could not set up is "resources")."""
    code = "unknown" if action.exit_status is None else str(action.exit_status)
    parts = ["R15"] if action.oom_quota else []
    parts.append(f"exit status {code}")
    if action.result not in ("", "success", "exit-code", "signal", "oom-kill"):
        parts.append(action.result)
    return ", ".join(parts)


class Executor:
    """Owns the dyno records (``dynos``, under ``lock``) and what the router was given
    (``routed``). ``wake`` asks the supervisor for another pass soon."""

    def __init__(self, effects: Effects, wake: Callable[[], None],
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self.effects = effects
        self.wake = wake
        self.clock = clock
        self.wall = wall
        self.lock = threading.RLock()
        self.dynos: dict[DynoRef, Dyno] = {}
        self.routed: dict[str, list[Backend]] = {}
        # Starts of each dyno name (app, "web.1") since dynod started: its restarts.
        self.starts: dict[tuple[str, str], int] = {}
        self.closing = threading.Event()  # the supervisor stops: drains give up

    def records(self, app: str | None = None) -> list[Dyno]:
        with self.lock:
            return [d for d in self.dynos.values() if app is None or d.ref.app == app]

    def routed_view(self) -> Mapping[str, tuple[Backend, ...]]:
        with self.lock:
            return {app: tuple(b) for app, b in self.routed.items()}

    def apply(self, actions: Iterable[plan.Action]) -> None:
        for action in actions:
            try:
                self._apply(action)
            except DynodError as exc:
                log.error("%s: %s", action, exc.message)

    def _apply(self, action: plan.Action) -> None:
        match action:
            case plan.Route(app, backends):
                try:
                    self.effects.set_backends(app, list(backends))
                    with self.lock:
                        self.routed[app] = list(backends)
                except Exception:
                    log.exception("router: set_backends(%s)", app)
                return
            case plan.Unroute(app):
                try:
                    self.effects.remove_app(app)
                    with self.lock:
                        self.routed.pop(app, None)
                except Exception:
                    log.exception("router: remove_app(%s)", app)
                return
            case plan.SetGeneration(app, generation):
                log.info("%s: generation %d", app, generation)
                self.effects.set_generation(app, generation)
                self.wake()
                return
            case plan.MarkReleaseFailed(app, version, why, previous):
                log.warning("release v%d of %s failed: its web dynos %s", version, app, why)
                with contextlib.suppress(NotFound):  # the app was deleted meanwhile
                    self.effects.release_failed(
                        app, version, f"Release v{version} failed: its web dynos {why}; "
                                      f"v{previous} keeps serving", why)
                return
            case plan.Start():
                self._start(action)
                return
        with self.lock:
            d = self.dynos.get(action.ref)
        if d is None:
            return
        match action:
            case plan.MarkUp():
                self.set_state(d, DynoState.UP)
            case plan.BootTimeout():
                d.timed_out = True
                self.effects.event(d.ref, "Error R10 (Boot timeout) -> Web process failed "
                                          "to bind to $PORT within 60 seconds of launch")
                self.effects.event(d.ref, "Stopping process with SIGKILL")
                self.effects.kill(d.ref, signal.SIGKILL)
                d.killed = True
            case plan.RecordPeak(_, used):
                d.peak_memory = max(d.peak_memory, used)
            case plan.MemoryOver(_, used, quota):
                d.r14_at = self.clock()
                self.effects.event(d.ref, f"Process running mem={_mb(used)}"
                                          f"({100 * used / quota:.1f}%)")
                self.effects.event(d.ref, "Error R14 (Memory quota exceeded)")
            case plan.MarkCrashed():
                self._crashed(d, action)
            case plan.Forget():
                with self.lock:
                    if self.dynos.get(d.ref) is d and d.meta is None:
                        del self.dynos[d.ref]
            case plan.Cycle():
                self.effects.event(d.ref, "Cycling")
            case plan.Stop(_, why, grace):
                self.stop(d, why, grace)

    def set_state(self, d: Dyno, state: DynoState) -> None:
        with self.lock:
            old = d.state
            if old is state:
                return
            d.state, d.since = state, self.wall()
            if state is DynoState.UP:
                d.ever_up = True
        self.effects.event(d.ref, f"State changed from {old} to {state}")

    # --- starting and crashing ------------------------------------------------------

    def _start(self, action: plan.Start) -> None:
        ref = action.ref
        with self.lock:
            prev = self.dynos.get(ref)
            d = prev or Dyno(ref, None, DynoState.STARTING, self.wall())
            d.health = action.health
            d.release, d.command, d.size = action.release, action.command, action.size
            self.dynos[ref] = d
        if prev is not None:
            self.set_state(d, DynoState.STARTING)
        self.effects.event(d.ref, f"Starting process with command `{action.command}`")
        try:
            meta = self.effects.start(action)
        except DynodError as exc:
            log.error("starting %s of %s: %s", ref.dyno, ref.app, exc.message)
            self.effects.event(d.ref, f"Error starting process: {exc.message}")
            with self.lock:
                d.crashes += 1
                d.restart_at = self.clock() + max(plan.backoff(d.crashes), 1.0)
                d.failure = f"could not start: {exc.message}"
            self.set_state(d, DynoState.CRASHED)
            return
        with self.lock:
            d.meta = meta
            d.launched = self.clock()
            key = (ref.app, ref.dyno)
            self.starts[key] = self.starts.get(key, 0) + 1
            d.cycle_at = plan.cycle_due(d.launched)
            if d.state is not DynoState.STARTING:
                d.state, d.since = DynoState.STARTING, self.wall()

    def _crashed(self, d: Dyno, action: plan.MarkCrashed) -> None:
        if action.oom_quota:
            self.effects.event(d.ref, f"Process running mem={_mb(2 * action.oom_quota)}"
                                      "(200.0%)")
            self.effects.event(d.ref, "Error R15 (Memory quota vastly exceeded)")
            self.effects.event(d.ref, "Stopping process with SIGKILL")
        code = action.exit_status
        self.effects.event(d.ref, "Process exited with status "
                                  f"{code if code is not None else 'unknown'}")
        self.effects.remove(d.ref, timeout=5)
        with self.lock:
            d.meta = None
            d.peak_memory, d.killed, d.r14_at = 0, False, 0.0
            d.crashes += 1
            d.restart_at = self.clock() + action.restart_in
            d.failure = f"crashed at boot ({_exit_cause(action)})"
        self.set_state(d, DynoState.CRASHED)

    # --- stopping -------------------------------------------------------------------

    def stop(self, d: Dyno, why: str, grace: float | None = None) -> None:
        """Stop ``d`` in its own thread (once); ``grace``: see ``plan.Stop``."""
        with self.lock:
            if d.stopping or d.meta is None:
                return
            d.stopping = True
        log.info("stopping %s of %s (%s)", unit_of(d.ref), d.ref.app, why)
        threading.Thread(target=self._stop_one, args=(d, grace), daemon=True,
                         name=f"stop {unit_of(d.ref)}").start()

    def _drain(self, d: Dyno) -> None:
        """A web dyno about to stop: wait until the next pass took it out of the router
        (it is ``stopping``), then until the router has no request in flight on it. At
        most DRAIN_TIMEOUT."""
        backend = d.backend()
        if not d.web or backend is None:
            return
        deadline = self.clock() + DRAIN_TIMEOUT
        self.wake()
        while self.clock() < deadline and not self.closing.is_set():
            with self.lock:
                routed = backend in self.routed.get(d.ref.app, [])
            if not routed:
                break
            time.sleep(0.02)
        while self.clock() < deadline:
            try:
                if self.effects.in_flight(d.ref.app, backend) in (0, None):
                    return
            except Exception:
                log.exception("router: in_flight(%s)", d.ref.app)
                return
            time.sleep(0.05)

    def _stop_one(self, d: Dyno, grace: float | None = None) -> None:
        """Heroku's stop: SIGTERM to every process, 30 s, SIGKILL (R12). A web dyno
        is drained from the router first. With ``grace`` (a fenced node): no drain,
        SIGKILL after ``grace`` seconds."""
        try:
            if grace is None:
                self._drain(d)
            wait = STOP_TIMEOUT if grace is None else grace
            self.effects.event(d.ref, "Stopping all processes with SIGTERM")
            self.effects.kill(d.ref, signal.SIGTERM)
            if not self.effects.wait_exit(d.ref, wait):
                self.effects.event(d.ref, "Error R12 (Exit timeout) -> At least one process "
                                          f"failed to exit within {wait:.0f} seconds of "
                                          "SIGTERM")
                self.effects.event(d.ref, "Stopping remaining processes with SIGKILL")
                self.effects.kill(d.ref, signal.SIGKILL)
                self.effects.wait_exit(d.ref, 10.0)
            code = self.effects.exit_status(d.ref)
            self.effects.event(d.ref, "Process exited with status "
                                      f"{code if code is not None else 'unknown'}")
            self.effects.remove(d.ref, timeout=10)
        except DynodError as exc:
            log.error("stopping %s: %s", unit_of(d.ref), exc.message)
        except Exception:
            log.exception("stopping %s", unit_of(d.ref))
        with self.lock:
            restart = d.restart
            if self.dynos.get(d.ref) is d:
                del self.dynos[d.ref]
        self.set_state(d, DynoState.DOWN)
        if restart:
            self.wake()
