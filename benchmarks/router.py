"""The router: requests/s and p50/p99 latency with wrk (keep-alive), through HAProxy
and straight to the same web dyno, in the same run, inside one sandbox machine.

Goal (issues 6, 16): router with every request logged >= 0.85 x direct requests/s and
<= 0.3 ms added at p50. The dyno is a minimal asyncio responder (benchmarks/fast_app.py);
the router keeps its connections to it alive (bounded pools). The same run counts the
requests wrk had answered through the router against the app's router lines in journald
(equal, or the drops apps:info counted), and measures journald's CPU per entry (one
line each, and 1000 lines each as dynod's batches) and dynod's CPU per router line.

    .venv/bin/python -m benchmarks.router [--scale 1] [--json FILE]
"""

from __future__ import annotations

import argparse
import re
import sys
import time
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
    ANSWERED.append(int(re.search(r"(\d+) requests in", out).group(1)))  # type: ignore[union-attr]
    return parse_wrk(out)


ANSWERED: list[int] = []


def cpu_ns(m: Machine, unit: str) -> int:
    """The unit's CPU time: CPUUsageNSec (turning CPUAccounting on if it was off, as on a
    cgroup v1 host), else its main process's user+system time from /proc."""
    value = m.exec(["systemctl", "show", "-p", "CPUUsageNSec", "--value", unit]).stdout.strip()
    if not value.isdigit():
        m.exec(["systemctl", "set-property", "--runtime", unit, "CPUAccounting=yes"],
                check=False)
        value = m.exec(["systemctl", "show", "-p", "CPUUsageNSec", "--value",
                        unit]).stdout.strip()
    if value.isdigit():
        return int(value)
    pid = m.exec(["systemctl", "show", "-p", "MainPID", "--value", unit]).stdout.strip()
    fields = m.exec(["cat", f"/proc/{pid}/stat"]).stdout.rsplit(")", 1)[1].split()
    ticks = int(m.exec(["getconf", "CLK_TCK"]).stdout)
    return (int(fields[11]) + int(fields[12])) * 1_000_000_000 // ticks


_SEND = """
import socket, sys
n, per = int(sys.argv[1]), int(sys.argv[2])
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, 32, 1 << 22)
line = "at=info method=GET path=\\"/\\" host=bench request_id=0123456789 fwd=\\"127.0.0.1\\" " \
       "dyno=web.1 connect=0ms service=0ms status=200 bytes=120 protocol=http"
msg = "\\n".join([line] * per).encode()
import struct
entry = (b"MESSAGE\\n" + struct.pack("<Q", len(msg)) + msg + b"\\nDYNOD_APP=bench\\n")
for _ in range(n // per):
    s.sendto(entry, "/run/systemd/journal/socket")
"""


def journald_us_per_line(m: Machine, lines: int, per_entry: int) -> float:
    """journald's CPU per router line when lines come ``per_entry`` to an entry."""
    m.exec(["tee", "/tmp/jsend.py"], input=_SEND)
    before = cpu_ns(m, "systemd-journald.service")
    m.exec(["python3", "/tmp/jsend.py", str(lines), str(per_entry)], timeout=300)
    m.exec(["journalctl", "--sync"])
    return (cpu_ns(m, "systemd-journald.service") - before) / lines / 1000


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
        ANSWERED.clear()
        dynod_before = cpu_ns(m, "dynod.service")
        wrk(m, "http://127.0.0.1/", 1, f"Host: {HOST}")  # warm up both paths
        through = ANSWERED[-1]
        wrk(m, direct_url, 1)
        for _ in range(rounds):  # interleaved, so drift hits both alike
            routed.append(wrk(m, "http://127.0.0.1/", seconds, f"Host: {HOST}"))
            through += ANSWERED[-1]
            direct.append(wrk(m, direct_url, seconds))
        time.sleep(2)  # the reader's last flush
        dynod_ns = cpu_ns(m, "dynod.service") - dynod_before
        logged = int(m.exec(["sh", "-c", "journalctl -o cat DYNOD_APP=shop DYNOD_DYNO=router "
                             "| grep -c '^at=' || true"]).stdout.strip() or 0)
        info = m.exec(["dynoctl", "apps:info", "-a", "shop"]).stdout
        dropped = re.search(r"Router Lines Dropped:\s+(.*)", info)
        print(f"requests answered through the router: {through}; router lines in the "
              f"journal: {logged}; counted drops: {dropped.group(1) if dropped else '?'}")
        print(f"dynod CPU per router line (reader and all else dynod did): "
              f"{dynod_ns / max(logged, 1) / 1000:.2f} us")
        one = journald_us_per_line(m, 8000, 1)  # under journald's burst limit (10,000)
        batched = journald_us_per_line(m, 200000, 1000)
        print(f"journald CPU per line: {one:.2f} us one line per entry, {batched:.3f} us "
              "1000 lines per entry")
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
