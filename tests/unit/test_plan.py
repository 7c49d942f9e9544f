"""The supervisor's planner without systemd or root: records and observations in,
actions out; and the executor over fake effects (the app's log lines, in order)."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

import pytest

from dynod.errors import ResourceExhausted
from dynod.model.dynos import DynoMeta, DynoRef, DynoState
from dynod.model.formation import Process
from dynod.router.protocol import Backend
from dynod.runtime import adoption, plan
from dynod.runtime.executor import Executor
from dynod.runtime.oneoff import OneOffDyno, OneOffs
from dynod.runtime.plan import Desired, Dyno, Exit, Observed
from dynod.settings import Settings
from dynod.system import mounts, netns, unit_names, units

NOW = 1000.0
A = TypeVar("A")
MB = 1024 * 1024


def rec(n: int, gen: int, state: DynoState = DynoState.UP, *, release: int = 1,
        ptype: str = "web", size: str = "basic") -> Dyno:
    meta = DynoMeta("shop", ptype, n, gen, release, "x", size, f"10.0.{gen}.{n}", 5000)
    d = Dyno(DynoRef("shop", ptype, n, gen), meta, state, 0.0, launched=NOW - 1)
    d.ever_up = state is DynoState.UP
    return d


NEW_WEB = DynoRef("shop", "web", 1, 2)


def want(release: int = 1, gen: int = 1, **quantities: int) -> Desired:
    procs = {t: Process(t, q, "basic", f"run {t}") for t, q in quantities.items()}
    return Desired("shop", release, gen, "sha256:x", 70000, {}, procs)


def seen(*, routed: Iterable[Dyno] = (), ready: Iterable[Dyno] = (), **kw: object) -> Observed:
    backends = tuple(b for d in routed if (b := d.backend()) is not None)
    return Observed(NOW, NOW, routed={"shop": backends} if backends else {},
                    ready=frozenset(("shop", b) for d in ready if (b := d.backend())),
                    **kw)  # type: ignore[arg-type]


def of(kind: type[A], actions: list[plan.Action]) -> list[A]:
    return [a for a in actions if isinstance(a, kind)]


def refs(kind: type[plan.Start | plan.Stop], actions: list[plan.Action]
         ) -> list[tuple[str, int, int]]:
    return [(a.ref.process_type, a.ref.number, a.ref.generation) for a in of(kind, actions)]


# --- scaling --------------------------------------------------------------------------


def test_scale_up_starts_the_missing_numbers_lowest_first() -> None:
    actions = plan.plan_app(want(web=3, worker=1), [rec(1, 1)], seen())
    assert refs(plan.Start, actions) == [("web", 2, 1), ("web", 3, 1), ("worker", 1, 1)]
    assert not of(plan.Stop, actions) and not of(plan.SetGeneration, actions)


def test_scale_down_stops_the_highest_numbers_first() -> None:
    actions = plan.plan_app(want(web=1), [rec(1, 1), rec(2, 1), rec(3, 1)], seen())
    assert refs(plan.Stop, actions) == [("web", 3, 1), ("web", 2, 1)]
    assert {a.why for a in of(plan.Stop, actions)} == {"scaled down"}
    assert not of(plan.Start, actions)


def test_a_cluster_node_starts_only_the_dynos_placed_on_it() -> None:
    mine = replace(want(web=4, worker=2), placed=frozenset({"web.2", "web.4", "worker.1"}))
    actions = plan.plan_app(mine, [], seen())
    assert refs(plan.Start, actions) == [("web", 2, 1), ("web", 4, 1), ("worker", 1, 1)]


def test_a_dyno_placed_elsewhere_stops_and_one_scaled_away_says_so() -> None:
    mine = replace(want(web=2), placed=frozenset({"web.1"}))
    actions = plan.plan_app(mine, [rec(1, 1), rec(2, 1), rec(3, 1)], seen())
    assert refs(plan.Stop, actions) == [("web", 3, 1), ("web", 2, 1)]
    assert [a.why for a in of(plan.Stop, actions)] == ["scaled down", "placed on another node"]
    assert not of(plan.Start, actions)


def test_a_fenced_node_runs_nothing_and_one_machine_runs_everything() -> None:
    fenced = replace(want(web=2, worker=1), placed=frozenset(), fenced=True)
    crashed = Dyno(DynoRef("shop", "worker", 1, 1), None, DynoState.CRASHED, 0.0)
    actions = plan.plan_app(fenced, [rec(1, 1), rec(2, 1), crashed], seen())
    assert refs(plan.Stop, actions) == [("web", 1, 1), ("web", 2, 1)]
    assert {(a.why, a.grace) for a in of(plan.Stop, actions)} == {
        ("fenced: this node lost the cluster", plan.FENCED_GRACE)}
    assert of(plan.Forget, actions) == [plan.Forget(crashed.ref)] and not of(plan.Start, actions)
    assert refs(plan.Start, plan.plan_app(want(web=2), [], seen())) == [
        ("web", 1, 1), ("web", 2, 1)]


# --- a rollout ----------------------------------------------------------------------


def test_rollout_new_web_dynos_up_and_routed_before_the_old_ones_drain() -> None:
    old = [rec(1, 1), rec(2, 1)]
    # A new release: a new generation, its dynos start; the old ones stay.
    actions = plan.plan_app(want(release=2, web=2), old, seen(routed=old))
    assert of(plan.SetGeneration, actions) == [plan.SetGeneration("shop", 2)]
    assert refs(plan.Start, actions) == [("web", 1, 2), ("web", 2, 2)]
    assert not of(plan.Stop, actions)
    new = [rec(1, 2, DynoState.STARTING, release=2), rec(2, 2, DynoState.STARTING, release=2)]
    # Starting: nothing stops, nothing new is routed.
    assert not of(plan.Stop, plan.plan_app(want(2, 2, web=2), old + new, seen(routed=old)))
    assert plan.plan_routes(old + new, ["shop"], {"shop": [b for d in old
                                                         if (b := d.backend())]}) == []
    # Up: routed next to the old ones, still nothing stops.
    for d in new:
        d.state = DynoState.UP
    routes = plan.plan_routes(old + new, ["shop"], {})
    assert routes == [plan.Route("shop", tuple(sorted(b for d in old + new
                                                       if (b := d.backend()))))]
    assert not of(plan.Stop, plan.plan_app(want(2, 2, web=2), old + new, seen(routed=old)))
    # Routed, but the router has web.2 not yet up: only web.1's predecessor goes.
    actions = plan.plan_app(want(2, 2, web=2), old + new,
                            seen(routed=old + new, ready=[new[0]]))
    assert refs(plan.Stop, actions) == [("web", 1, 1)]
    actions = plan.plan_app(want(2, 2, web=2), old + new, seen(routed=old + new, ready=new))
    assert refs(plan.Stop, actions) == [("web", 1, 1), ("web", 2, 1)]
    assert {a.why for a in of(plan.Stop, actions)} == {"rollout"}
    # A stopping dyno leaves the router first (its drain waits for that).
    old[0].stopping = True
    (route,) = of(plan.Route, plan.plan_routes(old + new, ["shop"], {}))
    assert old[0].backend() not in route.backends


def test_a_new_generation_is_above_every_tracked_one() -> None:
    # The store says 1 (after a failed release went back to it), generation 2 stops.
    stopping = rec(1, 2, release=3)
    stopping.stopping = True
    actions = plan.plan_app(want(release=4, gen=1, web=1), [rec(1, 1), stopping], seen())
    assert of(plan.SetGeneration, actions) == [plan.SetGeneration("shop", 3)]
    assert refs(plan.Start, actions) == [("web", 1, 3)]


# --- crashes ------------------------------------------------------------------------


def test_a_crash_restarts_at_once_then_backs_off_and_a_new_release_resets_it() -> None:
    d = rec(1, 1)
    actions = plan.plan_observed([d], seen(exits={d.ref: Exit("exit-code", 1)}))
    assert actions == [plan.MarkCrashed(d.ref, 1, 0, 0.0, "exit-code")]  # the first: at once
    d.crashes = 3
    (crash,) = plan.plan_observed([d], seen(exits={d.ref: Exit("exit-code", 1)}))
    assert crash == plan.MarkCrashed(d.ref, 1, 0, plan.backoff(4), "exit-code")
    assert plan.backoff(4) == 8.0
    # Crashed and waiting: not started before its time, started after.
    d.meta, d.state, d.restart_at = None, DynoState.CRASHED, NOW + 8
    assert not of(plan.Start, plan.plan_app(want(web=1), [d], seen()))
    d.restart_at = NOW - 0.1
    assert refs(plan.Start, plan.plan_app(want(web=1), [d], seen())) == [("web", 1, 1)]
    # A new release (the store's new generation): the crashed record is forgotten, the
    # new dyno starts at once, with no back-off of its own.
    d.restart_at = NOW + 600
    actions = plan.plan_app(want(release=2, gen=2, web=1), [d], seen())
    assert of(plan.Forget, actions) == [plan.Forget(d.ref)]
    assert refs(plan.Start, actions) == [("web", 1, 2)]


def test_r10_a_web_dyno_that_never_binds_is_killed_once() -> None:
    d = rec(1, 1, DynoState.STARTING)
    d.launched = NOW - 59
    assert plan.plan_observed([d], seen()) == []
    d.launched = NOW - 61
    assert plan.plan_observed([d], seen()) == [plan.BootTimeout(d.ref)]
    d.killed = True
    assert plan.plan_observed([d], seen()) == []
    assert plan.plan_observed([d], seen(answering=frozenset({d.ref}))) == [plan.MarkUp(d.ref)]
    worker = rec(1, 1, DynoState.STARTING, ptype="worker")
    worker.launched = NOW - 600
    assert plan.plan_observed([worker], seen()) == [plan.MarkUp(worker.ref)]


def test_r14_over_quota_every_20_s_and_r15_when_the_kernel_kills_it() -> None:
    d = rec(1, 1)  # basic: 512 MB
    quota = plan.quota_of("basic")
    assert quota == 512 * MB
    assert plan.plan_observed([d], seen(memory={d.ref: 100 * MB})) == [
        plan.RecordPeak(d.ref, 100 * MB)]
    over = plan.plan_observed([d], seen(memory={d.ref: 600 * MB}))
    assert plan.MemoryOver(d.ref, 600 * MB, quota) in over
    d.r14_at, d.peak_memory = NOW - 5, 600 * MB
    assert plan.plan_observed([d], seen(memory={d.ref: 600 * MB})) == []
    # R15: systemd says oom-kill (v2); or a SIGKILL nobody sent after being over (v1).
    assert plan.plan_observed([d], seen(exits={d.ref: Exit("oom-kill", 137)})) == [
        plan.MarkCrashed(d.ref, 137, quota, 0.0, "oom-kill")]
    assert plan.plan_observed([d], seen(exits={d.ref: Exit("signal", 137)})) == [
        plan.MarkCrashed(d.ref, 137, quota, 0.0, "signal")]
    d.killed = True  # dynod's own SIGKILL (R10) is no R15
    assert plan.plan_observed([d], seen(exits={d.ref: Exit("signal", 137)})) == [
        plan.MarkCrashed(d.ref, 137, 0, 0.0, "signal")]


# --- adoption ------------------------------------------------------------------------


def test_adopted_dynos_of_the_current_release_are_left_running() -> None:
    adopted = [rec(1, 3, release=7), rec(2, 3, release=7), rec(1, 3, release=7, ptype="worker")]
    w = want(release=7, gen=3, web=2, worker=1)
    actions = plan.plan_app(w, adopted, seen(routed=adopted[:2]))
    assert actions == []  # no start, no stop, no new generation: no dyno restarted
    assert plan.plan_observed(adopted, seen()) == []


def test_adopt_tracks_running_units_and_skips_one_offs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(runtime_dir=tmp_path)
    web = DynoRef("shop", "web", 1, 3)
    meta = DynoMeta("shop", "web", 1, 3, 7, "x", "basic", "10.0.0.2", 5000)
    (mounts.dynos_dir(tmp_path) / web.key).mkdir(parents=True)
    (mounts.dynos_dir(tmp_path) / web.key / "dyno.json").write_text(
        '{"app": "shop", "process_type": "web", "number": 1, "generation": 3, '
        '"release": 7, "command": "x", "size": "basic", "address": "10.0.0.2", "port": 5000}')
    listed = [units.DynoUnit("u1", unit_names.DynoName("shop", "web", 1, 3), "active", "running"),
              units.DynoUnit("u2", unit_names.DynoName("shop", "run", 1, 1), "active", "running")]
    stopped: list[str] = []
    monkeypatch.setattr(units, "list_dynos", lambda: listed)
    # Started 100 s before dynod's start on the monotonic clock (and, per the wall clock
    # stepped since, a day before): its daily cycle counts from the monotonic start.
    monkeypatch.setattr(units, "dyno_status", lambda name: units.DynoStatus(
        "active", "running", "success", None, "", None, None,
        int((NOW - 86400) * 1e6), int((500.0 - 100) * 1e6)))
    monkeypatch.setattr(units, "stop_dyno", stopped.append)
    monkeypatch.setattr(netns, "list_dyno_netns", lambda: [web.key])

    class NoHost:
        def teardown(self, ref: DynoRef) -> None:
            raise AssertionError(f"tore down {ref}")

    found = adoption.adopt(settings, NoHost, lambda a, p: True,  # type: ignore[arg-type]
                           NOW, 500.0)
    assert list(found) == [web] and found[web].meta == meta
    assert found[web].state is DynoState.UP and not stopped
    assert 400.0 + plan.CYCLE <= found[web].cycle_at <= 400.0 + plan.CYCLE + plan.CYCLE_JITTER


# --- a failed release ----------------------------------------------------------------


def test_a_release_that_hits_r10_is_not_rolled_out_and_the_serving_dyno_stays() -> None:
    serving = rec(1, 1, release=1)
    failed = rec(1, 2, DynoState.CRASHED, release=2)
    failed.meta, failed.timed_out, failed.crashes = None, True, 1
    actions = plan.plan_app(want(release=2, gen=2, web=1), [serving, failed], seen())
    assert of(plan.MarkReleaseFailed, actions) == [
        plan.MarkReleaseFailed("shop", 2, "timed out (R10)", 1)]
    # Back to the serving dyno's generation: no new dyno, the serving one untouched.
    assert of(plan.SetGeneration, actions) == [plan.SetGeneration("shop", 1)]
    assert not of(plan.Start, actions)
    assert serving.ref not in {a.ref for a in of(plan.Stop, actions)}
    assert of(plan.Forget, actions) == [plan.Forget(failed.ref)]
    # The next pass (the previous release current again, generation 1): nothing to do.
    assert plan.plan_app(want(release=1, gen=1, web=1), [serving], seen()) == []


def test_a_failed_release_stops_only_its_own_dynos() -> None:
    serving = [rec(1, 1), rec(2, 1)]
    bad = rec(1, 2, DynoState.STARTING, release=2)
    bad.timed_out = True
    bad2 = rec(2, 2, DynoState.STARTING, release=2)
    actions = plan.plan_app(want(release=2, gen=2, web=2), [*serving, bad, bad2], seen())
    assert refs(plan.Stop, actions) == [("web", 1, 2), ("web", 2, 2)]
    assert {a.why for a in of(plan.Stop, actions)} == {"release failed"}
    assert of(plan.SetGeneration, actions) == [plan.SetGeneration("shop", 1)]
    assert not of(plan.Start, actions)


# --- the executor over fake effects ----------------------------------------------------


class FakeEffects:
    def __init__(self) -> None:
        self.log: list[str] = []

    def event(self, ref: DynoRef, message: str) -> None:
        self.log.append(f"{ref.dyno}: {message}")

    def start(self, action: plan.Start) -> DynoMeta:
        r = action.ref
        return DynoMeta(r.app, r.process_type, r.number, r.generation, action.release,
                        action.command, action.size, "10.0.0.9", 5000)

    def kill(self, ref: DynoRef, sig: signal.Signals) -> None:
        self.log.append(f"kill {sig.name}")

    def wait_exit(self, ref: DynoRef, timeout: float) -> bool:
        return True

    def exit_status(self, ref: DynoRef) -> int | None:
        return 143

    def remove(self, ref: DynoRef, timeout: float) -> None:
        self.log.append("removed")

    def set_backends(self, app: str, backends: list[Backend]) -> None:
        self.log.append(f"route {[b.dyno for b in backends]}")

    def remove_app(self, app: str) -> None:
        self.log.append("unroute")

    def in_flight(self, app: str, backend: Backend) -> int | None:
        return 0

    def set_generation(self, app: str, generation: int) -> None:
        self.log.append(f"generation {generation}")

    def release_failed(self, app: str, version: int, message: str, cause: str) -> None:
        self.log.append(f"{message} [{cause}]")


def test_executor_writes_heroku_lifecycle_lines() -> None:
    fx = FakeEffects()
    ex = Executor(fx, lambda: None, clock=lambda: NOW, wall=lambda: NOW)
    ref = DynoRef("shop", "web", 1, 1)
    ex.apply([plan.Start(ref, 1, "python app.py", "basic", "sha", 70000, {})])
    ex.apply([plan.MarkUp(ref), plan.MemoryOver(ref, 600 * MB, 512 * MB),
              plan.MarkCrashed(ref, 137, 512 * MB, 2.0)])
    assert fx.log == [
        "web.1: Starting process with command `python app.py`",
        "web.1: State changed from starting to up",
        "web.1: Process running mem=600M(117.2%)",
        "web.1: Error R14 (Memory quota exceeded)",
        "web.1: Process running mem=1024M(200.0%)",
        "web.1: Error R15 (Memory quota vastly exceeded)",
        "web.1: Stopping process with SIGKILL",
        "web.1: Process exited with status 137",
        "removed",
        "web.1: State changed from up to crashed",
    ]
    d = ex.dynos[ref]
    assert d.meta is None and d.crashes == 1 and d.restart_at == NOW + 2.0
    fx.log.clear()
    ex.apply([plan.Start(ref, 1, "python app.py", "basic", "sha", 70000, {})])
    ex.apply([plan.BootTimeout(ref)])
    assert fx.log[-3:] == ["web.1: Error R10 (Boot timeout) -> Web process failed to bind "
                           "to $PORT within 60 seconds of launch",
                           "web.1: Stopping process with SIGKILL", "kill SIGKILL"]
    assert d.killed and d.timed_out


def test_executor_marks_a_release_failed_with_the_serving_version() -> None:
    fx = FakeEffects()
    ex = Executor(fx, lambda: None)
    ex.apply([plan.MarkReleaseFailed("shop", 3, "timed out (R10)", 2),
              plan.SetGeneration("shop", 1)])
    assert fx.log == ["Release v3 failed: its web dynos timed out (R10); v2 keeps serving "
                      "[timed out (R10)]", "generation 1"]


class FullDisk(FakeEffects):
    def start(self, action: plan.Start) -> DynoMeta:
        raise ResourceExhausted("No space left on device unpacking slug sha256:x")


@pytest.mark.parametrize(("effects", "ended", "cause"), [
    (FullDisk, None, "could not start: No space left on device unpacking slug sha256:x"),
    (FakeEffects, plan.MarkCrashed(NEW_WEB, 3, result="exit-code"),
     "crashed at boot (exit status 3)"),
    (FakeEffects, plan.MarkCrashed(NEW_WEB, 139, result="core-dump"),
     "crashed at boot (exit status 139, core-dump)"),
    (FakeEffects, plan.MarkCrashed(NEW_WEB, 137, 512 * MB, result="oom-kill"),
     "crashed at boot (R15, exit status 137)"),
    (FakeEffects, plan.MarkCrashed(NEW_WEB, None, result="resources"),
     "crashed at boot (exit status unknown, resources)"),
])
def test_a_failed_release_names_what_its_web_dynos_did(
        effects: type[FakeEffects], ended: plan.MarkCrashed | None, cause: str) -> None:
    """Not "crashed at boot or R10" for a dyno that never started (a full disk): the
    release's summary carries the cause its web dynos showed."""
    fx = effects()
    ex = Executor(fx, lambda: None, clock=lambda: NOW, wall=lambda: NOW)
    serving = rec(1, 1, release=1)
    ex.dynos[serving.ref] = serving
    for _ in range(plan.FAILED_CRASHES):
        ex.apply([plan.Start(NEW_WEB, 2, "x", "basic", "sha256:x", 70000, {})])
        if ended is not None:
            ex.apply([ended])
    actions = plan.plan_release_failed(want(release=2, gen=2, web=1), ex.records("shop"))
    assert of(plan.MarkReleaseFailed, actions) == [
        plan.MarkReleaseFailed("shop", 2, cause, 1)]
    fx.log.clear()
    ex.apply(of(plan.MarkReleaseFailed, actions))
    assert fx.log == [f"Release v2 failed: its web dynos {cause}; v1 keeps serving [{cause}]"]


# --- one-offs ------------------------------------------------------------------------


def test_a_one_off_has_exited_once_its_command_ran_and_ended(
        monkeypatch: pytest.MonkeyPatch) -> None:
    oneoffs = OneOffs(None, None, lambda: None)  # type: ignore[arg-type, return-value]
    meta = DynoMeta("shop", "run", 1234, 1, 1, "bash", "basic", "", 0)
    d = OneOffDyno(meta.ref, meta, "jane", NOW, "pipes")

    def status(active: str, sub: str, started: int) -> units.DynoStatus:
        return units.DynoStatus(active, sub, "success", 0, "", None, None, started)

    for given, exited in [(status("inactive", "dead", 0), False),  # queued, not yet run
                          (status("active", "running", 5), False),
                          (status("inactive", "dead", 5), True),
                          (status("failed", "failed", 5), True),
                          (None, True)]:  # unloaded: gone
        monkeypatch.setattr(units, "dyno_status", lambda name, s=given: s)
        assert oneoffs._exited(d) is exited, given


def test_executor_drains_a_web_dyno_before_sigterm() -> None:
    fx = FakeEffects()
    ex = Executor(fx, lambda: None)
    ref = DynoRef("shop", "web", 1, 1)
    ex.apply([plan.Start(ref, 1, "python app.py", "basic", "sha", 70000, {}),
              plan.MarkUp(ref)])
    d = ex.dynos[ref]
    ex.apply(plan.plan_routes(ex.records(), ["shop"], ex.routed_view()))
    assert ex.routed == {"shop": [d.backend()]}
    fx.log.clear()
    ex.apply([plan.Stop(ref, "rollout")])
    time.sleep(0.2)
    assert "kill SIGTERM" not in fx.log  # still routed: no SIGTERM yet
    # The next pass takes it out of the router (it is stopping); then it stops.
    ex.apply(plan.plan_routes(ex.records(), ["shop"], ex.routed_view()))
    deadline = time.monotonic() + 5
    while ref in ex.dynos and time.monotonic() < deadline:
        time.sleep(0.01)
    assert fx.log == ["route []", "web.1: Stopping all processes with SIGTERM", "kill SIGTERM",
                      "web.1: Process exited with status 143", "removed",
                      "web.1: State changed from up to down"]


class Stubborn(FakeEffects):
    """A dyno that ignores SIGTERM; records how long the executor waited."""

    waited: list[float]

    def wait_exit(self, ref: DynoRef, timeout: float) -> bool:
        self.waited = [*getattr(self, "waited", []), timeout]
        return len(self.waited) > 1


def test_a_fenced_stop_skips_the_drain_and_kills_after_the_short_grace() -> None:
    fx = Stubborn()
    ex = Executor(fx, lambda: None)
    ref = DynoRef("shop", "web", 1, 1)
    ex.apply([plan.Start(ref, 1, "python app.py", "basic", "sha", 70000, {}),
              plan.MarkUp(ref)])
    ex.apply(plan.plan_routes(ex.records(), ["shop"], ex.routed_view()))
    fx.log.clear()
    ex.apply([plan.Stop(ref, "fenced", plan.FENCED_GRACE)])  # still routed: no drain
    deadline = time.monotonic() + 5
    while ref in ex.dynos and time.monotonic() < deadline:
        time.sleep(0.01)
    assert fx.waited[0] == plan.FENCED_GRACE
    assert fx.log[:4] == ["web.1: Stopping all processes with SIGTERM", "kill SIGTERM",
                          "web.1: Error R12 (Exit timeout) -> At least one process failed "
                          "to exit within 2 seconds of SIGTERM",
                          "web.1: Stopping remaining processes with SIGKILL"]
