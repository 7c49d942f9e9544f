"""git push -> released for examples/flask: cold cache, warm cache (requirements.txt
changed, the cache kept), and a change that touches no dependency.

Runs inside a sandbox machine with the default stack (built once on the host, cached),
pushing with real git over real ssh to 127.0.0.1. Baseline in the same run: a plain
``git push`` of the same repository to a bare repository over the same ssh (the
transport floor: everything above it is the build and the release).

    .venv/bin/python -m benchmarks.builds [-n 3] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import Figure, Summary, write
from tests.sandbox.machine import PROJECT, Machine

SSH = ("ssh -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"
       " -o BatchMode=yes")
SRC = Path("/tmp/flask")


def sh(script: str, cwd: Path = Path("/tmp")) -> str:
    proc = subprocess.run(["bash", "-c", script], cwd=cwd, capture_output=True, text=True,
                          env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/root",
                               "GIT_SSH_COMMAND": SSH}, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{script}: {proc.stdout}{proc.stderr}")
    return proc.stdout + proc.stderr


def commit(path: str, text: str) -> None:
    sh(f"printf %s '{text}' >> {path} && git add -A && "
       "git -c user.email=b@e -c user.name=b commit -qm change", SRC)


def push_time(remote: str) -> float:
    t0 = time.perf_counter()
    out = sh(f"git push -q {remote} HEAD:main 2>&1", SRC)
    took = time.perf_counter() - t0
    if remote == "dynod" and "Released v" not in out:
        raise RuntimeError(out)
    return took


def setup_ssh() -> None:
    """A key that both dynod (the git user) and root's sshd (the bare baseline) take."""
    sh("ssh-keygen -q -t ed25519 -N '' -f /root/.ssh/id_ed25519 && "
       "dynoctl keys:add /root/.ssh/id_ed25519.pub && "
       "cat /root/.ssh/id_ed25519.pub >> /root/.ssh/authorized_keys")


def inner(n: int) -> dict[str, list[float]]:
    setup_ssh()
    sh(f"cp -r {PROJECT / 'examples/flask'} {SRC} && cd {SRC} && git init -q -b main && "
       "git add -A && git -c user.email=b@e -c user.name=b commit -qm init && "
       "dynoctl apps:create flask")
    out: dict[str, list[float]] = {"transport": [], "cold": [], "warm": [], "nodeps": []}
    for i in range(n):
        sh("rm -rf /tmp/bare.git && git init -q --bare /tmp/bare.git")
        out["transport"].append(push_time("root@127.0.0.1:/tmp/bare.git"))
        sh("dynoctl builds:cache:purge -a flask")
        commit("app.py", f"\n# cold {i}\n")
        out["cold"].append(push_time("dynod"))
        commit("requirements.txt", f"\n# warm {i}\n")
        out["warm"].append(push_time("dynod"))
        commit("app.py", f"\n# no dependency {i}\n")
        out["nodeps"].append(push_time("dynod"))
    return out


def collect(scale: float = 1.0, n: int | None = None) -> list[Figure]:
    """scale 1 = 3 rounds of each; anything smaller = 1 round."""
    from tests.integration.conftest import built_stack, stack_bind  # noqa: PLC0415

    n = n or max(1, round(3 * scale))
    with Machine(binds=[stack_bind(built_stack())]) as m:
        proc = m.run([str(PROJECT / ".venv/bin/python"), "-m", "benchmarks.builds", "--inner",
                      "-n", str(n)], check=True, timeout=3600)
    samples = json.loads(proc.stdout)
    base = Summary.of(samples["transport"], "s")
    floor = "git push to a bare repo, same ssh"
    return [
        Figure("flask push -> released, cold cache", Summary.of(samples["cold"], "s"),
               floor, base),
        Figure("flask push -> released, warm, reqs changed",
               Summary.of(samples["warm"], "s"), floor, base),
        Figure("flask push -> released, no dependency change",
               Summary.of(samples["nodeps"], "s"), floor, base),
    ]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        print(json.dumps(inner(args.n)))
        return 0
    write(collect(args.scale, args.n), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
