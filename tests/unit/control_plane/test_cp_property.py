"""Random request sequences against the servicers (hypothesis).

Invariants: no call ever ends UNKNOWN or INTERNAL; release versions strictly increase;
each release's config snapshot equals what Config.Get returns right after it, and still
equals it when read back at the end.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dynod.v1 import apps_pb2, config_pb2, formation_pb2, releases_pb2
from tests.unit.control_plane.harness import Api, serving

KEYS = st.sampled_from(["A", "B", "LONG_NAME", "PORT", "DYNOD_X", "1X", "a-b", ""])
VALUES = st.text(max_size=20)
TYPES = st.sampled_from(["web", "worker", "clock"])
SIZES = st.sampled_from(["basic", "Standard-2X", "performance-m", "huge", ""])

OPS = st.one_of(
    st.tuples(st.just("set"), st.dictionaries(KEYS, VALUES, max_size=3)),
    st.tuples(st.just("set_big"), st.integers(60_000, 70_000)),
    st.tuples(st.just("unset"), st.lists(KEYS, max_size=3)),
    st.tuples(st.just("rollback"), st.integers(0, 12)),
    st.tuples(st.just("deploy"), st.sets(TYPES, max_size=3)),
    st.tuples(st.just("scale"), st.lists(
        st.tuples(TYPES, st.integers(-3, 5), st.booleans(), SIZES), max_size=3)),
    st.tuples(st.just("resize"), st.dictionaries(TYPES, SIZES, max_size=2)),
    st.tuples(st.just("get"), st.integers(0, 12)),
)

_names = (f"app-{i}" for i in itertools.count())


@pytest.fixture(scope="module")
def shared_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    with serving(Path(tmp_path_factory.mktemp("prop"))) as client:
        yield client


def _do(api: Api, app: str, op: tuple[Any, ...]) -> releases_pb2.Release | None:
    kind, arg = op
    if kind == "set":
        return api.config.Set(config_pb2.SetConfigRequest(app=app, vars=arg)).release
    if kind == "set_big":
        return api.config.Set(config_pb2.SetConfigRequest(app=app, vars={"BIG": "x" * arg})
                              ).release
    if kind == "unset":
        return api.config.Unset(config_pb2.UnsetConfigRequest(app=app, keys=arg)).release
    if kind == "rollback":
        return api.releases.Rollback(releases_pb2.RollbackReleaseRequest(app=app, version=arg)
                                     ).release
    if kind == "deploy":
        version = api.deploy(app, {t: f"run {t}" for t in arg})
        return api.releases.Get(releases_pb2.GetReleaseRequest(app=app, version=version)).release
    if kind == "scale":
        updates = [formation_pb2.ScaleUpdate(type=t, size=s, **{"delta" if rel else "quantity": n})
                   for t, n, rel, s in arg]
        api.formation.Scale(formation_pb2.ScaleFormationRequest(app=app, updates=updates))
    elif kind == "resize":
        api.formation.Resize(formation_pb2.ResizeFormationRequest(app=app, updates=[
            formation_pb2.ResizeUpdate(type=t, size=s) for t, s in arg.items()]))
    else:
        api.releases.Get(releases_pb2.GetReleaseRequest(app=app, version=arg))
    return None


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(ops=st.lists(OPS, max_size=15))
def test_random_sequences(shared_api: Api, ops: list[tuple[Any, ...]]) -> None:
    api = shared_api
    app = next(_names)
    api.apps.Create(apps_pb2.CreateAppRequest(name=app))
    snapshots: dict[int, dict[str, str]] = {1: {}}
    last = 1
    for op in ops:
        try:
            release = _do(api, app, op)
        except grpc.RpcError as exc:
            code = exc.code()
            assert code not in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL), (
                op, exc.details())
            continue
        if release is None:
            continue
        assert release.version > last
        last = release.version
        now = api.config.Get(config_pb2.GetConfigRequest(app=app))
        assert (now.version, dict(now.vars)) == (release.version, dict(release.config))
        snapshots[release.version] = dict(release.config)
    listed = api.releases.List(releases_pb2.ListReleasesRequest(app=app)).releases
    versions = [r.version for r in listed]
    assert versions == sorted(set(versions), reverse=True)
    assert versions == list(range(last, 0, -1))
    for version, config in snapshots.items():
        got = api.releases.Get(releases_pb2.GetReleaseRequest(app=app, version=version))
        assert dict(got.release.config) == config
    for p in api.formation.Get(formation_pb2.GetFormationRequest(app=app)).processes:
        assert p.quantity >= 0
