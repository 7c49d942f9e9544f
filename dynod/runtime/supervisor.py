"""Reconcile: the formation in the database becomes running dynos, and stays that way.

One thread owns the dynos. Each pass compares the desired dynos (every app's current
release x its formation, at the app's rollout generation) with the tracked and loaded
``dynod-*`` units, then starts, supervises and stops exactly what differs. A pass runs
at start (after adopting the dynos already running: a dynod restart restarts no dyno),
after every API write (``Daemon.changed(app)``), and every ``POLL`` seconds (systemd's
unit states are polled; one ListUnitsByPatterns call per pass).

Heroku's lifecycle (heroku.md §5, §12), in its words, to the app's log stream:
starting -> up (a web dyno once it listens on $PORT, seen from the host; R10 after
60 s) -> crashed (restarted at once the first time, then with a growing back-off,
reset by a new release or a manual restart) or down (stopped: SIGTERM to every
process, 30 s, then SIGKILL with R12). Over its memory quota a dyno gets R14; killed
by the kernel at twice the quota, R15.
"""

from __future__ import annotations

import http.client
import logging
import os
import random
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from dynod.control import releases
from dynod.errors import DynodError, InvalidArgument, NotFound
from dynod.model.formation import Process
from dynod.model.releases import ReleaseStatus
from dynod.model.sizes import SIZES
from dynod.router.protocol import Backend, Router
from dynod.runtime import dynos, gc
from dynod.runtime.dynos import DynoMeta, DynoRef, Host, parse_key, read_meta, ref_of
from dynod.settings import Settings
from dynod.slug import unpack
from dynod.store import reads
from dynod.store.protocol import Store
from dynod.system import journal, mounts, netns, unit_names, units

log = logging.getLogger(__name__)

POLL = 0.5
# While a dyno is starting, look more often: "up" is when it first answers on $PORT.
POLL_STARTING = 0.02
# Heroku: a web dyno must bind $PORT within 60 s of launch (R10).
BOOT_TIMEOUT = 60.0
# Heroku: SIGTERM, then SIGKILL after 30 s (R12).
STOP_TIMEOUT = 30.0
# Heroku: the first crash restarts at once, later ones after a cool-off of up to 20 min.
BACKOFF_FIRST = 2.0
BACKOFF_MAX = 20 * 60.0
# Rollouts: an old web dyno leaves the router, then gets SIGTERM once its in-flight
# requests finished (or after this long, as Heroku's router gives a request 30 s).
DRAIN_TIMEOUT = 30.0
# A new release whose web dynos crash this often before any is up (or hit R10) while the
# previous release still serves is not rolled out: it is marked failed.
FAILED_CRASHES = 2
# The optional per-app health check: a config var with an HTTP path (`dynoctl
# healthcheck:set /health`). A new web dyno is up once it answers it with 2xx or 3xx.
HEALTHCHECK_VAR = "DYNO_HEALTHCHECK_PATH"
# Heroku cycles every dyno once a day, plus up to 216 minutes of jitter: here too,
# through the same zero-downtime rollout as a restart.
CYCLE = 24 * 3600.0
CYCLE_JITTER = 216 * 60.0
# Slugs of releases past the retention are collected this often (and by `dynoctl gc`).
GC_EVERY = 3600.0
# dynod reports READY once every formation is up and routed (a reboot), or after this.
READY_WAIT = 45.0
# How often an R14 is logged while a dyno stays over its quota.
R14_EVERY = 20.0
CGROUP_ROOT = Path("/sys/fs/cgroup")
# The process type of one-off dynos (Heroku's run.N): never part of a formation.
ONE_OFF = "run"
# The release phase's one-off dynos (release.N); the type cannot be scaled.
RELEASE_PHASE = "release"


class State(StrEnum):
    STARTING = "starting"
    UP = "up"
    CRASHED = "crashed"
    DOWN = "down"


def backoff(crashes: int) -> float:
    """Seconds before restarting a dyno that crashed ``crashes`` times in a row."""
    if crashes <= 1:
        return 0.0
    return min(BACKOFF_MAX, BACKOFF_FIRST * 2.0 ** (crashes - 2))


@dataclass
class Dyno:
    """A dyno dynod knows of. ``meta`` None: crashed and torn down, waiting to restart."""

    ref: DynoRef
    meta: DynoMeta | None
    state: State
    since: float  # wall clock, of the last state change
    launched: float = 0.0  # monotonic, of the last start (R10)
    stopping: bool = False
    restart: bool = False  # stopping for a restart: reset the back-off
    crashes: int = 0
    restart_at: float = 0.0  # monotonic
    r14_at: float = 0.0
    peak_memory: int = 0  # the most seen since the last start (R15 on cgroup v1)
    killed: bool = False  # dynod sent SIGKILL (R10), so a 137 is not an R15
    ever_up: bool = False  # came up at least once (a release that never does fails)
    timed_out: bool = False  # R10 at least once
    health: str = ""  # the health-check path of its release ("" = listening is enough)
    cycle_at: float = 0.0  # wall clock: the daily restart is due (0: never)
    # What it runs, kept while it is crashed (``meta`` None) for ``ps`` and rollouts.
    release: int = 0
    command: str = ""
    size: str = ""

    def __post_init__(self) -> None:
        if self.meta is not None:
            self.release, self.command, self.size = (self.meta.release, self.meta.command,
                                                     self.meta.size)

    @property
    def web(self) -> bool:
        return self.ref.process_type == "web"


@dataclass(frozen=True)
class Desired:
    """One app's desired dynos at its current release."""

    app: str
    release: int
    generation: int
    checksum: str
    uid: int
    config: dict[str, str]
    processes: dict[str, Process] = field(default_factory=dict)

    def wants(self, ref: DynoRef) -> bool:
        p = self.processes.get(ref.process_type)
        return ref.generation == self.generation and p is not None and ref.number <= p.quantity


@dataclass(frozen=True)
class DynoInfo:
    """What ``dynoctl ps`` shows of one dyno."""

    app: str
    name: str  # web.1
    process_type: str
    state: State
    since: float
    command: str
    size: str
    release: int
    unit: str
    address: str = ""
    port: int = 0
    memory_bytes: int | None = None
    memory_quota: int = 0
    cpu_nsec: int | None = None


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


def cycle_due(started: float) -> float:
    """When a dyno started at ``started`` (wall clock) is due for its daily restart."""
    return started + CYCLE + random.uniform(0.0, CYCLE_JITTER)  # noqa: S311 - jitter


def health_path(config: dict[str, str]) -> str:
    path = config.get(HEALTHCHECK_VAR, "").strip()
    return path if path.startswith("/") else ""


def cgroup_path(ref: DynoRef) -> Path:
    return Path(unit_names.ROOT_SLICE) / unit_names.slice_name(ref.app) / ref.unit


def memory_current(ref: DynoRef) -> int | None:
    """The dyno's memory use from its cgroup: v2 memory.current, or v1's usage (the
    hybrid hierarchy of Debian 12 hosts booted that way)."""
    rel = cgroup_path(ref)
    for path in (CGROUP_ROOT / rel / "memory.current",
                 CGROUP_ROOT / "memory" / rel / "memory.usage_in_bytes"):
        try:
            return int(path.read_text())
        except (OSError, ValueError):
            continue
    return None


def cpu_from_procs(ref: DynoRef) -> int | None:
    """CPU time of the dyno's processes (with their reaped children), in ns, from /proc:
    for cgroup v1 hosts where cpuacct is not per unit (systemd says CPUUsageNSec unset)."""
    rel = cgroup_path(ref)
    for hierarchy in ("pids", "memory", "systemd", ""):
        procs = CGROUP_ROOT / hierarchy / rel / "cgroup.procs"
        try:
            pids = procs.read_text().split()
        except OSError:
            continue
        ticks = 0
        for pid in pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            ticks += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
        return ticks * 1_000_000_000 // os.sysconf("SC_CLK_TCK")
    return None


def _mb(size: int) -> str:
    return f"{size / (1024 * 1024):.0f}M"


_installed: Reconciler | None = None


def installed() -> Reconciler | None:
    """The reconciler of this process (dynod), None elsewhere (tools, unit tests)."""
    return _installed


def follow_rollout(app: str, version: int, timeout: float = 150.0) -> bool | None:
    """For a deploy's output (git push): wait until every web dyno of ``app`` runs
    release ``version`` (True), the release failed to come up (False), or ``timeout``
    passed or no reconciler runs in this process (None)."""
    r = _installed
    if r is None:
        return None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with r.store.read() as tx:
            release = tx.release(app, version)
            latest = tx.latest_release(app)
        if release is None or release.status is ReleaseStatus.FAILED:
            return False
        if latest is not None and latest.version > version:
            return True  # superseded by a newer release
        try:
            web = [d for d in r.dynos(app) if d.process_type == "web"]
        except NotFound:
            return None
        if all(d.release == version for d in web):
            return True
        time.sleep(0.25)
    return None


class Reconciler:
    """Owns every dyno. ``changed``, ``dynos``, ``restart`` are safe from any thread."""

    def __init__(self, store: Store, settings: Settings, router: Router,
                 host_factory: Callable[[Settings], Host] = Host) -> None:
        self.store = store
        self.settings = settings
        self.router = router
        self._host_factory = host_factory
        self._host: Host | None = None
        self._host_lock = threading.Lock()
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._dynos: dict[DynoRef, Dyno] = {}
        self._backends: dict[str, list[Backend]] = {}
        self._passes = 0  # reconcile passes begun (wait_settled waits for a full one)
        self._gc_next = time.monotonic() + 60.0  # disk hygiene, after start settles
        self._collect = False  # an app went away: collect its slug trees once it is down

    # --- the thread ---------------------------------------------------------------

    @property
    def host(self) -> Host:
        """Made on first use, once: the reconciler and one-off starts (API threads) may
        ask at the same moment, and two Hosts would both create the bridge."""
        with self._host_lock:
            if self._host is None:
                self._host = self._host_factory(self.settings)
            return self._host

    def start(self) -> None:
        """Adopt running dynos, clean up what nobody owns, run a first pass, then keep
        reconciling in a thread. Returns after the first pass."""
        global _installed  # noqa: PLW0603 - one reconciler per dynod, for follow_rollout
        _installed = self
        try:
            self.adopt()
            self.collect_trees()
            self.reconcile_once()
        except Exception:
            log.exception("first reconcile pass failed; the reconciler retries")
        self._thread = threading.Thread(target=self._run, name="reconcile", daemon=True)
        self._thread.start()
        self.wait_settled(READY_WAIT)

    def wait_settled(self, timeout: float) -> bool:
        """Until no dyno is starting and the router has every up web dyno (after a
        reboot: every formation rebuilt and routed), at most ``timeout`` seconds. Crashed
        dynos do not hold it up. True if settled."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                starting = any(d.state is State.STARTING and d.meta is not None
                               for d in self._dynos.values())
                passes = self._passes
            if not starting:
                self._wake.set()
                while self._passes <= passes + 1 and time.monotonic() < deadline:
                    time.sleep(0.01)
                    self._wake.set()
                with self._lock:
                    if not any(d.state is State.STARTING and d.meta is not None
                               for d in self._dynos.values()):
                        return True
            time.sleep(0.02)
        log.warning("dynos still starting after %.0f s; reporting ready anyway", timeout)
        return False

    def stop(self) -> None:
        """Stop reconciling; the dynos keep running (they are not dynod's children)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def changed(self, app: str | None = None) -> None:
        """An API write changed ``app``'s desired state: reconcile soon."""
        self._wake.set()

    def _run(self) -> None:
        last_pass = 0.0
        while not self._stop.is_set():
            with self._lock:
                starting = any(d.state is State.STARTING and d.meta is not None
                               for d in self._dynos.values())
            woken = self._wake.wait(POLL_STARTING if starting else POLL)
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
                log.exception("reconcile pass failed; retrying")
                time.sleep(1.0)
            if time.monotonic() >= self._gc_next:
                self._gc_next = time.monotonic() + GC_EVERY
                try:
                    done = gc.collect(self.store, self.settings)
                    if done.bytes:
                        log.info("gc: %s", done)
                except Exception:
                    log.exception("gc failed; retrying in an hour")

    def _check_starting(self) -> None:
        with self._lock:
            starting = [d for d in self._dynos.values() if d.state is State.STARTING
                        and d.meta is not None and not d.stopping and d.web]
        changed = False
        for d in starting:
            assert d.meta is not None
            if listening(d.meta.address, d.meta.port) and (
                    not d.health or healthy(d.meta.address, d.meta.port, d.health)):
                self._set_state(d, State.UP)
                changed = True
        if changed:
            self._route(set(self._backends) | {d.ref.app for d in starting})

    # --- desired state ------------------------------------------------------------

    def desired(self) -> dict[str, Desired]:

        out: dict[str, Desired] = {}
        with self.store.read() as tx:
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
                                        dict(release.config), procs)
        return out

    def bump_generation(self, app: str) -> int:
        """A rollout: every dyno of ``app`` is replaced (new release, restart)."""
        with self.store.write() as tx:
            reads.require_app(tx, app)
            gen = (tx.generation(app) or 1) + 1
            tx.set_generation(app, gen)
        return gen

    # --- adopt and clean up -------------------------------------------------------

    def adopt(self) -> None:
        """Track the dyno units already running (never restarting them); stop units
        without a dyno.json; remove dyno directories and netns no unit owns."""
        loaded = units.list_dynos()
        owned: set[str] = set()
        now = time.time()
        for unit in loaded:
            ref = ref_of(unit.dyno)
            owned.add(ref.key)
            if ref.process_type in (ONE_OFF, RELEASE_PHASE):
                continue  # one-off dynos (dynoctl run) are oneoff.py's, never formation's
            meta = read_meta(self.settings, ref)
            if meta is None:
                log.warning("unit %s has no dyno.json; stopping it", unit.name)
                units.stop_dyno(unit.name)
                units.wait_gone(unit.name, timeout=STOP_TIMEOUT + 5)
                self.host.teardown(ref)
                continue
            status = units.dyno_status(unit.name)
            since = status.main_started_usec / 1e6 if status and status.main_started_usec else now
            up = listening(meta.address, meta.port) if ref.process_type == "web" else True
            with self._lock:
                self._dynos[ref] = Dyno(ref, meta, State.UP if up else State.STARTING, since,
                                        launched=time.monotonic(), cycle_at=cycle_due(since))
            log.info("adopted %s (%s)", unit.name, "up" if up else "starting")
        orphans = set(mounts.list_dyno_dirs(self.settings.runtime_dir))
        orphans |= set(netns.list_dyno_netns())
        for key in sorted(orphans - owned):
            orphan = parse_key(key)
            if orphan is None:
                netns.remove_netns(netns.NETNS_PREFIX + key)
                continue
            log.info("removing leftovers of %s", key)
            self.host.teardown(orphan)

    def collect_trees(self) -> None:
        """Remove slug trees of app uids that no longer exist (deleted apps); a tree of
        a live app stays (a rollback may use it again)."""
        with self.store.read() as tx:
            uids = {tx.app_uid(a.name) for a in tx.apps()}
        for uid in {tree.uid for tree in dynos.list_trees(self.settings)} - uids:
            for tree in dynos.list_trees(self.settings):
                if tree.uid == uid and not self._tree_in_use(tree.path):
                    log.info("removing slug tree %s (its app is gone)", tree.path)
                    unpack.remove_tree(tree.path)

    @staticmethod
    def _tree_in_use(path: Path) -> bool:
        """Still a lower layer of a mounted dyno root (a dyno being stopped)?"""
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
        return any(f"{path}:" in line or f"{path}," in line for line in lines
                   if " overlay " in line)

    # --- one pass -----------------------------------------------------------------

    def reconcile_once(self) -> None:
        self._passes += 1
        desired = self.desired()
        loaded = {u.name: u for u in units.list_dynos()}
        self._observe(loaded)
        for want in desired.values():
            self._reconcile_app(want)
        with self._lock:
            gone_apps = {d.ref.app for d in self._dynos.values()} - set(desired)
        for app in gone_apps:
            self._stop_many([d for d in self._app_dynos(app) if not d.stopping], "app deleted")
            with self._lock:
                for ref in [r for r, d in self._dynos.items() if r.app == app and d.meta is None]:
                    del self._dynos[ref]
        if gone_apps:
            self._collect = True
        elif self._collect:
            self._collect = False
            self.collect_trees()
        self._route(set(desired))

    def _app_dynos(self, app: str) -> list[Dyno]:
        with self._lock:
            return [d for d in self._dynos.values() if d.ref.app == app]

    def _observe(self, loaded: dict[str, units.DynoUnit]) -> None:
        """Notice exits (crashes), boot timeouts, ups and memory over quota."""
        now = time.monotonic()
        with self._lock:
            tracked = [d for d in self._dynos.values() if d.meta is not None and not d.stopping]
        for d in tracked:
            assert d.meta is not None
            unit = loaded.get(d.ref.unit)
            if unit is None or unit.exited:
                self._crashed(d)
                continue
            if d.state is State.STARTING:
                if not d.web or (listening(d.meta.address, d.meta.port) and (
                        not d.health or healthy(d.meta.address, d.meta.port, d.health))):
                    self._set_state(d, State.UP)
                    if d.web:
                        self._wake.set()  # route it at once
                elif now - d.launched > BOOT_TIMEOUT and not d.killed:
                    d.timed_out = True
                    self._event(d, "Error R10 (Boot timeout) -> Web process failed to bind to "
                                   "$PORT within 60 seconds of launch")
                    self._event(d, "Stopping process with SIGKILL")
                    units.kill_dyno(d.ref.unit, signal.SIGKILL)
                    d.killed = True
            self._check_memory(d, now)

    def _check_memory(self, d: Dyno, now: float) -> None:
        assert d.meta is not None
        used = memory_current(d.ref)
        quota = SIZES[d.meta.size].memory_mb * 1024 * 1024 if d.meta.size in SIZES else 0
        if used is None or not quota:
            return
        d.peak_memory = max(d.peak_memory, used)
        if used <= quota or now - d.r14_at < R14_EVERY:
            return
        d.r14_at = now
        self._event(d, f"Process running mem={_mb(used)}({100 * used / quota:.1f}%)")
        self._event(d, "Error R14 (Memory quota exceeded)")

    def _crashed(self, d: Dyno) -> None:
        assert d.meta is not None
        status = units.dyno_status(d.ref.unit)
        quota = SIZES[d.meta.size].memory_mb * 1024 * 1024 if d.meta.size in SIZES else 0
        # cgroup v2 tells (Result=oom-kill); on v1 a SIGKILL nobody sent, after the dyno
        # was seen over its quota, is the kernel's OOM killer at MemoryMax=.
        oom = status is not None and (status.result == "oom-kill" or (
            status.exit_status == 137 and not d.killed and d.peak_memory > quota))
        if oom and quota:
            self._event(d, f"Process running mem={_mb(2 * quota)}(200.0%)")
            self._event(d, "Error R15 (Memory quota vastly exceeded)")
            self._event(d, "Stopping process with SIGKILL")
        code = status.exit_status if status is not None else None
        self._event(d, f"Process exited with status {code if code is not None else 'unknown'}")
        units.stop_dyno(d.ref.unit)
        units.wait_gone(d.ref.unit, timeout=5)
        self.host.teardown(d.ref)
        with self._lock:
            d.meta = None
            d.peak_memory, d.killed, d.r14_at = 0, False, 0.0
            d.crashes += 1
            d.restart_at = time.monotonic() + backoff(d.crashes)
        self._set_state(d, State.CRASHED)

    def _reconcile_app(self, want: Desired) -> None:
        current = self._app_dynos(want.app)
        # A new release (or a new size) replaces every dyno: a rollout, a new generation.
        live = [d for d in current if d.meta is not None and d.ref.generation == want.generation]
        if any(d.meta is not None and (d.meta.release != want.release or (
                d.ref.process_type in want.processes
                and d.meta.size != want.processes[d.ref.process_type].size)) for d in live):
            gen = self.bump_generation(want.app)
            want = Desired(want.app, want.release, gen, want.checksum, want.uid, want.config,
                           want.processes)
        # Forget crashed records that are no longer wanted.
        with self._lock:
            for d in current:
                if d.meta is None and not want.wants(d.ref):
                    self._dynos.pop(d.ref, None)
        if self._release_failed(want, current):
            return
        if self._cycle_due(want, current):
            return
        # Start what is missing (lowest numbers first), respecting crash back-off.
        now = time.monotonic()
        for ptype, proc in sorted(want.processes.items()):
            for n in range(1, proc.quantity + 1):
                ref = DynoRef(want.app, ptype, n, want.generation)
                with self._lock:
                    have = self._dynos.get(ref)
                if have is not None and (have.meta is not None or have.restart_at > now):
                    continue
                self._start(want, proc, ref, have)
        # Stop what is not wanted: the highest numbers first; old generations by rollout.
        old = [d for d in current if d.meta is not None and not d.stopping
               and d.ref.generation != want.generation]
        extra = [d for d in current if d.meta is not None and not d.stopping
                 and d.ref.generation == want.generation and not want.wants(d.ref)]
        extra.sort(key=lambda d: (d.ref.process_type, -d.ref.number))
        self._stop_many(extra, "scaled down")
        new = [d for d in self._app_dynos(want.app) if d.ref.generation == want.generation]
        self._stop_many(self.rollout(want.app, old, new), "rollout")

    def rollout(self, app: str, old: list[Dyno], new: list[Dyno]) -> list[Dyno]:
        """Which old-generation dynos to stop now. Start-new-then-stop-old: an old
        worker goes once its replacement (same type and number) is no longer starting,
        or when it has none. An old web dyno goes only once its replacement is up *and
        routed* (or once no web dyno is wanted any more): it is then taken out of the
        router, drained and stopped by ``_stop_one``."""
        if not old:
            return []
        with self._lock:
            routed = set(self._backends.get(app, []))
        settled, ready = set(), set()
        for d in new:
            key = (d.ref.process_type, d.ref.number)
            if d.state is not State.STARTING:
                settled.add(key)
            if d.state is State.UP and d.meta is not None and not d.stopping and (
                    self._routed(app, Backend(d.ref.dyno, d.meta.address, d.meta.port),
                                 routed)):
                ready.add(key)
        wanted = {(d.ref.process_type, d.ref.number) for d in new}
        out = []
        for d in old:
            key = (d.ref.process_type, d.ref.number)
            if key not in wanted or (key in ready if d.web else key in settled):
                out.append(d)
        return out

    def _routed(self, app: str, backend: Backend, routed: set[Backend]) -> bool:
        """Given to the router, and (when the router tells) taking requests there."""
        if backend not in routed:
            return False
        ready = getattr(self.router, "ready", None)
        if ready is None:
            return True
        try:
            return bool(ready(app, backend))
        except Exception:
            log.exception("router: ready(%s)", app)
            return False

    def _cycle_due(self, want: Desired, current: list[Dyno]) -> bool:
        """Heroku's daily restart: once a dyno of the current generation is past its
        ``cycle_at``, the app's dynos are replaced by a rollout (as ``ps:restart``)."""
        now = time.time()
        due = [d for d in current if d.meta is not None and not d.stopping and d.cycle_at
               and d.ref.generation == want.generation and now >= d.cycle_at]
        if not due:
            return False
        for d in due:
            self._event(d, "Cycling")
        log.info("daily restart of %s", want.app)
        self.bump_generation(want.app)
        self._wake.set()
        return True

    def _release_failed(self, want: Desired, current: list[Dyno]) -> bool:
        """A new release whose web dynos never come up (crash at boot, R10) while an
        older release still serves is not rolled out: marked failed, so the previous
        release stays current (the next pass rolls back to it). True if so."""
        new_web = [d for d in current if d.web and d.ref.generation == want.generation]
        serving = [d for d in current if d.web and d.meta is not None and not d.stopping
                   and d.meta.release != want.release and d.state is State.UP]
        if not new_web or not serving or any(d.ever_up for d in new_web):
            return False
        if not any(d.crashes >= FAILED_CRASHES or d.timed_out for d in new_web):
            return False
        why = ("timed out (R10)" if any(d.timed_out for d in new_web)
               else "crashed at boot")
        previous = sorted({d.meta.release for d in serving if d.meta is not None})[-1]
        log.warning("release v%d of %s failed: its web dynos %s", want.release, want.app, why)
        releases.set_status(self.store, want.app, want.release, ReleaseStatus.FAILED)
        journal.api_event(want.app, f"Release v{want.release} failed: its web dynos {why}; "
                                    f"v{previous} keeps serving")
        self.bump_generation(want.app)
        with self._lock:
            for d in current:
                if d.meta is None and self._dynos.get(d.ref) is d:
                    del self._dynos[d.ref]
        self._stop_many([d for d in current if d.meta is not None
                         and d.ref.generation == want.generation], "release failed")
        self._wake.set()
        return True

    def _start(self, want: Desired, proc: Process, ref: DynoRef, prev: Dyno | None) -> None:
        command = proc.command
        d = prev or Dyno(ref, None, State.STARTING, time.time())
        d.health = health_path(want.config) if d.web else ""
        d.release, d.command, d.size = want.release, command, proc.size
        with self._lock:
            self._dynos[ref] = d
        if prev is not None:
            self._set_state(d, State.STARTING)
        self._event(d, f"Starting process with command `{command}`")
        try:
            meta = self.host.start(ref, release=want.release, command=command, size=proc.size,
                                   checksum=want.checksum, uid=want.uid, config=want.config)
        except DynodError as exc:
            log.error("starting %s of %s: %s", ref.dyno, ref.app, exc.message)
            self._event(d, f"Error starting process: {exc.message}")
            with self._lock:
                d.crashes += 1
                d.restart_at = time.monotonic() + max(backoff(d.crashes), 1.0)
            self._set_state(d, State.CRASHED)
            return
        with self._lock:
            d.meta = meta
            d.launched = time.monotonic()
            d.cycle_at = cycle_due(time.time())
            if d.state is not State.STARTING:
                d.state, d.since = State.STARTING, time.time()

    # --- stopping -----------------------------------------------------------------

    def _stop_many(self, dynos: list[Dyno], why: str) -> None:
        for d in dynos:
            with self._lock:
                if d.stopping or d.meta is None:
                    continue
                d.stopping = True
            log.info("stopping %s of %s (%s)", d.ref.unit, d.ref.app, why)
            threading.Thread(target=self._stop_one, args=(d,), daemon=True,
                             name=f"stop {d.ref.unit}").start()

    def _drain(self, d: Dyno) -> None:
        """A web dyno about to stop: wait until the reconciler took it out of the
        router (it is ``stopping``, so the next pass does), then until the router has no
        request in flight on it. At most DRAIN_TIMEOUT."""
        meta = d.meta
        if not d.web or meta is None:
            return
        backend = Backend(d.ref.dyno, meta.address, meta.port)
        deadline = time.monotonic() + DRAIN_TIMEOUT
        self._wake.set()
        while time.monotonic() < deadline and not self._stop.is_set():
            with self._lock:
                routed = backend in self._backends.get(d.ref.app, [])
            if not routed:
                break
            time.sleep(0.02)
        in_flight = getattr(self.router, "in_flight", None)
        while in_flight is not None and time.monotonic() < deadline:
            try:
                if in_flight(d.ref.app, backend) == 0:
                    return
            except Exception:
                log.exception("router: in_flight(%s)", d.ref.app)
                return
            time.sleep(0.05)

    def _stop_one(self, d: Dyno) -> None:
        """Heroku's stop: SIGTERM to every process, 30 s, SIGKILL (R12). A web dyno
        is drained from the router first."""
        try:
            self._drain(d)
            self._event(d, "Stopping all processes with SIGTERM")
            units.kill_dyno(d.ref.unit, signal.SIGTERM)
            if not self._wait_exit(d.ref.unit, STOP_TIMEOUT):
                self._event(d, "Error R12 (Exit timeout) -> At least one process failed to "
                               "exit within 30 seconds of SIGTERM")
                self._event(d, "Stopping remaining processes with SIGKILL")
                units.kill_dyno(d.ref.unit, signal.SIGKILL)
                self._wait_exit(d.ref.unit, 10.0)
            status = units.dyno_status(d.ref.unit)
            code = status.exit_status if status is not None else None
            self._event(d, f"Process exited with status {code if code is not None else 'unknown'}")
            units.stop_dyno(d.ref.unit)
            units.wait_gone(d.ref.unit, timeout=10)
            self.host.teardown(d.ref)
        except DynodError as exc:
            log.error("stopping %s: %s", d.ref.unit, exc.message)
        except Exception:
            log.exception("stopping %s", d.ref.unit)
        with self._lock:
            restart = d.restart
            if self._dynos.get(d.ref) is d:
                del self._dynos[d.ref]
        self._set_state(d, State.DOWN)
        if restart:
            self._wake.set()

    @staticmethod
    def _wait_exit(unit: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [u for u in units.list_dynos() if u.name == unit]
            if not found or found[0].exited:
                return True
            time.sleep(0.1)
        return False

    # --- the API ------------------------------------------------------------------

    def dynos(self, app: str) -> list[DynoInfo]:
        """The app's dynos for ``ps``, sorted by type and number. Raises NotFound."""
        with self.store.read() as tx:
            reads.require_app(tx, app)
        with self._lock:
            found = [d for d in self._dynos.values() if d.ref.app == app]
        out = []
        for d in sorted(found, key=lambda d: (d.ref.process_type, d.ref.number,
                                              d.ref.generation)):
            meta = d.meta
            size = d.size
            # systemd's accounting (MemoryCurrent, CPUUsageNSec) covers cgroup v1 and v2.
            status = units.dyno_status(d.ref.unit) if meta else None
            out.append(DynoInfo(
                app=app, name=d.ref.dyno, process_type=d.ref.process_type,
                state=State.DOWN if d.stopping else d.state, since=d.since,
                command=d.command, size=size, release=d.release, unit=d.ref.unit,
                address=meta.address if meta else "", port=meta.port if meta else 0,
                memory_bytes=status.memory_bytes if status else None,
                memory_quota=SIZES[size].memory_mb * 1024 * 1024 if size in SIZES else 0,
                cpu_nsec=(status.cpu_nsec if status and status.cpu_nsec is not None
                          else cpu_from_procs(d.ref) if meta else None),
            ))
        return out

    def restart(self, app: str, target: str = "") -> list[str]:
        """Heroku's ps:restart: every dyno (``""``), a type (``web``) or one dyno
        (``web.1``); the crash back-off is reset. Returns the dyno names restarted.
        Raises NotFound for an unknown app or a target with no dyno."""
        with self.store.read() as tx:
            reads.require_app(tx, app)
        if not target:
            self.bump_generation(app)
            with self._lock:
                names = sorted({d.ref.dyno for d in self._dynos.values() if d.ref.app == app})
                for ref in [r for r, d in self._dynos.items() if r.app == app and d.meta is None]:
                    del self._dynos[ref]
            self._wake.set()
            return names
        chosen = self._select(app, target)
        for d in chosen:
            with self._lock:
                d.restart = True
                d.crashes = 0
                d.restart_at = 0.0
        self._stop_many([d for d in chosen if d.meta is not None], "restart")
        self._wake.set()
        return sorted(d.ref.dyno for d in chosen)

    def stop_dyno(self, app: str, dyno: str) -> list[str]:
        """Heroku's ps:stop: the dyno stops; as part of the formation it starts again."""
        if "." not in dyno:
            raise InvalidArgument(f'"{dyno}" is not a dyno name; use TYPE.N, e.g. web.1')
        return self.restart(app, dyno)

    def _select(self, app: str, target: str) -> list[Dyno]:
        with self.store.read() as tx:
            reads.require_app(tx, app)
        with self._lock:
            found = [d for d in self._dynos.values() if d.ref.app == app and not d.stopping
                     and target in (d.ref.dyno, d.ref.process_type)]
        if not found:
            raise NotFound(f'app "{app}" has no dyno or process type "{target}"; '
                           "list them with `dynoctl ps`")
        return found

    # --- events and routing -------------------------------------------------------

    def _event(self, d: Dyno, message: str) -> None:
        journal.app_event(d.ref.app, d.ref.dyno, message)

    def _set_state(self, d: Dyno, state: State) -> None:
        with self._lock:
            old = d.state
            if old is state:
                return
            d.state, d.since = state, time.time()
            if state is State.UP:
                d.ever_up = True
        self._event(d, f"State changed from {old} to {state}")

    def _route(self, apps_now: set[str]) -> None:
        with self._lock:
            up: dict[str, list[Backend]] = {}
            for d in self._dynos.values():
                if d.web and d.state is State.UP and not d.stopping and d.meta is not None:
                    up.setdefault(d.ref.app, []).append(
                        Backend(d.ref.dyno, d.meta.address, d.meta.port))
        for app in sorted(apps_now):
            backends = sorted(up.get(app, []))
            if self._backends.get(app) != backends:
                try:
                    self.router.set_backends(app, backends)
                    self._backends[app] = backends
                except Exception:
                    log.exception("router: set_backends(%s)", app)
        for app in sorted(set(self._backends) - apps_now):
            try:
                self.router.remove_app(app)
                del self._backends[app]
            except Exception:
                log.exception("router: remove_app(%s)", app)

