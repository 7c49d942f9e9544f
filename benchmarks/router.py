"""The router: requests/s and p50/p99 latency with wrk (keep-alive), through HAProxy
and straight to the same web dyno, in the same run, inside one sandbox machine.

Goal (issues 6, 16): router with every request logged >= 0.85 x direct requests/s and
<= 0.3 ms added at p50. The dyno is a minimal asyncio responder (benchmarks/fast_app.py);
the router keeps its connections to it alive (bounded pools). The same run counts the
requests wrk had answered through the router against the app's router lines in journald
(equal, or the drops apps:info counted), and measures journald's CPU per entry (one
line each, and 1000 lines each as dynod's batches), dynod's CPU per router line, each
part's CPU per request on both sides (HAProxy, the app, dynod, journald, wrk) and how
often the router opened a new connection to the dyno.

On 2 cores the client, HAProxy, the app and the log path all compete for the same CPU:
the ratio is bounded by (wrk + app) / (wrk + app + HAProxy + logging) per request, so
read it beside the CPU figures.

    .venv/bin/python -m benchmarks.router [--scale 1] [--json FILE]
"""

from __future__ import annotations

import json
import re
import resource
import sys
import time
from pathlib import Path

from benchmarks.common import Figure, Summary, main
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

# Where the time goes: each part's CPU (user+system, from /proc) per request answered.
_PARTS = {"haproxy": "haproxy -", "app": "fast_app|server.py", "dynod": "/usr/bin/dynod",
          "journald": "systemd-journald"}
_TICKS = """
import json, os, re, sys
pats = json.loads(sys.argv[1]); out = {k: 0 for k in pats}
for pid in filter(str.isdigit, os.listdir("/proc")):
    if int(pid) == os.getpid():
        continue
    try:
        cmd = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\\0", b" ").decode()
        f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        continue
    for k, pat in pats.items():
        if re.search(pat, cmd):
            out[k] += int(f[11]) + int(f[12])
print(json.dumps({k: v * 1e9 / os.sysconf("SC_CLK_TCK") for k, v in out.items()}))
"""


def cpu_parts(m: Machine) -> dict[str, float]:
    """ns of CPU used so far by each part (processes alive now), and by wrk (this
    process's finished children: each wrk ran under nsenter, which waits for it)."""
    out = json.loads(m.exec(["python3", "-c", _TICKS, json.dumps(_PARTS)]).stdout)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    out["wrk"] = (usage.ru_utime + usage.ru_stime) * 1e9
    return {k: float(v) for k, v in out.items()}


def new_connections(m: Machine) -> int:
    """Connections HAProxy opened to shop's dynos so far (its stats: ``connect``)."""
    script = ("import socket;s=socket.socket(socket.AF_UNIX);"
              "s.connect('/run/dynod/router/admin.sock');s.sendall(b'show stat\\n');"
              "d=b''\nwhile (c:=s.recv(65536)): d+=c\nprint(d.decode())")
    lines = m.exec(["python3", "-c", script]).stdout.splitlines()
    head = lines[0][2:].split(",")
    rows = [dict(zip(head, x.split(","), strict=False)) for x in lines[1:] if x]
    return sum(int(r["connect"] or 0) for r in rows
               if r["pxname"] == "app_shop" and r["svname"] not in ("BACKEND", "FRONTEND"))


def per_request(spent: dict[str, float], requests: int) -> str:
    return ", ".join(f"{k} {v / max(requests, 1) / 1000:.1f}" for k, v in spent.items()
                     if v > 0)


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


Sample = tuple[float, float, float]


def side_by_side(m: Machine, direct_url: str, rounds: int, seconds: int,
                 ) -> tuple[list[Sample], list[Sample], dict[str, dict[str, float]],
                            dict[str, int]]:
    """wrk through the router and straight to the dyno, interleaved (so drift hits both
    alike): the samples of each side, each part's CPU (ns) and the requests answered."""
    routed: list[Sample] = []
    direct: list[Sample] = []
    spent = {"router": dict.fromkeys((*_PARTS, "wrk"), 0.0),
             "direct": dict.fromkeys((*_PARTS, "wrk"), 0.0)}
    served = {"router": 0, "direct": 0}
    for _ in range(rounds):
        for side in ("router", "direct"):
            before = cpu_parts(m)
            if side == "router":
                routed.append(wrk(m, "http://127.0.0.1/", seconds, f"Host: {HOST}"))
            else:
                direct.append(wrk(m, direct_url, seconds))
            after = cpu_parts(m)
            served[side] += ANSWERED[-1]
            for k in spent[side]:
                spent[side][k] += after[k] - before[k]
    return routed, direct, spent, served


def figures_of(routed: list[Sample], direct: list[Sample], what: str) -> list[Figure]:
    return [Figure(f"router {name} ({what})", Summary.of([r[i] for r in routed], unit),
                   "straight to the same dyno", Summary.of([d[i] for d in direct], unit))
            for i, (name, unit) in enumerate((("requests/s", "req/s"), ("p50 latency", "ms"),
                                              ("p99 latency", "ms")))]


def collect(scale: float = 1.0) -> list[Figure]:
    rounds = max(2, round(5 * scale))
    seconds = max(2, round(5 * scale))
    m = Machine(binds=[stack_bind(built_stack())])
    m.boot()
    try:
        deploy_echo(m, "shop", source=FAST_APP)
        dyno = all_up(m, "shop", 1)[0]
        direct_url = f"http://{dyno['address']}:5000/"
        ANSWERED.clear()
        dynod_before = cpu_ns(m, "dynod.service")
        wrk(m, "http://127.0.0.1/", 1, f"Host: {HOST}")  # warm up both paths
        through = ANSWERED[-1]
        wrk(m, direct_url, 1)
        connects = new_connections(m)
        routed, direct, spent, served = side_by_side(m, direct_url, rounds, seconds)
        connects = new_connections(m) - connects
        # The same with the app held to half a core on both sides (CPUQuota): the app,
        # not the machine's 2 cores, is then the limit, as it is for an app that does
        # real work per request; what the router adds is what is left to see.
        dyno_unit = m.exec(["systemctl", "list-units", "--no-legend", "--plain",
                            "dynod-shop-web*.service"]).stdout.split()[0]
        m.exec(["systemctl", "set-property", "--runtime", dyno_unit, "CPUQuota=50%"])
        capped = side_by_side(m, direct_url, rounds, seconds)
        through += served["router"] + capped[3]["router"]
        time.sleep(2)  # the reader's last flush
        dynod_ns = cpu_ns(m, "dynod.service") - dynod_before
        count = ("journalctl -o cat DYNOD_APP=shop DYNOD_DYNO=router | grep -c '{}' || true")
        logged = int(m.exec(["sh", "-c", count.format("^at=")]).stdout.strip() or 0)
        coded = int(m.exec(["sh", "-c", count.format("^at=[a-z]* code=")]).stdout.strip() or 0)
        info = m.exec(["dynoctl", "apps:info", "-a", "shop"]).stdout
        dropped = re.search(r"Router Lines Dropped:\s+(.*)", info)
        runs = 2 * rounds + 1
        print(f"requests answered through the router (as wrk counts them): {through}; router "
              f"lines in the journal: {logged} ({coded} with an H-code); counted drops: "
              f"{dropped.group(1) if dropped else '?'} (wrk leaves up to 16 requests in "
              f"flight uncounted at the end of each of its {runs} runs: <= {16 * runs})")
        for label, (sp, sv) in (("", (spent, served)), (", app at half a core",
                                                        (capped[2], capped[3]))):
            via = per_request(sp["router"], sv["router"])
            alone = per_request(sp["direct"], sv["direct"])
            print(f"CPU per request{label}, us: through the router: {via}; direct: {alone}")
        print(f"new connections to the dyno per request through the router: "
              f"{connects / max(served['router'], 1):.3f}")
        print(f"dynod CPU per router line (reader and all else dynod did): "
              f"{dynod_ns / max(logged, 1) / 1000:.2f} us")
        one = journald_us_per_line(m, 8000, 1)  # under journald's burst limit (10,000)
        batched = journald_us_per_line(m, 200000, 1000)
        print(f"journald CPU per line: {one:.2f} us one line per entry, {batched:.3f} us "
              "1000 lines per entry")
    finally:
        m.shutdown()
    return (figures_of(routed, direct, "wrk, keep-alive, 16 connections")
            + figures_of(capped[0], capped[1], "the same, app at half a core"))




if __name__ == "__main__":
    sys.exit(main(collect))
