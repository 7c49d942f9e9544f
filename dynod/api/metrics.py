"""``/metrics``: dynod's figures in the Prometheus text exposition format.

Opt-in (``metrics_listen = "127.0.0.1:9311"`` in dynod.toml). Served with
``prometheus_client`` (the Prometheus project's client, also Debian's
python3-prometheus-client). Dynos, builds and health are read when scraped; router
requests are counted as the router's log reader sees their lines (its ``observe``
callback), so a scrape never waits on HAProxy. Names follow Prometheus' conventions:
``dynod_`` prefix, base units (seconds, bytes), ``_total`` for counters.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, Counter, Histogram, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import ThreadingWSGIServer

from dynod.model.dynos import DynoInfo, DynoState
from dynod.router.log_lines import RouterLine
from dynod.store.protocol import Store

log = logging.getLogger(__name__)

# Request durations: Heroku's router gives up at 30 s (H12).
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass(frozen=True)
class DrainFigures:
    """One log drain's buffer and losses, for ``register_drains``."""

    app: str
    drain: str  # its token or id
    buffered: int  # lines waiting
    capacity: int
    dropped: int  # lines dropped since dynod started (counter)


class Metrics:
    """The registry behind /metrics. ``observe_router`` goes to the router's log reader;
    ``register_drains`` takes a callable returning every drain's figures (log drains fill
    it in); ``serve`` starts the HTTP endpoint."""

    def __init__(self, store: Store, *, dynos: Callable[[str], Sequence[DynoInfo]],
                 restarts: Callable[[], dict[tuple[str, str], int]],
                 started: float | None = None) -> None:
        self.store = store
        self.dynos = dynos
        self.restarts = restarts
        self.started = time.time() if started is None else started
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "dynod_router_requests", "Requests the router finished, by app, H-code "
            "(empty: none) and status", ["app", "code", "status"], registry=self.registry)
        self.duration = Histogram(
            "dynod_router_request_duration_seconds", "Time from the request's first byte "
            "to the response's last, at the router", ["app"], buckets=DURATION_BUCKETS,
            registry=self.registry)
        self.response_bytes = Counter(
            "dynod_router_response_bytes", "Bytes the router sent to clients",
            ["app"], registry=self.registry)
        self._drains: list[Callable[[], Sequence[DrainFigures]]] = []
        self.registry.register(_Collector(self))
        self._server: ThreadingWSGIServer | None = None

    def observe_router(self, lines: list[RouterLine]) -> None:
        for line in lines:
            self.requests.labels(line.app, line.code, line.status).inc()
            self.duration.labels(line.app).observe(line.total_ms / 1000)
            self.response_bytes.labels(line.app).inc(line.bytes)

    def register_drains(self, figures: Callable[[], Sequence[DrainFigures]]) -> None:
        """Export ``dynod_drain_buffer_lines``, ``dynod_drain_buffer_capacity_lines`` and
        ``dynod_drain_dropped_lines_total`` for what ``figures`` returns at each scrape."""
        self._drains.append(figures)

    def serve(self, host: str, port: int) -> None:
        """Listen now (raises OSError if the address is taken), answer in a thread."""
        server = make_server(host, port, make_wsgi_app(self.registry),
                             ThreadingWSGIServer, handler_class=_QuietHandler)
        self._server = server
        threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
        log.info("metrics on http://%s:%d/metrics", host, server.server_port)

    @property
    def port(self) -> int:
        return self._server.server_port if self._server is not None else 0

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # a scrape every 15 s is no news


_STATES = [s.value for s in DynoState]


class _Collector:
    """What is read at each scrape."""

    def __init__(self, metrics: Metrics) -> None:
        self.m = metrics

    def describe(self) -> list[Metric]:
        return []  # no scrape at registration

    def collect(self) -> Iterator[Metric]:
        m = self.m
        up = GaugeMetricFamily("dynod_up", "1 while dynod answers")
        up.add_metric([], 1)
        yield up
        uptime = GaugeMetricFamily("dynod_uptime_seconds", "Seconds since dynod started")
        uptime.add_metric([], time.time() - m.started)
        yield uptime
        store_ok = GaugeMetricFamily("dynod_store_ok", "1 if the state store answers a read")
        try:
            with m.store.read() as tx:
                apps = [a.name for a in tx.apps()]
                builds = {a: tx.builds(a, None) for a in apps}
            store_ok.add_metric([], 1)
        except Exception:
            log.exception("metrics: store")
            store_ok.add_metric([], 0)
            apps, builds = [], {}
        yield store_ok
        yield from self._dynos(apps)
        yield from _builds(builds)
        yield from self._drain_figures()

    def _dynos(self, apps: list[str]) -> Iterator[Metric]:
        labels = ["app", "dyno", "type"]
        cpu = CounterMetricFamily("dynod_dyno_cpu_seconds", "CPU time of the dyno's "
                                  "processes", labels=labels)
        memory = GaugeMetricFamily("dynod_dyno_memory_bytes", "Memory of the dyno's "
                                   "cgroup", labels=labels)
        quota = GaugeMetricFamily("dynod_dyno_memory_quota_bytes", "The dyno size's "
                                  "memory quota (R14 above it)", labels=labels)
        state = GaugeMetricFamily("dynod_dyno_state", "1 for the dyno's current state",
                                  labels=[*labels, "state"])
        restarts = CounterMetricFamily("dynod_dyno_restarts", "Times the dyno started "
                                       "again since dynod started", labels=["app", "dyno"])
        for app in apps:
            try:
                dynos = self.m.dynos(app)
            except Exception:  # an app destroyed meanwhile
                log.debug("metrics: dynos of %s", app, exc_info=True)
                continue
            for d in dynos:
                key = [app, d.name, d.process_type]
                if d.cpu_nsec is not None:
                    cpu.add_metric(key, d.cpu_nsec / 1e9)
                if d.memory_bytes is not None:
                    memory.add_metric(key, d.memory_bytes)
                quota.add_metric(key, d.memory_quota)
                for s in _STATES:
                    state.add_metric([*key, s], 1 if d.state.value == s else 0)
        for (app, dyno), n in sorted(self.m.restarts().items()):
            restarts.add_metric([app, dyno], max(n - 1, 0))
        yield from (cpu, memory, quota, state, restarts)

    def _drain_figures(self) -> Iterator[Metric]:
        if not self.m._drains:
            return
        labels = ["app", "drain"]
        buffered = GaugeMetricFamily("dynod_drain_buffer_lines", "Lines waiting for the "
                                     "drain", labels=labels)
        capacity = GaugeMetricFamily("dynod_drain_buffer_capacity_lines", "Lines the "
                                     "drain's buffer holds", labels=labels)
        dropped = CounterMetricFamily("dynod_drain_dropped_lines", "Lines dropped for the "
                                      "drain (L10)", labels=labels)
        for figures in self.m._drains:
            try:
                rows = figures()
            except Exception:
                log.exception("metrics: drains")
                continue
            for f in rows:
                buffered.add_metric([f.app, f.drain], f.buffered)
                capacity.add_metric([f.app, f.drain], f.capacity)
                dropped.add_metric([f.app, f.drain], f.dropped)
        yield from (buffered, capacity, dropped)


def _builds(builds: dict[str, list[Any]]) -> Iterator[Metric]:
    total = CounterMetricFamily("dynod_builds", "Builds, by app and status",
                                labels=["app", "status"])
    duration = GaugeMetricFamily("dynod_build_last_duration_seconds", "How long the "
                                 "app's last finished build took", labels=["app", "status"])
    seconds = CounterMetricFamily("dynod_build_duration_seconds", "Time spent in the "
                                  "app's finished builds", labels=["app"])
    for app, rows in sorted(builds.items()):
        counts: dict[str, int] = {}
        spent = 0.0
        last = None
        for b in rows:
            counts[b.status.value] = counts.get(b.status.value, 0) + 1
            if b.finished_at is not None:
                took = (b.finished_at - b.created_at).total_seconds()
                spent += took
                if last is None or b.finished_at > last[0]:
                    last = (b.finished_at, b.status.value, took)
        for status, n in sorted(counts.items()):
            total.add_metric([app, status], n)
        seconds.add_metric([app], spent)
        if last is not None:
            duration.add_metric([app, last[1]], last[2])
    yield from (total, duration, seconds)
