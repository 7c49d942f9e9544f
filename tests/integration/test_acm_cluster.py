"""ACM in a cluster of three sandbox machines (issue 19 item 3, issue 16 item 4): a
user's DNS may point a custom domain at any machine, so the leader alone orders, and
every machine's router answers the order's http-01 challenge and serves the
certificate issued, renewed without a reload.

The cluster is formed the test_crossnet.py way (one etcd on node-a, plain HTTP on the
closed test network; each dynod on ``store = "etcd"`` with its ``node_name``; the
``members/`` keys written here). pebble and its DNS (pebble-challtestsrv) run on node-a,
its directory on node-a's test address for every dynod; the domain's A record names a
machine that is not the leader, so pebble validates through a follower's router. Its
certificates live 120 s, so renewal (a third left) happens in the test; the record then
names the other follower.
"""

from __future__ import annotations

import base64
import re

import pytest

from tests.integration.conftest import cluster
from tests.integration.test_acme import HOST, PEBBLE_TLS, ROOT, dns, run_pebble
from tests.integration.test_builds import sh
from tests.integration.test_crossnet import b64, etcd, on_etcd, start_etcd
from tests.integration.test_dynos import dynoctl, wait_for
from tests.integration.test_router import haproxy_processes
from tests.sandbox.machine import Machine

# make test runs each module on one worker (--dist loadfile).
pytestmark = [pytest.mark.integration, pytest.mark.network]

NODES = ("node-a", "node-b", "node-c")
POOLS = ("10.213.0.0/20", "10.213.16.0/20", "10.213.32.0/20")
LIFETIME = 120


def etcd_get(m: Machine, key: str) -> str | None:
    """The value of ``key`` in the etcd on ``m`` (node-a)."""
    kvs = etcd(m, "kv/range", {"key": b64(key)}).get("kvs", [])
    assert isinstance(kvs, list)
    return base64.b64decode(kvs[0]["value"]).decode() if kvs else None


def form(machines: list[Machine]) -> None:
    """etcd and pebble on node-a; every machine's dynod on that etcd, ordering from that
    pebble."""
    a = machines[0]
    start_etcd(a, list(zip(machines, NODES, POOLS, strict=True)))
    run_pebble(a, a.test_address, LIFETIME)
    pebble_tls = a.exec(["cat", PEBBLE_TLS]).stdout
    for m, name, pool in zip(machines, NODES, POOLS, strict=True):
        m.exec(["sh", "-c", f"cat > {PEBBLE_TLS}"], input=pebble_tls)
        on_etcd(m, a, name, pool, (f'acme_directory = "https://{a.test_address}:14000/dir"',
                                   f'acme_ca_file = "{PEBBLE_TLS}"'))
    wait_for("every node alive", lambda: all(
        etcd_get(a, f"/dynod-cluster/nodes/{n}") for n in NODES))


def served_serial(m: Machine) -> str:
    """The serial of the certificate ``m``'s router serves for HOST on 443, verified
    against pebble's root (empty if it does not verify)."""
    out = m.exec(["sh", "-c", f"openssl s_client -connect 127.0.0.1:443 -servername {HOST} "
                  f"-verify_return_error -CAfile {ROOT} </dev/null 2>/dev/null | "
                  "openssl x509 -noout -serial"], check=False)
    return out.stdout.strip().removeprefix("serial=") if out.returncode == 0 else ""


def serials(machines: list[Machine]) -> list[str]:
    return [served_serial(m) for m in machines]


def orders(a: Machine) -> int:
    """The orders pebble took (its log says each one)."""
    out = a.exec(["journalctl", "-u", "pebble", "--no-pager", "-o", "cat"]).stdout
    return len(re.findall(r"Added order \S+ to the db", out))


def test_one_order_served_by_every_router_validated_through_a_follower() -> None:
    with cluster(3) as machines:
        form(machines)
        a = machines[0]
        by_name = dict(zip(NODES, machines, strict=True))
        leader = wait_for("a leader", lambda: etcd_get(a, "/dynod-cluster/leader"))
        assert leader in NODES
        followers = [m for n, m in by_name.items() if n != leader]
        node = {m.name: n for n, m in by_name.items()}
        print(f"{leader} leads; the domain points at {node[followers[0].name]}")
        dns(a, "add-a", host=f"{HOST}.", addresses=[followers[0].test_address])

        # The app is made through a follower's API: any machine's will do.
        f = followers[1]
        dynoctl(f, "apps:create", "shop")
        dynoctl(f, "domains:add", "-a", "shop", HOST)
        out = f.run(["dynoctl", "certs:auto:enable", "-a", "shop", "--wait"], timeout=300)
        assert out.returncode == 0, out.stderr + "\n" + "\n".join(
            sh(m, "journalctl -u dynod -o cat --no-pager | grep -i acm | tail -20",
               ok=False)[1] for m in machines)
        status = dynoctl(f, "certs:auto", "-a", "shop").splitlines()
        assert re.fullmatch(rf"{re.escape(HOST)} +Cert issued +.*", status[3]), status

        # One order; the same certificate through every machine's router (SNI on 443),
        # verified against pebble's root.
        root = a.exec(["curl", "-sSf", "--cacert", PEBBLE_TLS,
                       "https://127.0.0.1:15000/roots/0"]).stdout
        for m in machines:
            m.exec(["sh", "-c", f"cat > {ROOT}"], input=root)
        first = wait_for("the certificate on every router", lambda: (
            s := serials(machines))[0] and len(set(s)) == 1 and s[0], timeout=30)
        assert orders(a) == 1
        # The leader had pebble validate once both other routers answered.
        said = sh(by_name[leader], "journalctl -u dynod -o cat --no-pager")[1]
        assert f"acm: {HOST}: the challenge is answered by the 2 other routers" in said
        print(f"serial {first} served by every router; one order")

        # Renewal (a third of the lifetime left), validated through the other follower:
        # every router serves the new certificate, none reloaded HAProxy.
        procs = [haproxy_processes(m) for m in machines]
        dns(a, "add-a", host=f"{HOST}.", addresses=[followers[1].test_address])
        second = wait_for("the renewed certificate on every router", lambda: (
            s := serials(machines))[0] != first and len(set(s)) == 1 and s[0],
            timeout=LIFETIME + 60)
        assert second != first
        assert orders(a) == 2
        assert [haproxy_processes(m) for m in machines] == procs
        print(f"renewed through {node[followers[1].name]}: serial {second} on every "
              "router, no HAProxy reloaded")
