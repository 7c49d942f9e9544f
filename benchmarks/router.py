"""The router: requests/s and p50/p99 latency with wrk (keep-alive), through HAProxy
and straight to the same web dyno, in the same run, inside one sandbox machine.

Goal (issue 6): router >= 0.85 x direct requests/s and <= 0.3 ms added at p50. The dyno
is a minimal asyncio responder (benchmarks/fast_app.py). Note the router opens a new
connection to the dyno per request (as Heroku's does) while wrk straight to the dyno keeps
its 16 connections, so a Python app's per-connection cost is part of the router's figure.

    .venv/bin/python -m benchmarks.router [--scale 1] [--json FILE]
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from benchmarks.common import Figure, Summary, write
from tests.integration.conftest import built_stack, stack_bind
from tests.integration.test_dynos import all_up
from tests.integration.test_router import deploy_echo
from tests.sandbox.machine import Machine

HOST = "shop.dynod.localhost"
FAST_APP = Path(__file__).with_name("fast_app.py")
_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def parse_wrk(text: str) -> tuple[float, float, float]:
    """(requests/s, p50 ms, p99 ms) from ``wrk --latency`` output."""
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))  # type: ignore[union-attr]
    lat = {}
    for pct, value, unit in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", text, re.M):
        lat[pct] = float(value) * _UNITS[unit]
    return rps, lat["50"], lat["99"]


def wrk(m: Machine, url: str, seconds: int, *headers: str) -> tuple[float, float, float]:
    argv = ["wrk", "--latency", "-t", "2", "-c", "16", "-d", f"{seconds}s"]
    for h in headers:
        argv += ["-H", h]
    out = m.exec([*argv, url], timeout=seconds + 60).stdout
    return parse_wrk(out)


def collect(scale: float = 1.0) -> list[Figure]:
    rounds = max(2, round(5 * scale))
    seconds = max(2, round(5 * scale))
    m = Machine(binds=[stack_bind(built_stack())])
    m.boot()
    try:
        deploy_echo(m, "shop", source=FAST_APP)
        dyno = all_up(m, "shop", 1)[0]
        direct_url = f"http://{dyno['address']}:5000/"
        routed: list[tuple[float, float, float]] = []
        direct: list[tuple[float, float, float]] = []
        wrk(m, "http://127.0.0.1/", 1, f"Host: {HOST}")  # warm up both paths
        wrk(m, direct_url, 1)
        for _ in range(rounds):  # interleaved, so drift hits both alike
            routed.append(wrk(m, "http://127.0.0.1/", seconds, f"Host: {HOST}"))
            direct.append(wrk(m, direct_url, seconds))
    finally:
        m.shutdown()
    figures = []
    for i, (name, unit) in enumerate((("requests/s", "req/s"), ("p50 latency", "ms"),
                                      ("p99 latency", "ms"))):
        figures.append(Figure(f"router {name} (wrk, keep-alive, 16 connections)",
                              Summary.of([r[i] for r in routed], unit),
                              "straight to the same dyno",
                              Summary.of([d[i] for d in direct], unit)))
    return figures


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    write(collect(args.scale), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
