"""Lifecycle (issue 7): a reboot with 20 dynos, and a dynod restart.

- reboot -> every formation routed: a persistent sandbox with 4 apps (web=3, worker=2
  each, 20 dynos) is powered off and booted; the time from boot() until every app answers
  through the router with its dynos up. Baseline in the same run: booting the same kind of
  machine with no app (boot() until dynod answers).
- dynod restart -> API answers: ``systemctl restart dynod`` with those 20 dynos running,
  until ``dynoctl apps`` answers. Baseline: the same restart before any app existed.
- dyno restarts caused by a dynod restart (must be 0): dyno units whose main PID changed.

    .venv/bin/python -m benchmarks.lifecycle [--scale 0.1] [--json FILE]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.common import Figure, Summary, write

STACK = Path("/var/lib/dynod/stacks/debian-13")
CACHE = Path("/var/cache/dynod/test-state/stacks/debian-13")
APP = Path(__file__).resolve().parent.parent / "tests/integration/lifecycle_app.py"
APPS = ("alpha", "beta", "gamma", "delta")
FORMATION = {"web": 3, "worker": 2}


def wait(check: Callable[[], bool], timeout: float = 120.0, step: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"benchmark: timed out waiting for {check.__name__}")
        time.sleep(step)


def collect(scale: float = 1.0) -> list[Figure]:
    """scale 1: 5 reboots and 10 restarts; 0.1 (--quick): 1 and 2."""
    from tests.sandbox.machine import Machine  # noqa: PLC0415 - host side only

    reboots = max(1, round(5 * scale))
    restarts = max(2, round(10 * scale))
    with tempfile.TemporaryDirectory(prefix="dynod-bench-") as tmp:
        m = Machine(state_dir=Path(tmp) / "state", binds=[(str(CACHE), f"{STACK}:ro")])
        m.boot()
        try:
            def dynoctl(*argv: str) -> str:
                proc = m.run(["dynoctl", *argv], cwd="/tmp")
                if proc.returncode != 0:
                    raise SystemExit(f"dynoctl {' '.join(argv)}: {proc.stderr}")
                return proc.stdout

            def api_answers() -> bool:
                return m.exec(["dynoctl", "apps"], check=False).returncode == 0

            def restart() -> float:
                # systemd refuses a 6th start within 10 s (StartLimitBurst); reset it.
                m.exec(["systemctl", "reset-failed", "dynod"], check=False)
                t0 = time.monotonic()
                m.exec(["systemctl", "restart", "--no-block", "dynod"])
                time.sleep(0.05)
                wait(api_answers, step=0.01)
                return time.monotonic() - t0

            empty_restart = [restart() for _ in range(restarts)]
            m.exec(["sh", "-c", f"mkdir -p /tmp/s/app && cp {APP} /tmp/s/app/server.py && "
                                "echo 1 > /tmp/s/app/VERSION && "
                                "tar -C /tmp/s -czf /tmp/s.tgz ./app"])
            for app in APPS:
                dynoctl("apps:create", app)
                dynoctl("slugs:deploy", "-a", app, "/tmp/s.tgz", "--process-type",
                        "web=exec python3 -u server.py $PORT", "--process-type",
                        "worker=exec sleep infinity")
                dynoctl("ps:scale", "-a", app, *(f"{k}={v}" for k, v in FORMATION.items()))

            def pids() -> dict[str, str]:
                out = m.exec(["sh", "-c", "for u in $(systemctl list-units --plain "
                              "--no-legend 'dynod-*-*.service' | cut -d' ' -f1); do echo $u "
                              "$(systemctl show -p MainPID --value $u); done"]).stdout
                return dict(line.split() for line in out.splitlines() if line.strip())

            def all_routed() -> bool:
                for app in APPS:
                    got = m.exec(["curl", "-s", "--max-time", "2", "-H",
                                  f"Host: {app}.dynod.localhost", "http://127.0.0.1/"],
                                 check=False).stdout
                    if not got.startswith("1 "):
                        return False
                return len(pids()) == len(APPS) * sum(FORMATION.values())

            wait(all_routed)
            before = pids()
            busy_restart = [restart() for _ in range(restarts)]
            wait(all_routed)
            after = pids()
            restarted = sum(1 for unit, pid in before.items() if after.get(unit) != pid)
            routed = []
            for _ in range(reboots):
                m.shutdown()
                t0 = time.monotonic()
                m.boot()
                wait(all_routed, step=0.02)
                routed.append(time.monotonic() - t0)
        finally:
            m.shutdown()
        plain = []
        for _ in range(reboots):
            p = Machine(binds=[(str(CACHE), f"{STACK}:ro")])
            plain.append(p.boot())
            p.shutdown()
    dynos = len(APPS) * sum(FORMATION.values())
    return [
        Figure(f"reboot -> {dynos} dynos of {len(APPS)} apps routed", Summary.of(routed, "s"),
               "plain sandbox boot (no app)", Summary.of(plain, "s")),
        Figure(f"dynod restart -> API answers ({dynos} dynos)",
               Summary.of(busy_restart, "s"), "dynod restart, no app",
               Summary.of(empty_restart, "s")),
        Figure(f"dyno restarts caused by {restarts} dynod restarts",
               Summary.of([float(restarted)], ""), "allowed", Summary.of([0.0], "")),
    ]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--quick", action="store_true", help="--scale 0.1")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    write(collect(0.1 if args.quick else args.scale), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
