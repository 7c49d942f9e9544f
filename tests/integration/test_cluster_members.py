"""Cluster membership on three sandbox machines of one test network: ``cluster:init`` on
a machine with three apps of different kinds (each serving under a steady load) moves
its state into etcd with every release, config var and formation the same and no
failed request, two machines ``cluster:join`` it, ``dynoctl
cluster`` shows all three alive on a healthy etcd of three TLS members, each node's
dynos are published on its lease, and ``cluster:remove`` removes one; bad input is
refused with a clear message and changes nothing."""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import cluster, stack_bind
from tests.integration.test_builds import EXAMPLES, commit, push, setup_push
from tests.integration.test_cluster import assert_strangers_refused
from tests.integration.test_dynos import all_up, deploy, dynoctl, wait_for
from tests.integration.test_lifecycle import Load
from tests.sandbox.machine import Machine

# make test runs each module on one worker (--dist loadfile): its tests share its cluster.
pytestmark = pytest.mark.integration

TLS = "/var/lib/dynod/cluster/tls"
CURL = ["curl", "-sS", "-m", "10", "--cacert", f"{TLS}/ca.crt", "--cert",
        f"{TLS}/member.crt", "--key", f"{TLS}/member.key"]
TOML = "/etc/dynod/dynod.toml"
APPS = ("shop", "blog", "jobs")
CLUSTER_APP = Path(__file__).with_name("cluster_app")  # a web that names its dyno, a worker


@pytest.fixture(scope="module")
def machines(stack: Path) -> Iterator[list[Machine]]:
    with cluster(3, binds=[stack_bind(stack)]) as found:
        yield found


def fails(m: Machine, *args: str) -> str:
    """dynoctl ARGS, which must fail: its error output."""
    proc = m.run(["dynoctl", *args], cwd="/tmp", timeout=300)
    assert proc.returncode != 0, f"dynoctl {' '.join(args)} succeeded: {proc.stdout}"
    return proc.stderr


def state_of(m: Machine, apps: list[str]) -> dict[str, Any]:
    """What a user sees of each app: every release in full (``releases:info``: its slug,
    user, time, status and config snapshot), the config vars, the formation."""
    return {app: {"releases": [json.loads(dynoctl(m, "releases:info", "-a", app,
                                                  f"v{r['version']}", "--json"))
                               for r in json.loads(dynoctl(m, "releases", "-a", app,
                                                           "--json"))],
                  "config": json.loads(dynoctl(m, "config", "-a", app, "--json")),
                  "formation": dynoctl(m, "ps:scale", "-a", app)}
            for app in apps}


def status(m: Machine) -> dict[str, Any]:
    return dict(json.loads(dynoctl(m, "cluster", "--json")))


def records(m: Machine, prefix: str) -> dict[str, dict[str, Any]]:
    """etcd's keys under ``prefix`` and their JSON values, read from machine ``m`` at its
    own etcd member."""
    end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    body = json.dumps({"key": base64.b64encode(prefix.encode()).decode(),
                       "range_end": base64.b64encode(end.encode()).decode()})
    out = m.exec([*CURL, "-X", "POST", "-d", body,
                  f"https://{m.test_address}:2379/v3/kv/range"]).stdout
    return {base64.b64decode(kv["key"]).decode(): json.loads(base64.b64decode(kv["value"]))
            for kv in json.loads(out).get("kvs", [])}


def three_alive(m: Machine) -> dict[str, Any]:
    """``dynoctl cluster`` on ``m`` once it shows three members, alive, etcd healthy
    with a leader; the last one seen and the machine's logs if it never does."""
    seen: list[dict[str, Any]] = []

    def check() -> dict[str, Any] | None:
        seen[:] = [status(m)]
        nodes = seen[0]["nodes"]
        ok = len(nodes) == 3 and all(n.get("alive") and n.get("etcd_healthy") for n in nodes)
        return seen[0] if ok and seen[0].get("etcd_leader") else None

    try:
        found = wait_for(f"three alive members seen from {m.name}", check, timeout=90)
    except AssertionError as exc:
        logs = m.exec(["journalctl", "--no-pager", "-o", "cat", "-n", "80", "-u", "dynod",
                       "-u", "dynod-etcd"], check=False).stdout
        raise AssertionError(f"{exc}\n{seen}\n{logs}") from None
    assert isinstance(found, dict)
    return found


JOIN: dict[str, str] = {}
# What node-a runs after the migration, and keeps when the others join.
NODE_A_DYNOS = {"shop/web.1", "shop/web.2", "blog/web.1", "jobs/web.1", "jobs/worker.1"}


def make_apps(a: Machine) -> None:
    """Three apps of different kinds on node-a: ``shop``, the shell example (git push,
    web=2, a config var); ``blog``, a python server from a slug (a config var); ``jobs``,
    a web and a worker (git push) with seven releases: two builds, config sets and
    unsets, and a rollback."""
    setup_push(a, "shop", str(EXAMPLES / "shell"))
    assert "remote:        Released v2" in push(a, "shop")
    dynoctl(a, "ps:scale", "-a", "shop", "web=2")
    dynoctl(a, "config:set", "-a", "shop", "GREETING=hi")
    deploy(a, "blog", web="exec python3 -u server.py")
    dynoctl(a, "config:set", "-a", "blog", "COLOUR=blue")
    setup_push(a, "jobs", str(CLUSTER_APP))
    assert "remote:        Released v2" in push(a, "jobs")
    dynoctl(a, "config:set", "-a", "jobs", "MODE=fast", "LEVEL=3")
    commit(a, "jobs", "NOTES", "a second build")
    assert "remote:        Released v4" in push(a, "jobs")
    dynoctl(a, "config:unset", "-a", "jobs", "MODE")
    dynoctl(a, "rollback", "-a", "jobs", "v3")
    dynoctl(a, "config:unset", "-a", "jobs", "LEVEL")
    dynoctl(a, "ps:scale", "-a", "jobs", "web=1", "worker=1")
    all_up(a, "shop", 2)
    all_up(a, "blog", 1)
    all_up(a, "jobs", 1)
    all_up(a, "jobs", 1, "worker")


def test_init_moves_three_apps_into_etcd_unchanged_while_each_serves(
        machines: list[Machine]) -> None:
    a = machines[0]
    make_apps(a)
    before = state_of(a, list(APPS))
    jobs = {r["version"]: r for r in before["jobs"]["releases"]}
    assert sorted(jobs) == [1, 2, 3, 4, 5, 6, 7], jobs
    assert [jobs[v]["description"] for v in (5, 6, 7)] == [
        "Remove MODE config vars", "Rollback to v3", "Remove LEVEL config vars"], jobs
    assert jobs[6]["slug_id"] == jobs[3]["slug_id"] != jobs[4]["slug_id"], jobs
    assert jobs[6]["config"] == {"MODE": "fast", "LEVEL": "3"}, jobs
    assert before["jobs"]["config"] == {"MODE": "fast"}, before["jobs"]
    toml_before = a.exec(["cat", TOML], check=False).stdout
    # A steady load on each app through node-a's router, all through the migration.
    loads = {app: Load(a, f"{app}.dynod.localhost", conns=2, name=f"members-load-{app}")
             for app in APPS}

    out = dynoctl(a, "cluster:init", "--name", "node-a", "--address", a.test_address)
    print(out)
    found = re.search(r"^  (dynoctl cluster:join (\S+) --token (\S+) --ca-hash (\S+))$",
                      out, re.MULTILINE)
    assert found is not None, out
    assert found.group(2) == a.test_address
    JOIN.update(command=found.group(1), token=found.group(3), ca_hash=found.group(4))
    releases = sum(len(v["releases"]) for v in before.values())
    assert f"3 apps and {releases} releases are in etcd now" in out, out
    assert "/var/lib/dynod/state.db.pre-cluster" in out, out
    a.exec(["test", "-s", "/var/lib/dynod/state.db.pre-cluster"])

    all_up(a, "shop", 2)
    time.sleep(3)  # the loads go on a little after the migration
    totals = {app: load.finish() for app, load in loads.items()}
    for app, got in totals.items():
        print(f"{app}: {got['requests']} requests answered during cluster:init, "
              f"{got['failed']} failed ({got['status_5xx']} 5xx, "
              f"{got['failed_connections']} connections), the slowest {got['slowest']} s; "
              f"failures: {got['failures'][:5]}")
    assert {app: got["failed"] for app, got in totals.items()} == dict.fromkeys(APPS, 0), \
        totals
    assert all(got["requests"] > 0 for got in totals.values()), totals
    after = state_of(a, list(APPS))
    assert after == before
    JOIN["state"] = json.dumps(before)
    toml = a.exec(["cat", TOML]).stdout
    assert 'store = "etcd"' in toml and 'node_name = "node-a"' in toml, toml
    assert toml.startswith(toml_before.rstrip("\n")), toml
    assert "state in etcd at" in a.exec(["journalctl", "-u", "dynod", "-o", "cat",
                                         "--no-pager"]).stdout

    # A second init: refused, nothing changed.
    err = fails(a, "cluster:init", "--name", "node-a", "--address", a.test_address)
    assert "this machine is already in a cluster (node node-a)" in err, err
    assert a.exec(["cat", TOML]).stdout == toml


def test_bad_joins_are_refused_and_change_nothing(machines: list[Machine]) -> None:
    a, b = machines[0], machines[1]
    wrong = "x" * 43
    err = fails(b, "cluster:join", a.test_address, "--token", wrong, "--ca-hash",
                JOIN["ca_hash"])
    assert "the join token is wrong" in err, err
    err = fails(b, "cluster:join", a.test_address, "--token", JOIN["token"], "--ca-hash",
                "sha256:" + "0" * 64)
    assert "is not signed by the CA the join command names" in err, err
    err = fails(b, "cluster:join", "10.216.0.250", "--token", JOIN["token"], "--ca-hash",
                JOIN["ca_hash"])
    assert "10.216.0.250:5443" in err and "check the address" in err, err
    # A machine with apps of its own does not join (they would be lost).
    c = machines[2]
    dynoctl(c, "apps:create", "mine")
    err = fails(c, *JOIN["command"].split()[1:])
    assert "this machine has apps (mine); a machine joins a cluster empty" in err, err
    dynoctl(c, "apps:destroy", "mine", "--confirm", "mine")
    for m in (b, c):
        assert m.exec(["test", "-e", "/var/lib/dynod/cluster"], check=False).returncode != 0
    assert "store" not in b.exec(["cat", TOML], check=False).stdout
    assert [n["member"]["name"] for n in status(a)["nodes"]] == ["node-a"]


def test_two_machines_join_and_every_one_sees_three_alive(machines: list[Machine]) -> None:
    a, b, c = machines
    for m, name in ((b, "node-b"), (c, "node-c")):
        out = dynoctl(m, *JOIN["command"].split()[1:], "--name", name)
        assert "This node has joined the cluster" in out, out
    err = fails(b, *JOIN["command"].split()[1:], "--name", "node-b")
    assert "already in a cluster (node node-b)" in err, err

    pools = set()
    for m in machines:
        s = three_alive(m)
        nodes = s["nodes"]
        assert [n["member"]["name"] for n in nodes] == ["node-a", "node-b", "node-c"]
        assert [n["member"]["address"] for n in nodes] == [x.test_address for x in machines]
        assert all(int(n["memory_mb"]) > 0 for n in nodes)
        pools = {n["member"]["pool"] for n in nodes}
        print(dynoctl(m, "cluster"))
    assert pools == {"10.213.0.0/20", "10.213.16.0/20", "10.213.32.0/20"}
    assert 'address_pool = "10.213.16.0/20"' in b.exec(["cat", TOML]).stdout

    # Three voting members, clients and peers on TLS only.
    listed = json.loads(a.exec([*CURL, "-X", "POST", "-d", "{}",
                                f"https://{a.test_address}:2379/v3/cluster/member/list"]
                               ).stdout)["members"]
    assert sorted((x["name"], x["clientURLs"], bool(x.get("isLearner"))) for x in listed) \
        == [(n, [f"https://{m.test_address}:2379"], False)
            for n, m in zip(("node-a", "node-b", "node-c"), machines, strict=True)]
    assert_strangers_refused(b, a.test_address)
    # etcd does not log every call dynod makes through its gateway.
    etcd_log = a.exec(["journalctl", "--no-pager", "-o", "cat", "-u", "dynod-etcd"]).stdout
    assert "ignoring common name" not in etcd_log

    # The state is the cluster's: the same seen from every member, and unchanged.
    for m in machines:
        assert json.dumps(state_of(m, list(APPS))) == JOIN["state"], m.name

    # node-a's dynos, on its lease, seen from the others; a change is published.
    prefix = "/dynod-cluster/dynos/node-a/"

    def up(m: Machine) -> set[str]:
        return {k.removeprefix(prefix).rsplit("@", 1)[0]
                for k, v in records(m, prefix).items() if v["state"] == "up"}

    for m in (b, c):
        assert up(m) == NODE_A_DYNOS
        web = [v for k, v in records(m, prefix).items() if "/shop/web.1@" in k]
        assert web[0]["address"].startswith("10.213.0.") and web[0]["port"] == 5000, web
    # web.3 goes where placement puts it (a machine with fewer dynos, which fetches the
    # slug from node-a): seen up from node-c whichever node runs it.
    def up_anywhere(m: Machine) -> set[str]:
        return {k.removeprefix("/dynod-cluster/dynos/").split("/", 1)[1].rsplit("@", 1)[0]
                for k, v in records(m, "/dynod-cluster/dynos/").items() if v["state"] == "up"}

    dynoctl(a, "ps:scale", "-a", "shop", "web=3")
    wait_for("shop web.3 up, seen from node-c", lambda: "shop/web.3" in up_anywhere(c),
             timeout=120)
    dynoctl(a, "ps:scale", "-a", "shop", "web=2")
    wait_for("shop web.3 gone, seen from node-b", lambda: up_anywhere(b) == NODE_A_DYNOS)


def test_remove_a_member_and_not_the_last(machines: list[Machine]) -> None:
    a, b = machines[0], machines[1]
    err = fails(a, "cluster:remove", "node-a")
    assert "node node-a is this machine" in err, err
    err = fails(a, "cluster:remove", "node-x")
    assert "node node-x is not a member" in err, err
    err = fails(b, "cluster:remove", "node-a")
    assert "node node-a still runs 5 dynos (blog web.1, jobs web.1, jobs worker.1, ...)" \
        in err, err
    # (--force: a joiner may still be stopping web.3 when this runs.)
    dynoctl(a, "cluster:remove", "node-c", "--force")
    names = [n["member"]["name"] for n in status(a)["nodes"]]
    assert names == ["node-a", "node-b"]
    dynoctl(a, "cluster:remove", "node-b", "--force")
    err = fails(a, "cluster:remove", "node-a")
    assert "node node-a is the cluster's last member" in err, err
    listed = json.loads(a.exec([*CURL, "-X", "POST", "-d", "{}",
                                f"https://{a.test_address}:2379/v3/cluster/member/list"]
                               ).stdout)["members"]
    assert [x["name"] for x in listed] == ["node-a"]
    all_up(a, "shop", 2)
