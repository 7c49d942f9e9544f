"""/metrics: Prometheus' text format, router counters, drains' registration point."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from dynod.api.metrics import DrainFigures, Metrics
from dynod.errors import InvalidArgument
from dynod.model.dynos import DynoInfo, DynoState
from dynod.router.log_lines import router_line
from dynod.settings import listen_address, load_settings


class FakeStore:
    @contextmanager
    def read(self) -> Iterator[FakeStore]:
        yield self

    def apps(self) -> list[object]:
        return []


def samples(m: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    m.serve("127.0.0.1", 0)
    try:
        url = f"http://127.0.0.1:{m.port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as r:
            text = r.read().decode()
    finally:
        m.stop()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def test_router_lines_counted_by_code_and_status_and_drains_exported() -> None:
    web = DynoInfo(app="shop", name="web.1", process_type="web", state=DynoState.UP,
                   since=0.0, command="x", size="standard-1x", release=1, unit="u",
                   memory_bytes=1000, memory_quota=512, cpu_nsec=2_500_000_000)
    m = Metrics(FakeStore(), dynos=lambda app: [web],  # type: ignore[arg-type]
                restarts=lambda: {("shop", "web.1"): 3})
    ok = router_line("dynod-router1 shop - ---- 200 1 0 2 250 web.1 717 http "
                     'method=GET path="/" host=shop')
    h12 = router_line("dynod-router1 shop - sH-- 504 1 0 2 30000 web.1 0 http "
                      'method=GET path="/slow" host=shop')
    assert ok is not None and h12 is not None
    assert (h12.code, h12.status, h12.total_ms) == ("H12", "503", 30000)
    m.observe_router([ok, ok, h12])
    m.register_drains(lambda: [DrainFigures("shop", "d.1", 7, 1024, 2)])
    got = samples(m)
    app = (("app", "shop"),)
    assert got[("dynod_router_requests_total", (*app, ("code", ""), ("status", "200")))] == 2
    assert got[("dynod_router_requests_total", (*app, ("code", "H12"), ("status", "503")))] == 1
    assert got[("dynod_router_response_bytes_total", app)] == 2 * 717
    assert got[("dynod_router_request_duration_seconds_count", app)] == 3
    assert got[("dynod_router_request_duration_seconds_bucket", (*app, ("le", "0.25")))] == 2
    assert got[("dynod_up", ())] == 1
    assert got[("dynod_store_ok", ())] == 1
    assert got[("dynod_dyno_restarts_total", (*app, ("dyno", "web.1")))] == 2
    # No app in the store: no dyno rows; the drain's figures as the callable gave them.
    drain = (*app, ("drain", "d.1"))
    assert got[("dynod_drain_buffer_lines", drain)] == 7
    assert got[("dynod_drain_dropped_lines_total", drain)] == 2


def test_metrics_listen_setting(tmp_path: Path) -> None:
    conf = tmp_path / "dynod.toml"
    conf.write_text('metrics_listen = "127.0.0.1:9311"\n')
    assert listen_address(load_settings(conf).metrics_listen) == ("127.0.0.1", 9311)
    assert listen_address("[::1]:9311") == ("::1", 9311)
    conf.write_text('metrics_listen = "9311"\n')
    with pytest.raises(InvalidArgument, match=r'must be HOST:PORT, e\.g\. "127\.0\.0\.1:9311"'):
        load_settings(conf)
