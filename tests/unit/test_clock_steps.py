"""The wall clock stepped (issue 20, the fault matrix's clock case; the same steps
against the real daemon: tests/integration/test_faults_clock.py): release times stay in
order; the supervisor's timers (back-off, R10, the daily cycle) do not fire on a step."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

import pytest

from dynod.control import apps, config_vars, releases
from dynod.model.dynos import DynoMeta, DynoRef, DynoState
from dynod.model.events import EventBus
from dynod.model.formation import Process
from dynod.runtime import plan
from dynod.store.sqlite import SqliteStore


class _SteppedClock:
    """datetime with a ``now`` an operator can step."""

    offset = timedelta(0)

    @classmethod
    def now(cls, tz: object = None) -> datetime:
        return datetime.now(UTC) + cls.offset


def test_release_times_stay_in_order_across_clock_steps(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(releases, "datetime", _SteppedClock)
    store = SqliteStore.open(tmp_path / "state.db")
    events = EventBus()
    apps.create_app(store, events, "shop", "jane")
    for step in (timedelta(hours=1), timedelta(hours=-1), timedelta(hours=-2), timedelta(0)):
        _SteppedClock.offset = step
        config_vars.set_config(store, events, "shop", {"STEP": str(step)}, "jane")
    made = [r.created_at for r in reversed(releases.list_releases(store, "shop"))]
    assert len(made) == 5  # v1 (the app's first, empty) and the four
    assert all(a < b for a, b in pairwise(made)), made


def test_a_release_is_dated_just_after_the_previous_when_the_clock_is_behind() -> None:
    before = datetime(2026, 12, 2, 18, 0, tzinfo=UTC)
    assert releases.release_time(before, None) == before
    later = before + timedelta(seconds=5)
    assert releases.release_time(later, before) == later
    # An hour behind, or exactly at the previous time: a millisecond after it.
    for now in (before - timedelta(hours=1), before):
        assert releases.release_time(now, before) == before + timedelta(milliseconds=1)


def _up(n: int) -> plan.Dyno:
    meta = DynoMeta("shop", "web", n, 1, 1, "x", "basic", f"10.0.0.{n}", 5000)
    return plan.Dyno(DynoRef("shop", "web", n, 1), meta, DynoState.UP, 0.0)


@pytest.mark.parametrize("step", [3600.0, -3600.0, 28 * 3600.0])
def test_a_wall_clock_step_brings_no_daily_cycle(step: float) -> None:
    # The daily cycle runs on the monotonic clock: a day of uptime. On the wall clock, a
    # step of a day and more (NTP setting a machine that booted a day behind) made every
    # dyno due at once.
    want = plan.Desired("shop", 1, 1, "sha", 70000, {})
    started, wall = 500.0, 1_800_000_000.0
    dynos = [_up(1), _up(2)]
    for d in dynos:
        d.cycle_at = plan.cycle_due(started)
    stepped = plan.Observed(started + 60, wall + 60 + step)
    assert plan.plan_cycle(want, dynos, stepped) == []
    a_day_on = plan.Observed(started + plan.CYCLE + plan.CYCLE_JITTER, wall)
    assert plan.Cycle(dynos[0].ref) in plan.plan_cycle(want, dynos, a_day_on)


def test_a_wall_clock_step_brings_no_r10_and_no_early_restart() -> None:
    # A starting web dyno 10 s after launch, and a crashed one in its back-off, with the
    # wall clock stepped a day forwards: neither timer fires (both are monotonic).
    want = plan.Desired("shop", 1, 1, "sha", 70000, {},
                        processes={"web": Process("web", 2, "basic", "x")})
    booting = _up(1)
    booting.state, booting.launched = DynoState.STARTING, 1000.0
    crashed = plan.Dyno(DynoRef("shop", "web", 2, 1), None, DynoState.CRASHED, 0.0,
                        crashes=3, restart_at=1030.0)
    stepped = plan.Observed(1010.0, 1_800_000_000.0 + 28 * 3600)
    assert not [a for a in plan.plan_observed([booting], stepped)
                if isinstance(a, plan.BootTimeout)]
    assert not [a for a in plan.plan_app(want, [booting, crashed], stepped)
                if isinstance(a, plan.Start)]
