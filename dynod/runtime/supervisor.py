"""The supervisor: the formation in the database becomes running dynos, and stays so.

One thread owns the dynos. Each pass reads the desired dynos (every app's current
release x its formation, at the app's rollout generation), observes the units, probes
starting web dynos and reads memory, then asks ``plan`` what to do and has the
``executor`` do it. A pass runs at start (after adopting the dynos already running,
``adoption``: a dynod restart restarts no dyno), after every API write
(``changed(app)``), and every ``POLL`` seconds (systemd's unit states are polled; one
ListUnitsByPatterns call per pass). Decisions live in ``plan``, effects in
``executor``; this module observes and answers the API.
"""

from __future__ import annotations

import http.client
import logging
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

from dynod.errors import InvalidArgument, NotFound
from dynod.model.dynos import DynoInfo, DynoRef, DynoState
from dynod.model.events import EventBus
from dynod.model.formation import Process
from dynod.model.releases import ReleaseStatus
from dynod.router.protocol import Backend, Router
from dynod.runtime import adoption, gc, plan
from dynod.runtime.dynos import Host, cgroup_of, unit_of
from dynod.runtime.executor import Effects, Executor, SystemEffects
from dynod.runtime.leader import Share
from dynod.runtime.plan import Desired, Dyno, Exit, Observed
from dynod.settings import Settings
from dynod.store import reads
from dynod.store.protocol import Store
from dynod.system import cgroups, units

log = logging.getLogger(__name__)

POLL = 0.5
# While a dyno is starting, look more often: "up" is when it first answers on $PORT.
POLL_STARTING = 0.02
# Slugs of releases past the retention are collected this often (and by `dynoctl gc`).
GC_EVERY = 3600.0
# How often a cluster node checks whether it is fenced (its lease surely lapsing).
FENCE_POLL = 0.25
# dynod reports READY once every formation is up and routed (a reboot), or after this.
READY_WAIT = 45.0


def listening(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=0.2):
            return True
    except OSError:
        return False


def healthy(address: str, port: int, path: str) -> bool:
    """The app answers ``GET path`` with 2xx or 3xx within a second."""
    conn = http.client.HTTPConnection(address, port, timeout=1.0)
    try:
        conn.request("GET", path, headers={"Host": "localhost", "User-Agent": "dynod-check"})
        return 200 <= conn.getresponse().status < 400
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def answers(d: Dyno) -> bool:
    """A starting web dyno listens on $PORT (and passes its health check, if any)."""
    meta = d.meta
    return meta is not None and listening(meta.address, meta.port) and (
        not d.health or healthy(meta.address, meta.port, d.health))


def read_desired(store: Store) -> dict[str, Desired]:
    """Every app's desired dynos at its current release, on every node."""
    out: dict[str, Desired] = {}
    with store.read() as tx:
        for app in tx.apps():
            release = reads.current_release(tx, app.name)
            uid, gen = tx.app_uid(app.name), tx.generation(app.name)
            if release.slug_id is None or uid is None or gen is None:
                out[app.name] = Desired(app.name, release.version, gen or 1, "", 0, {})
                continue
            slug = tx.slug(app.name, release.slug_id)
            if slug is None or not slug.uploaded:
                out[app.name] = Desired(app.name, release.version, gen, "", uid, {})
                continue
            rows = {p.type: p for p in tx.processes(app.name)}
            procs = {name: Process(name, rows[name].quantity, rows[name].size, command)
                     for name, command in slug.process_types.items() if name in rows}
            out[app.name] = Desired(app.name, release.version, gen, slug.checksum, uid,
                                    dict(release.config), procs, slug.stack)
    return out


class Supervisor:
    """Owns every formation dyno. ``changed``, ``dynos``, ``restart`` are safe from any
    thread. ``host_factory`` makes the dyno host on first use; ``effects`` replaces the
    machine (tests)."""

    def __init__(self, store: Store, settings: Settings, router: Router,
                 host_factory: Callable[[], Host], events: EventBus, *,
                 effects: Effects | None = None,
                 share: Share | None = None) -> None:
        self.store = store
        # In a cluster: the dynos placed on this node, and whether it is fenced.
        self.share = share
        self.settings = settings
        self.router = router
        self._host_factory = host_factory
        self._host: Host | None = None
        self._host_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.executor = Executor(effects or SystemEffects(store, lambda: self.host, router,
                                                          events),
                                 self._wake.set)
        self._passes = 0  # passes begun (wait_settled waits for a full one)
        self._gc_next = time.monotonic() + 60.0  # disk hygiene, after start settles
        self._collect = False  # an app went away: collect its slug trees once it is down

    # --- the thread ---------------------------------------------------------------

    @property
    def host(self) -> Host:
        """Made on first use, once: the supervisor and one-off starts (API threads) may
        ask at the same moment, and two Hosts would both create the bridge."""
        with self._host_lock:
            if self._host is None:
                self._host = self._host_factory()
            return self._host

    def start(self) -> None:
        """Adopt running dynos, clean up what nobody owns, run a first pass, then keep
        supervising in a thread. Returns once settled (at most READY_WAIT)."""
        try:
            adopted = adoption.adopt(self.settings, lambda: self.host, listening, time.time(),
                                     time.monotonic())
            with self.executor.lock:
                self.executor.dynos.update(adopted)
            adoption.collect_trees(self.store, self.settings)
            self.reconcile_once()
        except Exception:
            log.exception("first supervisor pass failed; the supervisor retries")
        self._thread = threading.Thread(target=self._run, name="supervisor", daemon=True)
        self._thread.start()
        if self.share is not None:
            threading.Thread(target=self._watch_fence, name="fence", daemon=True).start()
        self.wait_settled(READY_WAIT)

    def _starting(self) -> bool:
        return any(d.state is DynoState.STARTING and d.meta is not None
                   for d in self.executor.records())

    def wait_settled(self, timeout: float) -> bool:
        """Until no dyno is starting and the router has every up web dyno (after a
        reboot: every formation rebuilt and routed), at most ``timeout`` seconds. Crashed
        dynos do not hold it up. True if settled."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            passes = self._passes
            if not self._starting():
                self._wake.set()
                while self._passes <= passes + 1 and time.monotonic() < deadline:
                    time.sleep(0.01)
                    self._wake.set()
                if not self._starting():
                    return True
            time.sleep(0.02)
        log.warning("dynos still starting after %.0f s; reporting ready anyway", timeout)
        return False

    def stop(self) -> None:
        """Stop supervising; the dynos keep running (they are not dynod's children)."""
        self._stop.set()
        self.executor.closing.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def changed(self, app: str | None = None) -> None:
        """An API write changed ``app``'s desired state: a pass soon."""
        self._wake.set()

    def _run(self) -> None:
        last_pass = 0.0
        while not self._stop.is_set():
            woken = self._wake.wait(POLL_STARTING if self._starting() else POLL)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                if woken or time.monotonic() - last_pass >= POLL:
                    last_pass = time.monotonic()
                    self.reconcile_once()
                else:
                    # Between full passes only the cheap part: did a starting web
                    # dyno begin to answer? (A full pass with 50 dynos every 20 ms
                    # would take the CPU those dynos need to boot.)
                    self._check_starting()
            except Exception:
                log.exception("supervisor pass failed; retrying")
                time.sleep(1.0)
            if time.monotonic() >= self._gc_next:
                self._gc_next = time.monotonic() + GC_EVERY
                try:
                    done = gc.collect(self.store, self.settings)
                    if done.bytes:
                        log.info("gc: %s", done)
                except Exception:
                    log.exception("gc failed; retrying in an hour")

    def _watch_fence(self) -> None:
        """In a cluster: once this node's lease is surely lapsing, every dyno stops, even
        while a pass waits on the unreachable store (a read may take its 30 s)."""
        while not self._stop.wait(FENCE_POLL):
            if self.share is not None and self.share.fenced():
                try:
                    self.executor.apply(plan.plan_fenced(self.executor.records()))
                except Exception:
                    log.exception("fencing failed; retrying")

    def _check_starting(self) -> None:
        starting = [d for d in self.executor.records() if d.state is DynoState.STARTING
                    and d.live and d.web]
        up = [plan.MarkUp(d.ref) for d in starting if answers(d)]
        if up:
            self.executor.apply(up)
            apps = set(self.executor.routed_view()) | {d.ref.app for d in starting}
            self.executor.apply(plan.plan_routes(self.executor.records(), apps,
                                                 self.executor.routed_view(), remove=False))

    # --- desired state ------------------------------------------------------------

    def desired(self) -> dict[str, Desired]:
        if self.share is not None and self.share.fenced():
            # Without reading the store: it is out of reach, most likely.
            return {app: Desired(app, 0, 0, "", 0, {}, fenced=True)
                    for app in {d.ref.app for d in self.executor.records()}}
        out = read_desired(self.store)
        if self.share is None:
            return out
        mine = self.share.mine()
        return {app: replace(want, placed=mine.get(app, frozenset())
                             if self.share.placed_anywhere(app) else self._running(app))
                for app, want in out.items()}

    def _running(self, app: str) -> frozenset[str]:
        return frozenset(d.ref.dyno for d in self.executor.records(app) if d.live)

    def formations(self) -> dict[str, list[Process]]:
        """Every app's formation at its current release (what placement places)."""
        return {app: list(want.processes.values())
                for app, want in read_desired(self.store).items()}

    def bump_generation(self, app: str) -> int:
        """A rollout: every dyno of ``app`` is replaced (``ps:restart``). The new
        generation is above every tracked dyno's too (see ``plan.next_generation``)."""
        tracked = [d.ref.generation for d in self.executor.records(app)]
        with self.store.write() as tx:
            reads.require_app(tx, app)
            gen = max([tx.generation(app) or 1, *tracked]) + 1
            tx.set_generation(app, gen)
        return gen

    # --- one pass -----------------------------------------------------------------

    def observe(self, records: Sequence[Dyno]) -> Observed:
        """Unit exits, starting web dynos that answer, memory use, the router's view."""
        loaded = {u.name: u for u in units.list_dynos()}
        exits: dict[DynoRef, Exit] = {}
        answering = set()
        memory = {}
        for d in records:
            if not d.live:
                continue
            unit = loaded.get(unit_of(d.ref))
            if unit is None or unit.exited:
                status = units.dyno_status(unit_of(d.ref))
                exits[d.ref] = (Exit(status.result, status.exit_status) if status is not None
                                else Exit())
                continue
            if d.state is DynoState.STARTING and d.web and answers(d):
                answering.add(d.ref)
            used = cgroups.memory_current(cgroup_of(d.ref))
            if used is not None:
                memory[d.ref] = used
        routed = self.executor.routed_view()
        return Observed(time.monotonic(), time.time(), exits, frozenset(answering), memory,
                        routed, self._ready(records, routed))

    def _ready(self, records: Sequence[Dyno],
               routed: Mapping[str, Sequence[Backend]]) -> frozenset[tuple[str, Backend]]:
        """Routed web dynos the router takes requests on, asked only of apps in a
        rollout (two generations live): an old web dyno waits for its replacement."""
        generations: dict[str, set[int]] = {}
        for d in records:
            if d.live:
                generations.setdefault(d.ref.app, set()).add(d.ref.generation)
        ready = getattr(self.router, "ready", None)
        out = set()
        for d in records:
            backend = d.backend()
            if (backend is None or not d.web or d.stopping or d.state is not DynoState.UP
                    or len(generations.get(d.ref.app, ())) < 2
                    or backend not in routed.get(d.ref.app, ())):
                continue
            try:
                if ready is None or ready(d.ref.app, backend):
                    out.add((d.ref.app, backend))
            except Exception:
                log.exception("router: ready(%s)", d.ref.app)
        return frozenset(out)

    def reconcile_once(self) -> None:
        """One pass: observe, then plan and apply in three steps (see ``plan``)."""
        self._passes += 1
        desired = self.desired()
        ex = self.executor
        records = ex.records()
        seen = self.observe(records)
        ex.apply(plan.plan_observed(records, seen))
        # The clocks after step 1 (a crash's teardown takes time): back-off and R10
        # are measured from now.
        seen = replace(seen, monotonic=time.monotonic(), wall=time.time())
        for want in desired.values():
            ex.apply(plan.plan_app(want, ex.records(want.app), seen))
        gone = {d.ref.app for d in ex.records()} - set(desired)
        for app in sorted(gone):
            ex.apply(plan.plan_gone(app, ex.records(app)))
        if gone:
            self._collect = True
        elif self._collect:
            self._collect = False
            adoption.collect_trees(self.store, self.settings)
        ex.apply(plan.plan_routes(ex.records(), desired, ex.routed_view()))

    # --- the API ------------------------------------------------------------------

    def dynos(self, app: str) -> list[DynoInfo]:
        """The app's dynos for ``ps``, sorted by type and number. Raises NotFound."""
        with self.store.read() as tx:
            reads.require_app(tx, app)
        out = []
        for d in sorted(self.executor.records(app),
                        key=lambda d: (d.ref.process_type, d.ref.number, d.ref.generation)):
            meta = d.meta
            # systemd's accounting (MemoryCurrent, CPUUsageNSec) covers cgroup v1 and v2.
            status = units.dyno_status(unit_of(d.ref)) if meta else None
            out.append(DynoInfo(
                app=app, name=d.ref.dyno, process_type=d.ref.process_type,
                state=DynoState.DOWN if d.stopping else d.state, since=d.since,
                command=d.command, size=d.size, release=d.release, unit=unit_of(d.ref),
                address=meta.address if meta else "", port=meta.port if meta else 0,
                memory_bytes=status.memory_bytes if status else None,
                memory_quota=plan.quota_of(d.size),
                cpu_nsec=(status.cpu_nsec if status and status.cpu_nsec is not None
                          else cgroups.cpu_from_procs(cgroup_of(d.ref)) if meta else None),
            ))
        return out

    def restart(self, app: str, target: str = "") -> list[str]:
        """Heroku's ps:restart: every dyno (``""``), a type (``web``) or one dyno
        (``web.1``); the crash back-off is reset. Returns the dyno names restarted.
        Raises NotFound for an unknown app or a target with no dyno."""
        with self.store.read() as tx:
            reads.require_app(tx, app)
        ex = self.executor
        if not target:
            self.bump_generation(app)
            with ex.lock:
                names = sorted({d.ref.dyno for d in ex.records(app)})
            ex.apply([plan.Forget(d.ref) for d in ex.records(app) if d.meta is None])
            self._wake.set()
            return names
        chosen = self._select(app, target)
        with ex.lock:
            for d in chosen:
                d.restart = True
                d.crashes = 0
                d.restart_at = 0.0
        ex.apply([plan.Stop(d.ref, "restart") for d in chosen if d.meta is not None])
        self._wake.set()
        return sorted(d.ref.dyno for d in chosen)

    def stop_dyno(self, app: str, dyno: str) -> list[str]:
        """Heroku's ps:stop: the dyno stops; as part of the formation it starts again."""
        if "." not in dyno:
            raise InvalidArgument(f'"{dyno}" is not a dyno name; use TYPE.N, e.g. web.1')
        return self.restart(app, dyno)

    def _select(self, app: str, target: str) -> list[Dyno]:
        found = [d for d in self.executor.records(app) if not d.stopping
                 and target in (d.ref.dyno, d.ref.process_type)]
        if not found:
            raise NotFound(f'app "{app}" has no dyno or process type "{target}"; '
                           "list them with `dynoctl ps`")
        return found

    def follow_rollout(self, app: str, version: int, timeout: float = 150.0) -> bool | None:
        """For a deploy's output (git push's ``Verifying deploy... done.``): wait until
        release ``version`` serves, that is as many of its web dynos as the formation
        asks are up, routed and taking requests in the router (True; at once when it
        has no web dynos); the release failed to come up (False); or ``timeout`` passed
        (None)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.store.read() as tx:
                release = tx.release(app, version)
                latest = tx.latest_release(app)
                slug = (tx.slug(app, release.slug_id)
                        if release is not None and release.slug_id is not None else None)
                web = [p.quantity for p in tx.processes(app) if p.type == "web"]
            if release is None or release.status is ReleaseStatus.FAILED:
                return False
            if latest is not None and latest.version > version:
                return True  # superseded by a newer release
            wanted = web[0] if web and slug is not None and "web" in slug.process_types else 0
            new, old = self._serving(app, version)
            if new >= wanted and not old:
                return True
            time.sleep(0.1)
        return None

    def _serving(self, app: str, version: int) -> tuple[int, int]:
        """How many web dynos of release ``version`` the router sends requests to, and
        how many of other releases it still has (an old one leaves before it drains)."""
        routed = self.executor.routed_view().get(app, ())
        ready = getattr(self.router, "ready", None)
        new = old = 0
        for d in self.executor.records(app):
            backend = d.backend()
            if not d.web or backend is None or backend not in routed:
                continue
            if d.release != version:
                old += 1
                continue
            if d.stopping or d.state is not DynoState.UP:
                continue
            try:
                new += ready is None or bool(ready(app, backend))
            except Exception:
                log.exception("router: ready(%s)", app)
        return new, old
