"""Heroku's ``log-runtime-metrics``: each dyno's memory and load in its app's stream.

Heroku (devcenter log-runtime-metrics): with the labs feature on, every running dyno's
stats are "inserted into the app's log stream ... at an approximate frequency of once
every 20 seconds", two lines from the platform (``heroku[web.1]``, here
``dynod[web.1]``), each ``source=web.1 dyno=heroku.<app>.<uuid>`` and then
``sample#load_avg_1m=2.46 sample#load_avg_5m=1.06 sample#load_avg_15m=0.99``, or
``sample#memory_total=21.00MB sample#memory_rss=21.22MB sample#memory_cache=0.00MB
sample#memory_swap=0.00MB sample#memory_pgpgin=348836pages
sample#memory_pgpgout=343403pages sample#memory_quota=512.00MB``.

The figures come from the dyno's cgroup (:mod:`dynod.system.cgroups`, v1 and v2).
memory_total is RSS and swap, cache not included (Heroku: "The R14 error is calculated
by total memory swap and rss"). The load average is the kernel's, over the dyno's
threads only: runnable (R) and uninterruptible (D) ones, sampled every 5 s (the
kernel's LOAD_FREQ) into exponentially decaying 1, 5 and 15 minute averages.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from dynod.errors import DynodError
from dynod.model.features import LOG_RUNTIME_METRICS
from dynod.runtime.dynos import cgroup_of, unit_of
from dynod.runtime.plan import Dyno, quota_of
from dynod.store.protocol import Store
from dynod.system import cgroups, journal, units
from dynod.system.loop import Loop

log = logging.getLogger(__name__)

SAMPLE_SECONDS = 5.0
EMIT_SECONDS = 20.0
_MB = 1024 * 1024
_NAMESPACE = uuid.UUID("5b1f3c9e-3f55-4d0a-9d3e-6c1f0b1d7a21")


@dataclass
class LoadAverage:
    """The kernel's calc_load: avg = avg * e + n * (1 - e), e = exp(-interval / period)."""

    m1: float = 0.0
    m5: float = 0.0
    m15: float = 0.0

    def update(self, runnable: int, interval: float = SAMPLE_SECONDS) -> None:
        self.m1 = _decay(self.m1, runnable, interval, 60.0)
        self.m5 = _decay(self.m5, runnable, interval, 300.0)
        self.m15 = _decay(self.m15, runnable, interval, 900.0)


def _decay(avg: float, n: int, interval: float, period: float) -> float:
    e = math.exp(-interval / period)
    return avg * e + n * (1.0 - e)


def dyno_id(app: str, unit: str, started_usec: int) -> str:
    """Heroku's ``dyno=heroku.<app id>.<uuid>``: one UUID per run of a dyno (the same
    ``source`` gets a new one when it restarts), stable across restarts of dynod."""
    return f"heroku.{app}.{uuid.uuid5(_NAMESPACE, f'{unit}@{started_usec}')}"


def _mb(n: int) -> str:
    return f"{n / _MB:.2f}MB"


def format_samples(source: str, dyno: str, memory: cgroups.MemoryStats, quota: int,
                   load: LoadAverage) -> tuple[str, str]:
    """The load line and the memory line, in Heroku's words and order."""
    head = f"source={source} dyno={dyno}"
    load_line = (f"{head} sample#load_avg_1m={load.m1:.2f} sample#load_avg_5m={load.m5:.2f} "
                 f"sample#load_avg_15m={load.m15:.2f}")
    memory_line = (f"{head} sample#memory_total={_mb(memory.rss + memory.swap)} "
                   f"sample#memory_rss={_mb(memory.rss)} "
                   f"sample#memory_cache={_mb(memory.cache)} "
                   f"sample#memory_swap={_mb(memory.swap)} "
                   f"sample#memory_pgpgin={memory.pgpgin}pages "
                   f"sample#memory_pgpgout={memory.pgpgout}pages "
                   f"sample#memory_quota={_mb(quota)}")
    return load_line, memory_line


def _main_started(unit: str) -> int | None:
    try:
        status = units.dyno_status(unit)
    except DynodError:
        return None
    return status.main_started_usec if status else None


class RuntimeMetrics(Loop):
    """Samples the dynos of apps with ``log-runtime-metrics`` every 5 s and writes their
    lines every 20 s, in its own thread. Reads the cgroups only: nothing a dyno or a
    request waits for."""

    name = "runtime-metrics"

    def __init__(self, store: Store, records: Callable[[], Sequence[Dyno]], *,
                 emit: Callable[[str, str, str], None] = journal.app_event,
                 started: Callable[[str], int | None] | None = None) -> None:
        super().__init__(SAMPLE_SECONDS)
        self.store = store
        self.records = records
        self.emit = emit
        self.started = started or _main_started
        self._loads: dict[str, LoadAverage] = {}
        self._ids: dict[tuple[str, float], str] = {}  # (unit, launched): a run
        self._ticks = 0

    def step(self) -> None:
        if self._ticks:  # the first sample a period after the start
            self.tick(emit=self._ticks % round(EMIT_SECONDS / SAMPLE_SECONDS) == 0)
        self._ticks += 1

    def _enabled_apps(self, apps: set[str]) -> set[str]:
        with self.store.read() as tx:
            return {a for a in apps if LOG_RUNTIME_METRICS in tx.features(a)}

    def tick(self, *, emit: bool) -> int:
        """One sample of every running dyno of an app with the feature; with ``emit``
        their lines too. Returns the number of dynos written about."""
        dynos = [d for d in self.records() if d.meta is not None and not d.stopping]
        enabled = self._enabled_apps({d.ref.app for d in dynos})
        dynos = [d for d in dynos if d.ref.app in enabled]
        live = {unit_of(d.ref) for d in dynos}
        for gone in set(self._loads) - live:
            self._loads.pop(gone, None)
        self._ids = {k: v for k, v in self._ids.items() if k[0] in live}
        written = 0
        for d in dynos:
            unit, cgroup = unit_of(d.ref), cgroup_of(d.ref)
            load = self._loads.setdefault(unit, LoadAverage())
            runnable = cgroups.runnable_tasks(cgroup)
            if runnable is not None:
                load.update(runnable)
            if not emit:
                continue
            memory = cgroups.memory_stats(cgroup)
            if memory is None:
                continue
            run = (unit, d.launched)
            if run not in self._ids:
                started = self.started(unit) or int(d.since * 1e6)
                self._ids[run] = dyno_id(d.ref.app, unit, started)
            for line in format_samples(d.ref.dyno, self._ids[run], memory,
                                       quota_of(d.size), load):
                self.emit(d.ref.app, d.ref.dyno, line)
            written += 1
        return written

