"""Failover in a three-machine cluster: a machine's runner killed (kill -9) until all
the app's web dynos answer on the others, beside the node lease's TTL (NODE_TTL: how
long a dead machine still looks alive), and the API on etcd beside SQLite in the same
run (benchmarks/store.py's figures).

The cluster is formed with dynoctl (cluster:init, cluster:join) on sandbox machines of
one test network, the app (tests/integration/cluster_app) pushed with git to node-a and
scaled to web=6. Each round kills the machine other than node-a that runs the most web
dynos and times, from the kill, until node-a's ``ps`` shows 6 web dynos up, none on the
dead machine, and node-a's router has reached all six. Then the dead machine is removed
(``cluster:remove --force``) and a new machine joins, so each round kills one of three
alive machines; a machine that joins gets dynos only when another dies (placement moves
nothing that runs), which is why the victim is the one with the most. The last round
kills placement's leader instead (with its dynos): another machine's dynod takes over
the leadership before it places them (node-a's router and ps stand in for the others'
while node-a lives; when node-a is the leader, another machine's do).

    .venv/bin/python -m benchmarks.failover [-n 5] [--json FILE]
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter

from benchmarks import store
from benchmarks.common import Figure, Summary, main
from dynod.model.cluster import NODE_TTL
from tests.integration.conftest import built_stack, on_network, stack_bind
from tests.integration.test_placement import (
    APP,
    answers,
    deploy,
    dynoctl,
    form,
    join,
    ps,
    spread,
    wait_for,
)
from tests.sandbox.machine import Machine


def web_dynos(a: Machine) -> dict[str, str]:
    """Each up web dyno's node, as node-a's ps shows them."""
    return {d["name"]: d["node"] for d in ps(a) if d["type"] == "web" and d["state"] == "up"}


def busiest(a: Machine, alive: dict[str, Machine]) -> str:
    """The machine of ``alive`` but node-a (``a``) that runs the most web dynos."""
    where = Counter(web_dynos(a).values())
    return max((name for name in alive if name != "node-a"),
               key=lambda name: where.get(name, 0))


def leader(a: Machine) -> str:
    return str(json.loads(dynoctl(a, "cluster", "--json"))["leader"])


def failover(a: Machine, alive: dict[str, Machine], dead: str, web: int) -> float:
    """Kill machine ``dead`` of ``alive``; seconds until all ``web`` dynos answer on the
    others through ``a``'s router (``a`` another machine)."""
    victim = alive.pop(dead)
    assert victim._proc is not None
    killed = time.monotonic()
    victim._proc.kill()
    victim._proc.wait(30)

    def answering() -> bool:
        now = web_dynos(a)
        return (len(now) == web and dead not in now.values()
                and set(answers(a, 4 * web)) == set(now))

    wait_for(f"{web} web dynos answering without {dead}", answering, 120)
    took = time.monotonic() - killed
    print(f"round: {dead} killed, {web} web dynos answering on the others in {took:.1f} s",
          flush=True)
    return took


def alive_in(a: Machine, name: str) -> None:
    wait_for(f"{name} alive", lambda: name in dynoctl(a, "cluster"), 120)


def rounds(n: int, web: int) -> list[float]:
    """``n`` rounds; the last (when there are several) kills the leader: placement's
    leader dies with the machine and another takes over first."""
    with on_network(3, [stack_bind(built_stack())]) as net:
        how = form(net.machines)
        alive = dict(zip(("node-a", "node-b", "node-c"), net.machines, strict=True))
        deploy(net.machines)
        a = net.machines[0]
        dynoctl(a, "ps:scale", "-a", APP, f"web={web}")
        wait_for(f"{web} web dynos up", lambda: sum(spread(ps(a), "web").values()) == web,
                 180)
        took = []
        for i in range(n - 1):
            dead = busiest(a, alive)
            took.append(failover(a, alive, dead, web))
            dynoctl(a, "cluster:remove", "--force", dead)
            name = f"node-{chr(ord('d') + i)}"
            alive[name] = net.add()
            join(alive[name], name, how)
            alive_in(a, name)
        dead = leader(a) if n > 1 else busiest(a, alive)
        print(f"last round: {dead} killed{' (the leader)' if n > 1 else ''}", flush=True)
        observer = a if dead != "node-a" else alive[busiest(a, alive)]
        took.append(failover(observer, alive, dead, web))
        return took


def collect(scale: float = 1.0, n: int | None = None) -> list[Figure]:
    """scale 1 = the full run (5 rounds, web=6), 0.1 = --quick, 0.01 = the smoke test."""
    n = n or max(1, round(5 * scale))
    web = 6 if scale >= 0.1 else 3
    took = rounds(n, web)
    return [Figure(f"failover: kill -> {web} web dynos answering",
                   Summary.of(took, "s"), "node lease TTL (NODE_TTL)",
                   Summary.of([float(NODE_TTL)], "s")),
            *store.collect(scale)]




if __name__ == "__main__":
    sys.exit(main(collect, rounds=True))
