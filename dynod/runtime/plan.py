"""The supervisor's decisions: desired and observed state in, actions out. Pure.

Nothing here calls systemd, the router, the store or a clock: the supervisor passes what
it saw (``Observed``: unit exits, probes, memory, the router's view, both clocks) and the
dyno records it keeps (``Dyno``, read here, written only by the executor), and gets
back a list of frozen actions for ``executor.Executor.apply``. A pass plans in three
steps, each applied before the next one looks, as a pass always ran:

1. ``plan_observed``: what the dynos did (up, R10, R14, crashed, R15);
2. ``plan_app`` for each app (and ``plan_gone`` for deleted ones): rollouts, crash
   back-off, a failed release, the daily cycle, scaling;
3. ``plan_routes``: what the router should hold.

Heroku's lifecycle (heroku.md §5, §12): starting -> up (a web dyno once it answers on
$PORT, seen from the host; R10 after 60 s) -> crashed (restarted at once the first
time, then with a growing back-off, reset by a new release or a manual restart) or
down (stopped: SIGTERM, 30 s, SIGKILL with R12). Over its memory quota a dyno gets
R14; killed by the kernel at twice the quota, R15.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from dynod.model.dynos import DynoMeta, DynoRef, DynoState
from dynod.model.formation import Process
from dynod.model.sizes import SIZES
from dynod.router.protocol import Backend

# Heroku: a web dyno must bind $PORT within 60 s of launch (R10).
BOOT_TIMEOUT = 60.0
# Heroku: the first crash restarts at once, later ones after a cool-off of up to 20 min.
BACKOFF_FIRST = 2.0
BACKOFF_MAX = 20 * 60.0
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
# How often an R14 is logged while a dyno stays over its quota.
R14_EVERY = 20.0
# A fenced node (its cluster lease surely lapsed: the others are taking its dynos)
# gives its dynos this long after SIGTERM, not Heroku's 30 s, so that none still runs
# once its lease has lapsed (runtime.leader.FENCE_MARGIN leaves it 3 s).
FENCED_GRACE = 2.0


def backoff(crashes: int) -> float:
    """Seconds before restarting a dyno that crashed ``crashes`` times in a row."""
    if crashes <= 1:
        return 0.0
    return min(BACKOFF_MAX, BACKOFF_FIRST * 2.0 ** (crashes - 2))


def cycle_due(started: float) -> float:
    """When a dyno started at ``started`` is due for its daily restart. Both on the
    monotonic clock: a day of the dyno's uptime, which a step of the wall clock (NTP
    setting a clock that booted a day behind, `date -s`) neither shortens nor stretches;
    on the wall clock such a step made every dyno of every app due at once."""
    return started + CYCLE + random.uniform(0.0, CYCLE_JITTER)  # noqa: S311 - jitter


def health_path(config: Mapping[str, str]) -> str:
    path = config.get(HEALTHCHECK_VAR, "").strip()
    return path if path.startswith("/") else ""


def quota_of(size: str) -> int:
    """The memory quota of a dyno size, in bytes (0: unknown size)."""
    return SIZES[size].memory_mb * 1024 * 1024 if size in SIZES else 0


@dataclass
class Dyno:
    """A dyno the supervisor knows of. ``meta`` None: crashed and torn down, waiting to
    restart. The planner reads these; only the executor changes them."""

    ref: DynoRef
    meta: DynoMeta | None
    state: DynoState
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
    # Its last start or exit that went wrong, as a failed release's summary says it:
    # "crashed at boot (exit status 3)", "could not start: No space left on device ...".
    failure: str = ""
    health: str = ""  # the health-check path of its release ("" = listening is enough)
    cycle_at: float = 0.0  # monotonic: the daily restart is due (0: never)
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
        return self.ref.web

    @property
    def live(self) -> bool:
        """Running and not on its way out."""
        return self.meta is not None and not self.stopping

    def backend(self) -> Backend | None:
        return None if self.meta is None else Backend(self.ref.dyno, self.meta.address,
                                                      self.meta.port)


@dataclass(frozen=True)
class Desired:
    """One app's desired dynos at its current release, on its slug's ``stack``."""

    app: str
    release: int
    generation: int
    checksum: str
    uid: int
    config: dict[str, str]
    processes: dict[str, Process] = field(default_factory=dict)
    stack: str = ""
    # In a cluster, the dynos (``web.1``) placed on this node: it runs only those.
    # None: one machine, it runs them all.
    placed: frozenset[str] | None = None
    # In a cluster: this node's lease is surely lapsed, it must run nothing, at once.
    fenced: bool = False

    def in_formation(self, ref: DynoRef) -> bool:
        p = self.processes.get(ref.process_type)
        return ref.generation == self.generation and p is not None and ref.number <= p.quantity

    def wants(self, ref: DynoRef) -> bool:
        return self.in_formation(ref) and (self.placed is None or ref.dyno in self.placed)


@dataclass(frozen=True)
class Exit:
    """How a tracked dyno's unit ended (systemd's Result and ExecMainStatus)."""

    result: str = ""
    exit_status: int | None = None


@dataclass(frozen=True)
class Observed:
    """What the supervisor saw this pass, as values."""

    monotonic: float  # every timer: R10, back-off, R14's repeat, the daily cycle
    wall: float  # only what `ps` shows (a state's "since")
    exits: Mapping[DynoRef, Exit] = field(default_factory=dict)  # exited or gone units
    answering: frozenset[DynoRef] = frozenset()  # starting web dynos answering on $PORT
    memory: Mapping[DynoRef, int] = field(default_factory=dict)
    routed: Mapping[str, Sequence[Backend]] = field(default_factory=dict)  # given, by app
    ready: frozenset[tuple[str, Backend]] = frozenset()  # the router takes requests there


# --- actions ----------------------------------------------------------------------


@dataclass(frozen=True)
class MarkUp:
    ref: DynoRef


@dataclass(frozen=True)
class BootTimeout:
    """R10: the lines, then SIGKILL (the exit is noticed as a crash)."""

    ref: DynoRef


@dataclass(frozen=True)
class RecordPeak:
    ref: DynoRef
    used: int


@dataclass(frozen=True)
class MemoryOver:
    """R14: the usage line and the error; the dyno keeps running."""

    ref: DynoRef
    used: int
    quota: int


@dataclass(frozen=True)
class MarkCrashed:
    """The unit exited: R15 first if the kernel killed it over twice its quota
    (``oom_quota``, else 0), the exit line, teardown, and the back-off."""

    ref: DynoRef
    exit_status: int | None
    oom_quota: int = 0
    restart_in: float = 0.0
    result: str = ""  # systemd's Result= ("exit-code", "signal", "core-dump", ...)


@dataclass(frozen=True)
class SetGeneration:
    """A rollout (to ``generation`` > the current one) or, after a failed release,
    the return to the generation that still serves."""

    app: str
    generation: int


@dataclass(frozen=True)
class Forget:
    """Drop a crashed record that is no longer wanted."""

    ref: DynoRef


@dataclass(frozen=True)
class MarkReleaseFailed:
    app: str
    version: int
    why: str
    previous: int


@dataclass(frozen=True)
class Cycle:
    """The daily restart of a dyno is due (its line; the rollout follows)."""

    ref: DynoRef


@dataclass(frozen=True)
class Start:
    ref: DynoRef
    release: int
    command: str
    size: str
    checksum: str
    uid: int
    config: Mapping[str, str]
    health: str = ""
    stack: str = ""  # the slug's: the dyno's root is laid over it


@dataclass(frozen=True)
class Stop:
    """Drain (a web dyno), SIGTERM, 30 s, SIGKILL (R12), teardown: in its own thread."""

    ref: DynoRef
    why: str
    # Seconds between SIGTERM and SIGKILL, without draining first; None: Heroku's
    # drain, then 30 s.
    grace: float | None = None


@dataclass(frozen=True)
class Route:
    app: str
    backends: tuple[Backend, ...]


@dataclass(frozen=True)
class Unroute:
    app: str


Action = (MarkUp | BootTimeout | RecordPeak | MemoryOver | MarkCrashed | SetGeneration
          | Forget | MarkReleaseFailed | Cycle | Start | Stop | Route | Unroute)


# --- 1. what the dynos did ----------------------------------------------------------


def plan_observed(dynos: Iterable[Dyno], seen: Observed) -> list[Action]:
    """Exits become crashes (R15 if the kernel's OOM killer did it), starting dynos
    come up or hit R10, dynos over their quota get R14."""
    out: list[Action] = []
    for d in dynos:
        if not d.live:
            continue
        assert d.meta is not None
        quota = quota_of(d.meta.size)
        if d.ref in seen.exits:
            ended = seen.exits[d.ref]
            # cgroup v2 tells (Result=oom-kill); on v1 a SIGKILL nobody sent, after the
            # dyno was seen over its quota, is the kernel's OOM killer at MemoryMax=.
            oom = ended.result == "oom-kill" or (
                ended.exit_status == 137 and not d.killed and d.peak_memory > quota)
            out.append(MarkCrashed(d.ref, ended.exit_status, quota if oom else 0,
                                   backoff(d.crashes + 1), ended.result))
            continue
        if d.state is DynoState.STARTING:
            if not d.web or d.ref in seen.answering:
                out.append(MarkUp(d.ref))
            elif seen.monotonic - d.launched > BOOT_TIMEOUT and not d.killed:
                out.append(BootTimeout(d.ref))
        used = seen.memory.get(d.ref)
        if used is None or not quota:
            continue
        if used > d.peak_memory:
            out.append(RecordPeak(d.ref, used))
        if used > quota and seen.monotonic - d.r14_at >= R14_EVERY:
            out.append(MemoryOver(d.ref, used, quota))
    return out


# --- 2. what each app needs ---------------------------------------------------------


def next_generation(want: Desired, current: Iterable[Dyno]) -> int:
    """A generation no dyno of the app has: above the store's and every tracked one's
    (after a failed release the store's generation went back below the failed one's)."""
    return max([want.generation, *(d.ref.generation for d in current)]) + 1


def plan_app(want: Desired, current: Sequence[Dyno], seen: Observed) -> list[Action]:
    """One app's pass: roll out a new release (or size), give up on a release that does
    not come up, cycle, start what is missing (respecting the back-off), stop what is
    not wanted."""
    if want.fenced:
        return plan_fenced(current)
    out: list[Action] = []
    # A new release (or a new size) replaces every dyno: a rollout, a new generation.
    if any(d.meta is not None and d.ref.generation == want.generation and (
            d.meta.release != want.release or (
                d.ref.process_type in want.processes
                and d.meta.size != want.processes[d.ref.process_type].size))
           for d in current):
        want = replace(want, generation=next_generation(want, current))
        out.append(SetGeneration(want.app, want.generation))
    # Forget crashed records that are no longer wanted.
    out += [Forget(d.ref) for d in current if d.meta is None and not want.wants(d.ref)]
    failed = plan_release_failed(want, current)
    if failed:
        return out + failed
    cycled = plan_cycle(want, current, seen)
    if cycled:
        return out + cycled
    # Start what is missing (lowest numbers first), respecting crash back-off.
    by_ref = {d.ref: d for d in current}
    started: list[Dyno] = []
    for ptype, proc in sorted(want.processes.items()):
        for n in range(1, proc.quantity + 1):
            ref = DynoRef(want.app, ptype, n, want.generation)
            if not want.wants(ref):
                continue
            have = by_ref.get(ref)
            if have is not None and (have.meta is not None or have.restart_at > seen.monotonic):
                continue
            out.append(Start(ref, want.release, proc.command, proc.size, want.checksum,
                             want.uid, want.config,
                             health_path(want.config) if ref.web else "", want.stack))
            started.append(Dyno(ref, None, DynoState.STARTING, seen.wall))
    # Stop what is not wanted: the highest numbers first; old generations by rollout.
    extra = sorted((d for d in current if d.live and d.ref.generation == want.generation
                    and not want.wants(d.ref)),
                   key=lambda d: (d.ref.process_type, -d.ref.number))
    out += [Stop(d.ref, "scaled down" if not want.in_formation(d.ref)
                 else "placed on another node") for d in extra]
    old = [d for d in current if d.live and d.ref.generation != want.generation]
    new = [d for d in current if d.ref.generation == want.generation] + started
    out += [Stop(d.ref, "rollout") for d in rollout(want.app, old, new, seen)]
    return out


def rollout(app: str, old: Sequence[Dyno], new: Sequence[Dyno],
            seen: Observed) -> list[Dyno]:
    """Which old-generation dynos to stop now. Start-new-then-stop-old: an old
    worker goes once its replacement (same type and number) is no longer starting,
    or when it has none. An old web dyno goes only once its replacement is up *and
    routed* and the router takes requests there (or once no web dyno is wanted any
    more): it is then taken out of the router, drained and stopped."""
    if not old:
        return []
    routed = set(seen.routed.get(app, ()))
    settled, ready = set(), set()
    for d in new:
        key = (d.ref.process_type, d.ref.number)
        if d.state is not DynoState.STARTING:
            settled.add(key)
        backend = d.backend()
        if (d.state is DynoState.UP and backend is not None and not d.stopping
                and backend in routed and (app, backend) in seen.ready):
            ready.add(key)
    wanted = {(d.ref.process_type, d.ref.number) for d in new}
    out = []
    for d in old:
        key = (d.ref.process_type, d.ref.number)
        if key not in wanted or (key in ready if d.web else key in settled):
            out.append(d)
    return out


def plan_release_failed(want: Desired, current: Sequence[Dyno]) -> list[Action]:
    """A new release whose web dynos never come up (crash at boot, R10) while an older
    release still serves is not rolled out: it is marked failed and the app goes back
    to the generation of the dynos still serving, which are left exactly as they are
    (no restart, no new dyno); only the failed release's dynos stop. Empty if the
    release has not failed."""
    new_web = [d for d in current if d.web and d.ref.generation == want.generation]
    serving = [d for d in current if d.web and d.live and d.state is DynoState.UP
               and d.release != want.release]
    if not new_web or not serving or any(d.ever_up for d in new_web):
        return []
    if not any(d.crashes >= FAILED_CRASHES or d.timed_out for d in new_web):
        return []
    # The cause the dynos showed, not a guess: R10, or the last start or exit.
    causes = [d.failure for d in sorted(new_web, key=lambda d: d.ref.number) if d.failure]
    why = ("timed out (R10)" if any(d.timed_out for d in new_web)
           else causes[0] if causes else "crashed at boot")
    previous = max(d.release for d in serving)
    back_to = max(d.ref.generation for d in serving if d.release == previous)
    failed_gen = [d for d in current if d.ref.generation == want.generation]
    return [MarkReleaseFailed(want.app, want.release, why, previous),
            SetGeneration(want.app, back_to),
            *(Forget(d.ref) for d in failed_gen if d.meta is None),
            *(Stop(d.ref, "release failed") for d in failed_gen if d.live)]


def plan_cycle(want: Desired, current: Sequence[Dyno], seen: Observed) -> list[Action]:
    """Heroku's daily restart: once a dyno of the current generation is past its
    ``cycle_at``, the app's dynos are replaced by a rollout (as ``ps:restart``)."""
    due = [d for d in current if d.live and d.cycle_at
           and d.ref.generation == want.generation and seen.monotonic >= d.cycle_at]
    if not due:
        return []
    return [*(Cycle(d.ref) for d in due),
            SetGeneration(want.app, next_generation(want, current))]


def plan_fenced(current: Iterable[Dyno]) -> list[Action]:
    """A fenced node: every dyno stops at once (see FENCED_GRACE), crashed records go."""
    current = list(current)
    return [*(Stop(d.ref, "fenced: this node lost the cluster", FENCED_GRACE)
              for d in current if d.live),
            *(Forget(d.ref) for d in current if d.meta is None)]


def plan_gone(app: str, current: Sequence[Dyno]) -> list[Action]:
    """A deleted app: every dyno stops, crashed records go."""
    return [*(Stop(d.ref, "app deleted") for d in current if d.live),
            *(Forget(d.ref) for d in current if d.meta is None)]


# --- 3. what the router should hold ------------------------------------------------------


def plan_routes(dynos: Iterable[Dyno], apps: Iterable[str],
                routed: Mapping[str, Sequence[Backend]], *, remove: bool = True) -> list[Action]:
    """Every up web dyno not on its way out, for each of ``apps``; apps the router has
    but ``apps`` lacks are removed (with ``remove``)."""
    up: dict[str, list[Backend]] = {}
    for d in dynos:
        backend = d.backend()
        if d.web and d.state is DynoState.UP and not d.stopping and backend is not None:
            up.setdefault(d.ref.app, []).append(backend)
    names = set(apps)
    out: list[Action] = []
    for app in sorted(names):
        backends = tuple(sorted(up.get(app, [])))
        if tuple(routed.get(app, ())) != backends or app not in routed:
            out.append(Route(app, backends))
    if remove:
        out += [Unroute(app) for app in sorted(set(routed) - names)]
    return out
