"""Dynos: start latency, first HTTP 200, scaling 0 -> 50, memory per idle dyno.

Each figure beside a bare transient unit measured in the same run, in the same sandbox
machine (systemd 252, the default stack bound read-only, cgroup v1 hybrid here):

* dyno start -> exec: dynod's "Starting process" event -> the unit's ExecMainStart
  (rootfs overlay, netns, StartTransientUnit); baseline ``systemd-run -p
  RootDirectory=<stack> sleep infinity``, call -> ExecMainStart.
* dyno start -> first HTTP 200 of a minimal app (python3 -m http.server) on the
  dyno's address; baseline: systemd-run of the same command on the stack, first 200.
* ps:scale web=0 -> N until every dyno answers; baseline: N bare units, same command.
* memory per idle dyno (``sleep infinity``), incl. its netns: the machine's root memory
  cgroup before/after N dynos, divided by N; baseline: N bare units.

Second baseline, same run, same machine, same root file system: Debian's podman with
crun (``podman run --rootfs <stack>:O``, an overlay per container like a dyno's), as
../shared/reference/baseline-podman.md describes: start, first HTTP 200 on a published
port, N containers until all answer, memory per idle container without a network.
``benchmarks/run`` installs podman on the host (the machines see the host's /) if missing.

    .venv/bin/python -m benchmarks.dynos [--quick] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from benchmarks.common import Figure, Summary, write

PROJECT = Path(__file__).resolve().parents[1]
STACK = Path("/var/lib/dynod/stacks/debian-13")
CACHE = Path("/var/cache/dynod/test-state/stacks/debian-13")
HTTP_CMD = "exec python3 -m http.server $PORT"
DYNO_DIRS = Path("/run/dynod/dynos")
MEM_ROOT = Path("/sys/fs/cgroup/memory/memory.usage_in_bytes")
PODMAN_STORAGE = Path("/var/tmp/dynod-bench-containers")


def sh(*argv: str, check: bool = True) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=check).stdout


def dynoctl(*args: str) -> str:
    return sh("dynoctl", *args)


def ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=0.5) as resp:  # noqa: S310 - http only
            return bool(resp.status == 200)
    except OSError:
        return False


def wait(check: object, timeout: float = 120.0, step: float = 0.005) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(step)
    raise TimeoutError("benchmark step timed out")


def ps() -> list[dict[str, object]]:
    return list(json.loads(dynoctl("ps", "-a", "bench", "--json")))


def monotonic_us(unit: str) -> int:
    return int(sh("systemctl", "show", "-p", "ExecMainStartTimestampMonotonic", "--value",
                  unit).strip() or 0)


def event_monotonic_us(message: str, since_us: int) -> int:
    out = sh("journalctl", "--no-pager", "-o", "json", "DYNOD_APP=bench",
             "DYNOD_SOURCE=dynod")
    times = [int(e["__MONOTONIC_TIMESTAMP"]) for e in map(json.loads, out.splitlines())
             if str(e["MESSAGE"]).startswith(message)]
    later = [t for t in times if t >= since_us]
    return later[0] if later else 0


def now_us() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def scale(n: int) -> None:
    dynoctl("ps:scale", "-a", "bench", f"web={n}")


def wait_down() -> None:
    wait(lambda: not ps(), timeout=60, step=0.05)


# --- inside the machine ----------------------------------------------------------


def deploy() -> None:
    app = Path("/tmp/bench/app")
    app.mkdir(parents=True, exist_ok=True)
    (app / "index.html").write_text("ok\n")
    sh("tar", "-C", "/tmp/bench", "-czf", "/tmp/bench.tgz", "./app")
    dynoctl("apps:create", "bench")
    dynoctl("slugs:deploy", "-a", "bench", "/tmp/bench.tgz", "--process-type",
            f"web={HTTP_CMD}", "--process-type", "idle=exec sleep infinity")
    wait(lambda: all(d["state"] == "up" for d in ps()) and len(ps()) == 1, step=0.05)
    scale(0)
    wait_down()


def dyno_start_and_http(n: int) -> tuple[list[float], list[float]]:
    starts, https = [], []
    for _ in range(n):
        t0 = now_us()
        scale(1)
        wait(lambda: bool(list(DYNO_DIRS.glob("bench.web.1.*/dyno.json"))))
        meta = next(DYNO_DIRS.glob("bench.web.1.*/dyno.json"))
        address = json.loads(meta.read_text())["address"]
        wait(lambda a=address: ok(f"http://{a}:5000/"))
        answered = now_us()
        unit = str(ps()[0]["unit"])
        # From dynod's "Starting process" (not from dynoctl's call: its Python start
        # is the client's cost, not the dyno's).
        event = event_monotonic_us("Starting process with command", t0)
        https.append((answered - event) / 1000)
        starts.append((monotonic_us(unit) - event) / 1000)
        scale(0)
        wait_down()
    return starts, https


def bare_start_and_http(n: int) -> tuple[list[float], list[float]]:
    starts, https = [], []
    for i in range(n):
        unit = f"bench-bare-{i}.service"
        t0 = now_us()
        sh("systemd-run", "--quiet", "--collect", "--service-type=exec", f"--unit={unit}",
           f"--property=RootDirectory={STACK}", "/usr/bin/sleep", "infinity")
        starts.append((monotonic_us(unit) - t0) / 1000)
        sh("systemctl", "stop", unit)
        port = 18000 + i
        t0 = now_us()
        sh("systemd-run", "--quiet", "--collect", "--service-type=exec",
           f"--unit=bench-http-{i}", "--property=WorkingDirectory=/",
           f"--property=RootDirectory={STACK}", "/usr/bin/python3", "-m", "http.server",
           str(port))
        wait(lambda p=port: ok(f"http://127.0.0.1:{p}/"))
        https.append((now_us() - t0) / 1000)
        sh("systemctl", "stop", f"bench-http-{i}")
    return starts, https


def web_addresses() -> set[str]:
    """The addresses of the started web dynos, from their dyno.json (no dynoctl: a ps
    every 100 ms would take the CPU the booting dynos need)."""
    out = set()
    for meta in DYNO_DIRS.glob("bench.web.*/dyno.json"):
        try:
            out.add(str(json.loads(meta.read_text())["address"]))
        except (OSError, ValueError):
            continue
    return out


def dyno_scale(count: int) -> float:
    t0 = time.perf_counter()
    scale(count)
    answered: set[str] = set()

    def all_answer() -> bool:
        for address in web_addresses() - answered:
            if ok(f"http://{address}:5000/"):
                answered.add(address)
        return len(answered) == count

    wait(all_answer, step=0.02, timeout=600)
    took = time.perf_counter() - t0
    scale(0)
    wait_down()
    return took


def bare_scale(count: int) -> float:
    t0 = time.perf_counter()
    for i in range(count):
        sh("systemd-run", "--quiet", "--collect", "--service-type=exec",
           f"--unit=bench-scale-{i}", "--slice=benchbare.slice",
           f"--property=RootDirectory={STACK}", "/usr/bin/python3", "-m", "http.server",
           str(19000 + i))
    wait(lambda: all(ok(f"http://127.0.0.1:{19000 + i}/") for i in range(count)), step=0.05)
    took = time.perf_counter() - t0
    sh("systemctl", "stop", "benchbare.slice")
    return took


def settle_memory() -> int:
    time.sleep(3)
    return int(MEM_ROOT.read_text())


def dyno_memory(count: int) -> float:
    before = settle_memory()
    dynoctl("ps:scale", "-a", "bench", f"idle={count}")
    wait(lambda: len(ps()) == count and all(d["state"] == "up" for d in ps()), step=0.1,
         timeout=600)
    after = settle_memory()
    dynoctl("ps:scale", "-a", "bench", "idle=0")
    wait_down()
    return (after - before) / count / (1024 * 1024)


def bare_memory(count: int) -> float:
    before = settle_memory()
    for i in range(count):
        sh("systemd-run", "--quiet", "--collect", "--service-type=exec",
           f"--unit=bench-idle-{i}", "--slice=benchidle.slice",
           f"--property=RootDirectory={STACK}", "/usr/bin/sleep", "infinity")
    after = settle_memory()
    sh("systemctl", "stop", "benchidle.slice")
    return (after - before) / count / (1024 * 1024)


# --- podman (Debian's, crun), same root file system, same machine --------------------

PODMAN = ["podman", "--runtime", "crun"]
ROOTFS = f"{STACK}:O"  # an overlay of the stack per container, like a dyno's


def podman_start_and_http(n: int) -> tuple[list[float], list[float]]:
    """``podman run -d`` until it returns (the container runs), and until the first
    HTTP 200 of the same http.server published on a loopback port."""
    starts, https = [], []
    for i in range(n):
        t0 = time.perf_counter()
        sh(*PODMAN, "run", "-d", "--name", f"ps-{i}", "--network", "none", "--rootfs",
           ROOTFS, "/usr/bin/sleep", "infinity")
        starts.append((time.perf_counter() - t0) * 1000)
        sh(*PODMAN, "rm", "-f", "-t", "0", f"ps-{i}")
        port = 20000 + i
        t0 = time.perf_counter()
        sh(*PODMAN, "run", "-d", "--name", f"ph-{i}", "-p", f"127.0.0.1:{port}:8000",
           "--workdir", "/", "--rootfs", ROOTFS, "/usr/bin/python3", "-m", "http.server",
           "8000")
        wait(lambda p=port: ok(f"http://127.0.0.1:{p}/"))
        https.append((time.perf_counter() - t0) * 1000)
        sh(*PODMAN, "rm", "-f", "-t", "0", f"ph-{i}")
    return starts, https


def podman_scale(count: int) -> float:
    """``count`` containers of the same http.server started one after another (as
    ``ps:scale`` does), until every one answers on its published port."""
    t0 = time.perf_counter()
    names = [f"pc-{i}" for i in range(count)]
    for i, name in enumerate(names):
        sh(*PODMAN, "run", "-d", "--name", name, "-p", f"127.0.0.1:{21000 + i}:8000",
           "--workdir", "/", "--rootfs", ROOTFS, "/usr/bin/python3", "-m", "http.server",
           "8000")
    wait(lambda: all(ok(f"http://127.0.0.1:{21000 + i}/") for i in range(count)), step=0.05)
    took = time.perf_counter() - t0
    sh(*PODMAN, "rm", "-f", "-t", "0", *names)
    return took


def podman_memory(count: int) -> float:
    before = settle_memory()
    names = [f"pm-{i}" for i in range(count)]
    for name in names:
        sh(*PODMAN, "run", "-d", "--name", name, "--network", "none", "--rootfs", ROOTFS,
           "/usr/bin/sleep", "infinity")
    after = settle_memory()
    sh(*PODMAN, "rm", "-f", "-t", "0", *names)
    return (after - before) / count / (1024 * 1024)


def sizes(scale: float) -> tuple[int, int, int]:
    """(starts, dynos scaled to, rounds) for suite scale 1 (full), 0.1 (quick), 0.01."""
    if scale >= 1:
        return 15, 50, 3
    if scale >= 0.1:
        return 3, 10, 1
    return 1, 2, 1


def inside(scale: float) -> dict[str, object]:
    n, count, rounds = sizes(scale)
    deploy()
    d_start, d_http = dyno_start_and_http(n)
    b_start, b_http = bare_start_and_http(n)
    d_scale = [dyno_scale(count) for _ in range(rounds)]
    b_scale = [bare_scale(count) for _ in range(rounds)]
    d_mem = [dyno_memory(count) for _ in range(rounds)]
    b_mem = [bare_memory(count) for _ in range(rounds)]
    result: dict[str, object] = {
        "count": count, "d_start": d_start, "b_start": b_start, "d_http": d_http,
        "b_http": b_http, "d_scale": d_scale, "b_scale": b_scale, "d_mem": d_mem,
        "b_mem": b_mem, "podman": shutil.which("podman") is not None}
    if result["podman"]:
        result["p_start"], result["p_http"] = podman_start_and_http(n)
        result["p_scale"] = [podman_scale(count) for _ in range(rounds)]
        result["p_mem"] = [podman_memory(count) for _ in range(rounds)]
    return result


# --- on the host -----------------------------------------------------------------


_LAST: dict[str, Any] = {}


def collect(scale: float = 1.0) -> list[Figure]:
    """The suite's entry point (benchmarks/suite.py): one sandbox machine, every figure."""
    from tests.sandbox.machine import Machine  # noqa: PLC0415 - host side only

    # Podman's storage must be on a real file system (overlay upper dirs), like dynod's.
    PODMAN_STORAGE.mkdir(parents=True, exist_ok=True)
    m = Machine(binds=[(str(CACHE), f"{STACK}:ro"),
                       (str(PODMAN_STORAGE), "/var/lib/containers")])
    m.boot()
    try:
        proc = m.run([str(PROJECT / ".venv/bin/python"), "-m", "benchmarks.dynos", "--inside",
                      "--scale", str(scale)], cwd=str(PROJECT), timeout=3600)
        if proc.returncode != 0:
            raise SystemExit(f"benchmark failed inside the machine:\n{proc.stderr}")
        r = json.loads(proc.stdout.strip().splitlines()[-1])
    finally:
        m.shutdown()
    _LAST.clear()
    _LAST.update(r)
    count = r["count"]
    figures = [
        Figure("dyno start -> exec (rootfs, netns, unit)", Summary.of(r["d_start"], "ms"),
               "systemd-run RootDirectory -> exec", Summary.of(r["b_start"], "ms")),
        Figure("dyno start -> first HTTP 200", Summary.of(r["d_http"], "ms"),
               "systemd-run http.server -> first 200", Summary.of(r["b_http"], "ms")),
        Figure(f"ps:scale web=0->{count} -> all answer", Summary.of(r["d_scale"], "s"),
               f"{count} systemd-run http.server", Summary.of(r["b_scale"], "s")),
        Figure("memory per idle dyno (root cgroup)", Summary.of(r["d_mem"], "Mi"),
               "per idle systemd-run unit", Summary.of(r["b_mem"], "Mi")),
    ]
    if r.get("podman"):
        figures += [
            Figure("dyno start -> exec (rootfs, netns, unit)", Summary.of(r["d_start"], "ms"),
                   "podman run -d (crun), --network none", Summary.of(r["p_start"], "ms")),
            Figure("dyno start -> first HTTP 200", Summary.of(r["d_http"], "ms"),
                   "podman run -p (crun) -> first 200", Summary.of(r["p_http"], "ms")),
            Figure(f"ps:scale web=0->{count} -> all answer", Summary.of(r["d_scale"], "s"),
                   f"{count} podman run -p http.server", Summary.of(r["p_scale"], "s")),
            Figure("memory per idle dyno (root cgroup)", Summary.of(r["d_mem"], "Mi"),
                   "per idle podman container, no net", Summary.of(r["p_mem"], "Mi")),
        ]
    return figures


def chart_samples() -> dict[str, list[float]]:
    """Start -> exec samples of the last collect(), for the suite's chart."""
    samples = {"dyno start -> exec": list(_LAST.get("d_start", [])),
               "systemd-run -> exec": list(_LAST.get("b_start", [])),
               "podman run -d (crun)": list(_LAST.get("p_start", [])),
               "dyno -> first HTTP 200": list(_LAST.get("d_http", [])),
               "podman -p -> first HTTP 200": list(_LAST.get("p_http", []))}
    return {k: v for k, v in samples.items() if v}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="a tenth of the samples")
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    scale = 0.1 if args.quick else args.scale
    if args.inside:
        print(json.dumps(inside(scale)))
        return 0
    figures = collect(scale)
    write(figures, args.json)
    if not _LAST.get("podman"):
        print("podman (crun): not installed (benchmarks/run installs it); its figures from "
              "shared/reference/baseline-podman.md (same VM): start 134 ms, first HTTP 200 "
              "239 ms, ~1.45 MiB per idle container without a network")
    return 0


if __name__ == "__main__":
    sys.exit(main())
