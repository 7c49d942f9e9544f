"""Pure parts of issue 7: the daily cycle, health paths, release failure choice, and the
router's server status from ``show stat``."""

from __future__ import annotations

import time

import pytest

from dynod.control import releases
from dynod.router.admin_socket import parse_server_stat
from dynod.router.protocol import NullRouter
from dynod.runtime import supervisor
from dynod.runtime.dynos import DynoMeta, DynoRef
from dynod.runtime.supervisor import CYCLE, CYCLE_JITTER, Desired, Dyno, Reconciler, State
from dynod.system import journal


def _dyno(n: int, gen: int, state: State, release: int = 1) -> Dyno:
    meta = DynoMeta("shop", "web", n, gen, release, "x", "basic", f"10.0.{gen}.{n}", 5000)
    return Dyno(DynoRef("shop", "web", n, gen), meta, state, 0.0)


def test_cycle_is_due_after_a_day_plus_jitter() -> None:
    dues = [supervisor.cycle_due(1000.0) - 1000.0 for _ in range(200)]
    assert all(CYCLE <= d <= CYCLE + CYCLE_JITTER for d in dues)
    assert len(set(dues)) > 100  # jittered, so dynos do not all cycle at once


def test_a_dyno_past_its_cycle_rolls_the_app_out(monkeypatch: pytest.MonkeyPatch) -> None:
    r = Reconciler(None, None, NullRouter())  # type: ignore[arg-type]
    bumped: list[str] = []
    def bump(app: str) -> int:
        bumped.append(app)
        return 3

    monkeypatch.setattr(r, "bump_generation", bump)
    monkeypatch.setattr(r, "_event", lambda d, message: None)
    want = Desired("shop", 1, 2, "sha", 70000, {})
    young, old = _dyno(1, 2, State.UP), _dyno(2, 2, State.UP)
    young.cycle_at, old.cycle_at = time.time() + 60, time.time() + 60
    assert not r._cycle_due(want, [young, old]) and not bumped
    old.cycle_at = time.time() - 1
    assert r._cycle_due(want, [young, old]) and bumped == ["shop"]


def test_health_path_from_config() -> None:
    assert supervisor.health_path({"DYNO_HEALTHCHECK_PATH": "/health"}) == "/health"
    assert supervisor.health_path({"DYNO_HEALTHCHECK_PATH": "health"}) == ""
    assert supervisor.health_path({}) == ""


def test_release_failed_only_while_an_older_release_serves(
        monkeypatch: pytest.MonkeyPatch) -> None:
    r = Reconciler(None, None, NullRouter())  # type: ignore[arg-type]
    failed: list[int] = []
    monkeypatch.setattr(releases, "set_status",
                        lambda store, app, version, status: failed.append(version))
    monkeypatch.setattr(journal, "api_event", lambda app, message: None)
    monkeypatch.setattr(r, "bump_generation", lambda app: 3)
    monkeypatch.setattr(r, "_stop_many", lambda dynos, why: None)
    want = Desired("shop", 2, 2, "sha", 70000, {})
    crashed = _dyno(1, 2, State.CRASHED, release=2)
    crashed.meta, crashed.crashes = None, 2
    # A first release that crashes: nothing else serves, so it just crash-loops.
    assert not r._release_failed(want, [crashed]) and not failed
    serving = _dyno(1, 1, State.UP, release=1)
    once = _dyno(2, 2, State.CRASHED, release=2)
    once.crashes = 1
    assert not r._release_failed(want, [serving, once])  # restarted once at once first
    assert r._release_failed(want, [serving, crashed]) and failed == [2]


def test_server_stat() -> None:
    text = ("# pxname,svname,qcur,qmax,scur,smax,status,\n"
            "app_shop,web.1_10.0.0.2_5000,0,0,3,9,UP,\n"
            "app_shop,web.2_10.0.0.3_5000,1,1,0,2,MAINT,\n"
            "app_shop,BACKEND,0,0,3,9,UP,\n")
    assert parse_server_stat(text, "app_shop", "web.1_10.0.0.2_5000") == ("UP", 3)
    assert parse_server_stat(text, "app_shop", "web.2_10.0.0.3_5000") == ("MAINT", 1)
    assert parse_server_stat(text, "app_shop", "web.9_10.0.0.9_5000") is None
