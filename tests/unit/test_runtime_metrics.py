"""log-runtime-metrics: Heroku's sample lines from a dyno's cgroup (v1 and v2)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from dynod.model.dynos import DynoRef, DynoState
from dynod.runtime import metrics
from dynod.runtime.dynos import cgroup_of
from dynod.runtime.plan import Dyno
from dynod.system import cgroups


def test_lines_in_herokus_format() -> None:
    memory = cgroups.MemoryStats(rss=22_250_000, cache=1_048_576, swap=1_048_576,
                                 pgpgin=348836, pgpgout=343403)
    load = metrics.LoadAverage(2.456, 1.06, 0.994)
    assert metrics.format_samples("web.1", "heroku.shop.d97d0ea7", memory, 512 * 2**20,
                                  load) == (
        "source=web.1 dyno=heroku.shop.d97d0ea7 sample#load_avg_1m=2.46 "
        "sample#load_avg_5m=1.06 sample#load_avg_15m=0.99",
        "source=web.1 dyno=heroku.shop.d97d0ea7 sample#memory_total=22.22MB "
        "sample#memory_rss=21.22MB sample#memory_cache=1.00MB sample#memory_swap=1.00MB "
        "sample#memory_pgpgin=348836pages sample#memory_pgpgout=343403pages "
        "sample#memory_quota=512.00MB")


def test_load_average_decays_like_the_kernels() -> None:
    load = metrics.LoadAverage()
    for _ in range(12):  # one minute with one thread always runnable
        load.update(1)
    assert load.m1 == pytest.approx(1 - math.exp(-1), abs=1e-9)
    assert 0 < load.m15 < load.m5 < load.m1


def test_a_dyno_id_per_run() -> None:
    a = metrics.dyno_id("shop", "dynod-shop-web.1.service", 1)
    assert a.startswith("heroku.shop.") and len(a) == len("heroku.shop.") + 36
    assert a == metrics.dyno_id("shop", "dynod-shop-web.1.service", 1)
    assert a != metrics.dyno_id("shop", "dynod-shop-web.1.service", 2)


@contextmanager
def cgroup_root(root: Path) -> Iterator[None]:
    old, cgroups.CGROUP_ROOT = cgroups.CGROUP_ROOT, root
    try:
        yield
    finally:
        cgroups.CGROUP_ROOT = old


def test_memory_stats_v1_and_v2(tmp_path: Path) -> None:
    cg = Path("dynod.slice/dynod-shop.slice/u.service")
    v1 = tmp_path / "v1" / "memory" / cg
    v1.mkdir(parents=True)
    (v1 / "memory.stat").write_text("cache 5\nrss 6\ntotal_cache 4096\ntotal_rss 8192\n"
                                    "total_swap 0\ntotal_pgpgin 10\ntotal_pgpgout 3\n")
    with cgroup_root(tmp_path / "v1"):
        assert cgroups.memory_stats(cg) == cgroups.MemoryStats(8192, 4096, 0, 10, 3)
    v2 = tmp_path / "v2" / cg
    v2.mkdir(parents=True)
    (v2 / "memory.stat").write_text("anon 8192\nfile 4096\nkernel 100\n")
    (v2 / "memory.swap.current").write_text("2048\n")
    with cgroup_root(tmp_path / "v2"):
        assert cgroups.memory_stats(cg) == cgroups.MemoryStats(8192, 4096, 2048, 0, 0)
        assert cgroups.memory_stats(Path("nope")) is None


class FakeStore:
    def __init__(self, features: dict[str, set[str]]) -> None:
        self.features_of = features

    @contextmanager
    def read(self) -> Iterator[FakeStore]:
        yield self

    def features(self, app: str) -> set[str]:
        return self.features_of.get(app, set())


def test_only_apps_with_the_feature_get_lines_every_20_seconds(tmp_path: Path) -> None:
    dynos = [Dyno(DynoRef(app, "web", 1, 1), None, DynoState.UP, 0.0) for app in
             ("shop", "blog")]
    for d in dynos:
        d.meta = object()  # type: ignore[assignment]  # running
        d.size = "standard-1x"
        memory = tmp_path / "memory" / cgroup_of(d.ref)
        memory.mkdir(parents=True)
        (memory / "memory.stat").write_text("total_rss 1048576\ntotal_cache 0\n")
    store = FakeStore({"shop": {"log-runtime-metrics"}})
    lines: list[tuple[str, str, str]] = []
    sampler = metrics.RuntimeMetrics(store, lambda: dynos,  # type: ignore[arg-type]
                                     emit=lambda *x: lines.append(x),
                                     started=lambda unit: 1)
    with cgroup_root(tmp_path):
        assert sampler.tick(emit=False) == 0
        assert sampler.tick(emit=True) == 1
    assert [(app, dyno) for app, dyno, _ in lines] == [("shop", "web.1")] * 2
    assert "sample#memory_rss=1.00MB" in lines[1][2]
    assert "sample#memory_quota=512.00MB" in lines[1][2]
