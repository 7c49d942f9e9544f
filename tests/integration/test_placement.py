"""Placement across three sandbox machines made a cluster with dynoctl (cluster:init,
cluster:join): replicas spread, a dead machine's dynos come back on the others, a
machine cut off from etcd stops its dynos after its lease, and the cluster's memory
bounds ps:scale. One cluster for the module; the tests run in order on it.

The app arrives as a user's would: a ``git push`` to node-a, which builds it; node-b and
node-c fetch its slug from node-a when they start their dynos. Its web process answers
with its dyno's name and address, so a request through any machine's router shows
which dyno, on which machine, answered."""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import cluster, stack_bind
from tests.integration.test_builds import push, setup_push
from tests.integration.test_lifecycle import Load
from tests.sandbox.machine import Machine

# make test runs each module on one worker (--dist loadfile): its tests share its cluster.
pytestmark = pytest.mark.integration

APP = "shop"
HOST = f"{APP}.dynod.localhost"
NAMES = ("node-a", "node-b", "node-c")
# Its Procfile's worker says every 0.2 s that it runs, with a wall-clock time; the
# journal it lands in is its node's: what shows whether worker.1 ever ran twice at once.
SOURCE = Path(__file__).with_name("cluster_app")


def dynoctl(m: Machine, *args: str, ok: bool = True) -> str:
    proc = m.run(["dynoctl", *args], cwd="/tmp", timeout=300)
    if ok:
        assert proc.returncode == 0, f"{m.name}: dynoctl {' '.join(args)}: {proc.stderr}"
    return proc.stdout + proc.stderr


def wait_for(what: str, check: Callable[[], object], timeout: float = 60.0) -> object:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except AssertionError as exc:
            last = str(exc)
        else:
            if last:
                return last
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def ps(m: Machine) -> list[dict[str, str]]:
    return list(json.loads(dynoctl(m, "ps", "-a", APP, "--json")))


def spread(dynos: list[dict[str, str]], ptype: str) -> dict[str, int]:
    return dict(Counter(d.get("node", "") for d in dynos
                        if d["type"] == ptype and d["state"] == "up"))


def form(machines: list[Machine]) -> tuple[str, str, str]:
    """cluster:init on the first machine, cluster:join on the others: node-a, node-b,
    ... The join command's address, token and CA hash (the token lasts: more may join)."""
    a = machines[0]
    out = dynoctl(a, "cluster:init", "--name", "node-a", "--address", a.test_address)
    found = re.search(r"dynoctl cluster:join (\S+) --token (\S+) --ca-hash (\S+)", out)
    assert found, out
    how = (found[1], found[2], found[3])
    for m, name in zip(machines[1:], NAMES[1:], strict=False):
        join(m, name, how)
    wait_for("every node", lambda: all(n in dynoctl(a, "cluster") for n in
                                       NAMES[:len(machines)]), 120)
    return how


def join(m: Machine, name: str, how: tuple[str, str, str]) -> None:
    target, token, ca_hash = how
    dynoctl(m, "cluster:join", target, "--token", token, "--ca-hash", ca_hash,
            "--name", name, "--address", m.test_address)


def deploy(machines: list[Machine]) -> None:
    """A git push to node-a: it builds; the others fetch the slug from it."""
    a = machines[0]
    setup_push(a, APP, str(SOURCE))
    out = push(a, APP)
    assert "remote:        Released v2" in out, out


def answers(m: Machine, count: int) -> Counter[str]:
    """The dynos that answered ``count`` requests through ``m``'s router."""
    out = m.exec(["sh", "-c", f"for i in $(seq {count}); do curl -sS -m 10 -H 'Host: "
                  f"{HOST}' http://127.0.0.1/; done"], check=False).stdout
    return Counter(line.split()[0] for line in out.splitlines() if line)


@pytest.fixture(scope="module")
def nodes(stack: Path) -> Iterator[list[Machine]]:
    with cluster(3, binds=[stack_bind(stack)]) as machines:
        form(machines)
        deploy(machines)
        yield machines


def ticks(m: Machine, node: str) -> list[tuple[float, str, str]]:
    """(time, dyno, node) of every worker line in ``m``'s journal."""
    out = m.exec(["journalctl", "--no-pager", "-o", "cat", f"DYNOD_APP={APP}"],
                 check=False).stdout
    found = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "tick":
            found.append((float(parts[2]), parts[1], node))
    return found


def overlap(lines: list[tuple[float, str, str]], dyno: str) -> float:
    """The longest time ``dyno`` ran on two nodes at once, from its lines: each node's
    runs (lines less than 2 s apart) intersected with every other node's."""
    runs: list[tuple[str, float, float]] = []
    for node in {n for _, d, n in lines if d == dyno}:
        times = sorted(t for t, d, n in lines if d == dyno and n == node)
        start = prev = times[0]
        for t in times[1:]:
            if t - prev > 2.0:
                runs.append((node, start, prev))
                start = t
            prev = t
        runs.append((node, start, prev))
    return max([min(e1, e2) - max(s1, s2) for n1, s1, e1 in runs for n2, s2, e2 in runs
                if n1 < n2] + [0.0])


def test_scale_spreads_replicas_across_the_nodes(nodes: list[Machine]) -> None:
    a = nodes[0]
    dynoctl(a, "ps:scale", "-a", APP, "web=6", "worker=3")
    def all_up() -> list[dict[str, str]] | None:
        found = ps(a)
        return found if len([x for x in found if x["state"] == "up"]) == 9 else None
    dynos = wait_for("6 web and 3 workers up", all_up, 180)
    assert isinstance(dynos, list)
    assert spread(dynos, "web") == {"node-a": 2, "node-b": 2, "node-c": 2}
    assert spread(dynos, "worker") == {"node-a": 1, "node-b": 1, "node-c": 1}
    # ps says where, after Heroku's line.
    text = dynoctl(nodes[1], "ps", "-a", APP)
    assert re.search(r"^web\.1: up \d{4}/\d\d/\d\d \d\d:\d\d:\d\d [+-]\d{4} \(~ .*\) on "
                     r"node-[abc]$", text, re.M), text
    # Every machine's router reaches the web dynos of all three machines.
    where = {d["name"]: d["node"] for d in dynos if d["type"] == "web"}
    for m in nodes:
        def all_six(m: Machine = m) -> Counter[str] | None:
            got = answers(m, 24)
            return got if set(got) == set(where) else None
        got = wait_for(f"{m.name}'s router reaching all 6 web dynos", all_six, 60)
        assert isinstance(got, Counter)
        by_node = Counter(where[name] for name in got.elements())
        print(f"\n{NAMES[nodes.index(m)]}'s router: 24 requests answered by "
              f"{dict(sorted(got.items()))}, on {dict(sorted(by_node.items()))}")
        assert set(by_node) == set(NAMES)


def test_scale_beyond_the_clusters_memory_is_refused(nodes: list[Machine]) -> None:
    a = nodes[0]
    before = dynoctl(a, "ps:scale", "-a", APP)
    # Each machine has the host's memory: six Performance-L (14 GB) dynos exceed three.
    out = dynoctl(a, "ps:scale", "-a", APP, "web=6:performance-l", ok=False)
    assert re.search(r"Not enough memory for web=6 \(performance-l, 14336 MB each\): the "
                     r"cluster has \d+ MB free of \d+ MB; scale down or add a machine", out), out
    assert dynoctl(a, "ps:scale", "-a", APP) == before


CONNS = 4  # each load's client connections: at most one request in flight on each


def router_dynos(m: Machine) -> dict[str, str]:
    """The dyno each request id's router line in ``m``'s journal names ("" for none)."""
    out = m.exec(["journalctl", "--no-pager", "-o", "cat", f"DYNOD_APP={APP}",
                  "DYNOD_DYNO=router"], check=False).stdout
    found = {}
    for line in out.splitlines():
        rid, dyno = re.search(r" request_id=(\S+)", line), re.search(r" dyno=(\S*)", line)
        if rid and dyno:
            found[rid[1]] = dyno[1]
    return found


def when(since: str) -> float:
    return datetime.fromisoformat(since).timestamp()


def blame(m: Machine, got: dict[str, Any], dead: set[str],
          replaced: dict[str, float]) -> tuple[Counter[str], list[list[Any]]]:
    """``got``'s failed requests through ``m``'s router, split by their router lines: those
    sent to a dyno of the dead machine (one of ``dead``, before its replacement was up,
    at ``replaced[name]``), counted by dyno; and the others, each with its dyno."""
    failed = [list(f) for f in got["failed_requests"]]
    assert len(failed) == got["failed"], got  # all listed
    seen: dict[str, str] = {}

    def logged() -> bool:
        seen.update(router_dynos(m))
        return all(rid in seen for rid, _, _ in failed)

    with contextlib.suppress(AssertionError):  # those without one are among the others
        wait_for(f"{m.name}'s router lines of the failed requests", logged, 10)
    to_dead: Counter[str] = Counter()
    others = []
    for rid, sent, why in failed:
        dyno = seen.get(rid, "")
        if dyno in dead and sent < replaced.get(dyno, float("inf")):
            to_dead[dyno] += 1
        else:
            others.append([dyno or "no router line", sent, why])
    return to_dead, others


def test_a_dead_machines_dynos_come_back_on_the_others(nodes: list[Machine]) -> None:
    a, b, c = nodes
    assert c._proc is not None
    # A steady load through the two routers that survive.
    loads = [Load(m, HOST, conns=CONNS, name="cluster-load") for m in (a, b)]
    try:
        time.sleep(2)
        on_c = {d["name"] for d in ps(a) if d["type"] == "web" and d["node"] == "node-c"}
        killed = time.monotonic()
        c._proc.kill()  # kill -9 of its runner: the machine is gone at once
        c._proc.wait(30)

        def back() -> list[dict[str, str]] | None:
            dynos = ps(a)
            web = spread(dynos, "web")
            ok = sum(web.values()) == 6 and "node-c" not in web and \
                sum(spread(dynos, "worker").values()) == 3 and \
                "node-c" not in spread(dynos, "worker")
            return dynos if ok else None

        dynos = wait_for("node-c's dynos up on node-a and node-b", back, 60)
        took = time.monotonic() - killed
        print(f"\nfailover: all 6 web dynos up again {took:.1f} s after node-c died")
        time.sleep(3)  # the load goes on a little on the new dynos
    finally:
        results = [load.finish() for load in loads]
    assert isinstance(dynos, list)
    assert took < 30, f"failover took {took:.1f} s"
    assert len(on_c) == 2, on_c
    # When each of node-c's web dynos was up again elsewhere: a failed request to that
    # name sent before then went to node-c.
    replaced = {d["name"]: when(d["since"]) for d in dynos if d["name"] in on_c}
    # Only the requests sent to node-c's dynos, in flight when it died or sent on a kept
    # connection before the router saw it gone, may fail: each waits out the router's 30 s
    # and is not retried (it may have reached the app). A client connection has one
    # request in flight, and the next one goes to a dyno that is up: at most one failure
    # per connection. A new connection to a dead dyno times out (5 s) and is retried on
    # another (redispatch): slow, not failed. Nothing else may fail.
    for m, name, got in zip((a, b), NAMES[:2], results, strict=True):
        to_c, others = blame(m, got, on_c, replaced)
        print(f"{name}'s router: {got['requests']} answered, {got['failed']} failed "
              f"({got['status_5xx']} 5xx, {got['failed_connections']} connections): "
              f"{sum(to_c.values())} sent to node-c's {', '.join(sorted(on_c))} "
              f"({dict(sorted(to_c.items()))}), {len(others)} others {others[:CONNS]}; "
              f"{got['over_1s']} over 1 s, the slowest {got['slowest']} s")
        assert others == [], (name, others, got["failures"][:10])
        assert sum(to_c.values()) <= CONNS, (name, to_c, got["failures"][:10])
        assert int(got["requests"]) > 0
    # The web dynos that now run answered through both routers.
    web = {d["name"] for d in dynos if d["type"] == "web" and d["state"] == "up"}
    for got in results:
        assert web <= set(got["versions"]), (web, got["versions"])
    # worker never ran twice for longer than the lease (node-c's last lines are in its
    # journal, gone with it: what the others logged must not overlap among themselves).
    lines = ticks(a, "node-a") + ticks(b, "node-b")
    assert {d for _, d, _ in lines} >= {"worker.1", "worker.2", "worker.3"}, lines[-20:]
    for n in (1, 2, 3):
        assert overlap(lines, f"worker.{n}") < 10.0


def test_a_machine_cut_off_from_etcd_stops_its_dynos_and_heals_without_duplicates(
        nodes: list[Machine]) -> None:
    a, b, _ = nodes
    # Drop b's traffic to and from the cluster network's etcd ports, inside b only.
    # Only etcd's client port: its peers keep their quorum (node-c is dead by now).
    rules = ("table inet dynodtest {\n"
             "  chain egress { type filter hook output priority 0; tcp dport 2379 drop; }\n"
             "  chain ingress { type filter hook input priority 0; tcp sport 2379 drop; }\n"
             "}\n")
    b.exec(["nft", "-f", "-"], input=rules)
    cut = time.monotonic()
    try:
        def stopped() -> bool:
            out = b.exec(["systemctl", "list-units", "--no-legend", "--state=active",
                          "dynod-shop-*"], check=False).stdout
            return out.strip() == ""
        wait_for("node-b's dynos stopped", stopped, 30)
        print(f"\npartition: node-b ran no dyno {time.monotonic() - cut:.1f} s after "
              "it was cut off")
        wait_for("node-a runs everything", lambda: (
            spread(ps(a), "web") == {"node-a": 6}
            and spread(ps(a), "worker") == {"node-a": 3}), 60)
    finally:
        b.exec(["nft", "delete", "table", "inet", "dynodtest"], check=False)

    def one_each() -> bool:
        dynos = [d for d in ps(a) if d["state"] == "up"]
        names = [d["name"] for d in dynos]
        return len(names) == 9 and len(set(names)) == 9
    wait_for("a healed cluster without duplicates", one_each, 60)
    time.sleep(3)
    assert one_each()
    lines = ticks(a, "node-a") + ticks(b, "node-b")
    # node-b's worker logged there until it was fenced, then on node-a.
    assert any({n for _, d, n in lines if d == f"worker.{k}"} == {"node-a", "node-b"}
               for k in (1, 2, 3)), lines[-20:]
    worst = max(overlap(lines, f"worker.{n}") for n in (1, 2, 3))
    print(f"worker ran on two nodes at once for at most {worst:.1f} s")
    assert worst < 10.0
