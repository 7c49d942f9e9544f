"""Sandbox machine boot: spawn -> `systemctl is-system-running` = running, dynod READY.

Baseline, measured in the same run: the same machine with dynod.service masked, so the
difference is what dynod adds to a boot.

    .venv/bin/python -m benchmarks.sandbox_boot [-n 10] [--json FILE]
"""

from __future__ import annotations

import sys

from benchmarks.common import Figure, Summary, main
from tests.sandbox.machine import Machine


def boots(n: int, mask: tuple[str, ...]) -> list[float]:
    times = []
    for _ in range(n):
        m = Machine(mask=mask)
        try:
            times.append(m.boot() * 1000)
        finally:
            m.shutdown()
    return times


def collect(scale: float = 1.0, n: int | None = None) -> list[Figure]:
    """scale 1 = the full run, 0.1 = --quick, 0.01 = the suite's smoke test."""
    n = n or max(2, round(10 * scale))
    with_dynod = Summary.of(boots(n, ()), "ms")
    baseline = Summary.of(boots(n, ("dynod.service",)), "ms")
    return [Figure("sandbox boot to running, dynod READY", with_dynod,
                   "same machine, dynod masked", baseline)]




if __name__ == "__main__":
    sys.exit(main(collect, rounds=True))
