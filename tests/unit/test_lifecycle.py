"""Pure parts of issue 7: the daily cycle, health paths, release failure choice, and the
router's server status from ``show stat``."""

from __future__ import annotations

import time

from dynod.model.dynos import DynoMeta, DynoRef
from dynod.model.dynos import DynoState as State
from dynod.router.admin_socket import parse_server_stat
from dynod.runtime import plan
from dynod.runtime.plan import CYCLE, CYCLE_JITTER, Desired, Dyno, Observed


def _dyno(n: int, gen: int, state: State, release: int = 1) -> Dyno:
    meta = DynoMeta("shop", "web", n, gen, release, "x", "basic", f"10.0.{gen}.{n}", 5000)
    return Dyno(DynoRef("shop", "web", n, gen), meta, state, 0.0)


def test_cycle_is_due_after_a_day_plus_jitter() -> None:
    dues = [plan.cycle_due(1000.0) - 1000.0 for _ in range(200)]
    assert all(CYCLE <= d <= CYCLE + CYCLE_JITTER for d in dues)
    assert len(set(dues)) > 100  # jittered, so dynos do not all cycle at once


def _bumped(actions: list[plan.Action]) -> list[str]:
    return [a.app for a in actions if isinstance(a, plan.SetGeneration)]


def test_a_dyno_past_its_cycle_rolls_the_app_out() -> None:
    want = Desired("shop", 1, 2, "sha", 70000, {})
    young, old = _dyno(1, 2, State.UP), _dyno(2, 2, State.UP)
    young.cycle_at, old.cycle_at = time.monotonic() + 60, time.monotonic() + 60
    seen = Observed(time.monotonic(), time.time())
    assert not plan.plan_cycle(want, [young, old], seen)
    assert not _bumped(plan.plan_cycle(want, [young, old], seen))
    old.cycle_at = time.monotonic() - 1
    seen = Observed(time.monotonic(), time.time())
    actions = plan.plan_cycle(want, [young, old], seen)
    assert actions and _bumped(actions) == ["shop"]
    assert plan.Cycle(old.ref) in actions and plan.SetGeneration("shop", 3) in actions


def test_health_path_from_config() -> None:
    assert plan.health_path({"DYNO_HEALTHCHECK_PATH": "/health"}) == "/health"
    assert plan.health_path({"DYNO_HEALTHCHECK_PATH": "health"}) == ""
    assert plan.health_path({}) == ""


def _failed(actions: list[plan.Action]) -> list[int]:
    return [a.version for a in actions if isinstance(a, plan.MarkReleaseFailed)]


def test_release_failed_only_while_an_older_release_serves() -> None:
    want = Desired("shop", 2, 2, "sha", 70000, {})
    crashed = _dyno(1, 2, State.CRASHED, release=2)
    crashed.meta, crashed.crashes = None, 2
    # A first release that crashes: nothing else serves, so it just crash-loops.
    assert not plan.plan_release_failed(want, [crashed])
    assert not _failed(plan.plan_release_failed(want, [crashed]))
    serving = _dyno(1, 1, State.UP, release=1)
    once = _dyno(2, 2, State.CRASHED, release=2)
    once.crashes = 1
    assert not plan.plan_release_failed(want, [serving, once])  # restarted once at once first
    actions = plan.plan_release_failed(want, [serving, crashed])
    assert actions and _failed(actions) == [2]


def test_server_stat() -> None:
    text = ("# pxname,svname,qcur,qmax,scur,smax,status,\n"
            "app_shop,web.1_10.0.0.2_5000,0,0,3,9,UP,\n"
            "app_shop,web.2_10.0.0.3_5000,1,1,0,2,MAINT,\n"
            "app_shop,BACKEND,0,0,3,9,UP,\n")
    assert parse_server_stat(text, "app_shop", "web.1_10.0.0.2_5000") == ("UP", 3)
    assert parse_server_stat(text, "app_shop", "web.2_10.0.0.3_5000") == ("MAINT", 1)
    assert parse_server_stat(text, "app_shop", "web.9_10.0.0.9_5000") is None
