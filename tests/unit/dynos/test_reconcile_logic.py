"""Pure parts of dynos and reconcile: names, back-off, rollout choice, user records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dynod.model import dynos as model_dynos
from dynod.model.dynos import DynoMeta, DynoRef
from dynod.model.dynos import DynoState as State
from dynod.model.events import EventBus
from dynod.model.formation import Process
from dynod.router.protocol import Backend, NullRouter
from dynod.runtime import dynos, plan
from dynod.runtime.plan import Desired, Dyno, Observed, backoff
from dynod.runtime.supervisor import Supervisor
from dynod.system import users


def test_dyno_key_round_trips_and_names_the_unit() -> None:
    ref = DynoRef("my-shop", "long_worker", 12, 3)
    assert ref.key == "my-shop.long_worker.12.3"
    assert model_dynos.parse_key(ref.key) == ref
    assert dynos.unit_of(ref) == "dynod-my\\x2dshop-long_worker.12-3.service"
    assert ref.dyno == "long_worker.12"
    assert model_dynos.parse_key("shop-web.1") is None


def test_backoff_first_restart_at_once_then_grows_to_twenty_minutes() -> None:
    assert [backoff(n) for n in range(1, 6)] == [0.0, 2.0, 4.0, 8.0, 16.0]
    assert backoff(40) == 20 * 60.0


def test_desired_wants_current_generation_up_to_quantity() -> None:
    want = Desired("shop", 5, 2, "sha256:x", 70000, {}, {"web": Process("web", 2, "basic")})
    assert want.wants(DynoRef("shop", "web", 2, 2))
    assert not want.wants(DynoRef("shop", "web", 3, 2))
    assert not want.wants(DynoRef("shop", "web", 1, 1))
    assert not want.wants(DynoRef("shop", "worker", 1, 2))


def _dyno(n: int, gen: int, state: State, ptype: str = "web") -> Dyno:
    meta = DynoMeta("shop", ptype, n, gen, gen, "x", "basic", f"10.0.{gen}.{n}", 5000)
    return Dyno(DynoRef("shop", ptype, n, gen), meta, state, 0.0)


def _backend(d: Dyno) -> Backend:
    assert d.meta is not None
    return Backend(d.ref.dyno, d.meta.address, d.meta.port)


def test_rollout_stops_an_old_worker_once_its_replacement_settled() -> None:
    old = [_dyno(n, 1, State.UP, "worker") for n in (1, 2, 3)]
    new = [_dyno(1, 2, State.UP, "worker"), _dyno(2, 2, State.STARTING, "worker")]
    # worker.1 replaced and up; worker.2 still starting; worker.3 has no replacement.
    seen = Observed(0.0, 0.0)
    assert [d.ref.number for d in plan.rollout("shop", old, new, seen)] == [1, 3]


def test_rollout_stops_an_old_web_dyno_once_its_replacement_is_routed_and_ready() -> None:
    class Router(NullRouter):
        def __init__(self) -> None:
            super().__init__()
            self.not_ready: set[Backend] = set()

        def ready(self, app: str, backend: Backend) -> bool:
            return backend not in self.not_ready

    router = Router()
    r = Supervisor(None, None, router, lambda: None, EventBus())  # type: ignore[arg-type, return-value]
    old = [_dyno(n, 1, State.UP) for n in (1, 2, 3, 4)]
    new = [_dyno(1, 2, State.UP), _dyno(2, 2, State.UP), _dyno(3, 2, State.CRASHED)]

    def seen(routed: list[Backend]) -> Observed:
        """What a pass observes: the router's view and (asked of it) readiness."""
        view = {"shop": tuple(routed)}
        return Observed(0.0, 0.0, routed=view, ready=r._ready(old + new, view))

    # Up but not yet given to the router: nothing leaves but the one not wanted.
    assert [d.ref.number for d in plan.rollout("shop", old, new, seen([]))] == [4]
    routed = [_backend(d) for d in old + new[:2]]
    router.not_ready = {_backend(new[1])}  # the router has not seen web.2 up yet
    # web.1 goes; web.2 waits for the router; web.3's replacement crashed: it stays.
    assert [d.ref.number for d in plan.rollout("shop", old, new, seen(routed))] == [1, 4]
    router.not_ready = set()
    assert [d.ref.number for d in plan.rollout("shop", old, new, seen(routed))] == [1, 2, 4]


def test_user_records_for_nss_systemd(tmp_path: Path) -> None:
    users.ensure_user(70001, tmp_path)
    user = json.loads((tmp_path / "dynod-70001.user").read_text())
    assert (user["userName"], user["uid"], user["gid"]) == ("dynod-70001", 70001, 70001)
    assert json.loads((tmp_path / "70001.group").read_text())["gid"] == 70001
    users.ensure_user(70001, tmp_path)  # idempotent


def test_missing_dyno_init_names_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dynod.errors import NotFound  # noqa: PLC0415
    from dynod.system import mounts  # noqa: PLC0415

    monkeypatch.setattr(mounts, "PROJECT_INIT", tmp_path / "none")
    with pytest.raises(NotFound, match=r"build it with dynod/init/build\.sh"):
        mounts.find_init(tmp_path / "dyno-init")
