"""Sandbox machine boot: spawn -> `systemctl is-system-running` = running, dynod READY.

Baseline, measured in the same run: the same machine with dynod.service masked, so the
difference is what dynod adds to a boot. Prints a table and writes JSON.

    .venv/bin/python -m benchmarks.sandbox_boot [-n 10] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from tests.sandbox.machine import Machine


def boots(n: int, mask: tuple[str, ...]) -> list[float]:
    times = []
    for _ in range(n):
        m = Machine(mask=mask)
        try:
            times.append(m.boot())
        finally:
            m.shutdown()
    return times


def summary(times: list[float]) -> dict[str, float]:
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
            "n": len(times)}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=10)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with_dynod = summary(boots(args.n, ()))
    baseline = summary(boots(args.n, ("dynod.service",)))
    ratio = with_dynod["median_s"] / baseline["median_s"]
    print(f"{'figure':<44} {'median':>8} {'min':>7} {'max':>7} {'n':>3}")
    for label, row in (("sandbox boot to running, dynod READY", with_dynod),
                       ("baseline: same machine, dynod masked", baseline)):
        print(f"{label:<44} {row['median_s']:>7.3f}s {row['min_s']:>6.3f}s "
              f"{row['max_s']:>6.3f}s {row['n']:>3}")
    print(f"ratio {ratio:.2f}x")
    if args.json:
        args.json.write_text(json.dumps({"sandbox_boot": with_dynod, "baseline": baseline,
                                         "ratio": ratio}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
