"""The wall clock stepped an hour forwards and backwards (issue 20, the fault matrix's
clock case, at the process boundary: the sandbox machine shares CLOCK_REALTIME with the
host, and libfaketime breaks Python's monotonic sleeps, so dynod's clock is stepped
here, by replacing what it reads). Release times stay in order; the supervisor's timers
(back-off, R10, daily cycle) do not fire on a step."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dynod.control import apps, config_vars, releases
from dynod.model.events import EventBus
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
    assert made == sorted(made), made


def test_the_daily_cycle_is_a_day_and_more_away() -> None:
    # A step of an hour forwards cannot bring the daily restart due: it is at least 24 h
    # after the start on the wall clock (the back-off and R10 run on the monotonic clock).
    started = 1_000_000.0
    assert all(plan.cycle_due(started) - (started + 3600) > 23 * 3600 for _ in range(100))
