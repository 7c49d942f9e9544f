"""Three sandbox machines on a test network of their own: the ground cluster tests
stand on. Each machine reaches the others at its ``test_address`` on ``cluster0``;
the network is nowhere on the host, and it is gone after its runner dies. On it, three
``dynod-etcd.service`` members make one etcd cluster talking TLS only."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime

import pytest

from dynod.router import local_ca
from tests.sandbox import machine as sandbox
from tests.sandbox.machine import PROJECT, Machine, Network

# make test runs each module on one worker (--dist loadfile): its tests share its cluster.
pytestmark = pytest.mark.integration

PORT = 7400
# Answers each connection with the machine's hostname: who is at the other end.
SERVER = textwrap.dedent("""
    import socket, sys
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((sys.argv[1], int(sys.argv[2])))
    s.listen()
    while True:
        c, _ = s.accept()
        c.sendall(socket.gethostname().encode())
        c.close()
""")
CLIENT = textwrap.dedent("""
    import socket, sys
    c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
    print(c.recv(100).decode())
""")


def _serve(m: Machine) -> None:
    m.exec(["systemd-run", "--unit=test-net-echo", "--service-type=exec", "--collect",
            "/usr/bin/python3", "-c", SERVER, m.test_address, str(PORT)])
    # Listening once the unit's socket shows up (the unit starts asynchronously).
    m.exec(["/bin/sh", "-c", f"for i in $(seq 100); do ss -ltn | grep -q "
            f"'{m.test_address}:{PORT}' && exit 0; sleep 0.1; done; exit 1"])


def test_each_machine_reaches_every_other_on_the_test_network(
        cluster_machines: list[Machine]) -> None:
    addresses = [m.test_address for m in cluster_machines]
    assert len(set(addresses)) == 3 and all(a.startswith("10.216.0.") for a in addresses)
    for m in cluster_machines:
        _serve(m)
    for a in cluster_machines:
        for b in cluster_machines:
            if a is b:
                continue
            out = a.exec(["/usr/bin/python3", "-c", CLIENT, b.test_address, str(PORT)])
            assert out.stdout.strip() == b.name, f"{a.name} -> {b.name}: {out.stdout}"


def test_the_network_is_nowhere_on_the_host(cluster_machines: list[Machine]) -> None:
    host = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True,
                          check=True).stdout
    assert "10.216.0." not in host
    inside = cluster_machines[0].exec(["ip", "-4", "-o", "addr", "show", "cluster0"]).stdout
    assert f"{cluster_machines[0].test_address}/24" in inside
    # The network's own namespace has the bridge and one port per machine, no way out:
    # no address of its own and no route.
    name = cluster_machines[0].test_network
    assert {m.test_network for m in cluster_machines} == {name}
    links = subprocess.run(["ip", "-n", name, "-o", "link"], capture_output=True,
                           text=True, check=True).stdout
    assert sorted(line.split(":")[1].strip().split("@")[0] for line in links.splitlines()) \
        == ["br0", "lo", "m1", "m2", "m3"]
    routes = subprocess.run(["ip", "-n", name, "-4", "route"], capture_output=True,
                            text=True, check=True).stdout
    assert routes.strip() == ""


def test_a_network_whose_runner_died_is_purged() -> None:
    # A runner that is gone: its network's record names a pid that no longer lives.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    net = Network()
    net.create()
    try:
        assert net.record is not None
        net.record.runner_pid = dead.pid
        net.record.save()
        assert net.residue()  # its namespace and record are there
        assert net.name in sandbox.purge_stale_networks()
        assert net.residue() == []
    finally:
        net.destroy()


# Run inside a machine with dynod's own code: write the member's files, start its unit.
MEMBER = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from dynod.system import etcd
    spec = json.load(sys.stdin)
    members = [etcd.Member(n, a) for n, a in spec["members"]]
    me = next(m for m in members if m.name == spec["me"])
    state = Path("/var/lib/dynod")
    env = etcd.member_env(me, members, etcd.ClusterState.NEW, "test", state)
    etcd.write_member(state, env, spec["ca"], spec["cert"], spec["key"])
    etcd.start()
""")
TLS = "/var/lib/dynod/cluster/tls"
CURL = ["curl", "-sS", "-m", "10", "--cacert", f"{TLS}/ca.crt", "--cert", f"{TLS}/member.crt",
        "--key", f"{TLS}/member.key"]


def start_members(machines: list[Machine], ca: local_ca.LocalCA) -> None:
    """An etcd member on each machine, certificates from ``ca``, one cluster of them."""
    members = [(m.name, m.test_address) for m in machines]
    starts = []
    for m in machines:
        cert, key = local_ca.issue(ca, (m.name, m.test_address), datetime.now(UTC),
                                   client_auth=True)
        spec = json.dumps({"members": members, "me": m.name, "ca": ca.cert_pem,
                           "cert": cert, "key": key})
        # Started together: a member of a new cluster is ready once a quorum is up.
        starts.append(subprocess.Popen(
            [*m._nsenter(), str(PROJECT / ".venv/bin/python"), "-c", MEMBER],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, cwd=PROJECT))
        assert starts[-1].stdin is not None
        starts[-1].stdin.write(spec)
        starts[-1].stdin.close()
    for m, proc in zip(machines, starts, strict=True):
        assert proc.wait(180) == 0, f"{m.name}: {proc.stdout.read() if proc.stdout else ''}"


def test_three_etcd_members_make_one_cluster_over_tls_only(
        cluster_machines: list[Machine]) -> None:
    ca = local_ca.make_ca(datetime.now(UTC), "test-cluster")
    members = [(m.name, m.test_address) for m in cluster_machines]
    start_members(cluster_machines, ca)
    for m in cluster_machines:
        assert m.exec(["systemctl", "is-active", "dynod-etcd.service"]).stdout.strip() \
            == "active"
        assert m.exec(["test", "-d", "/var/lib/dynod/etcd/member"], check=False).returncode == 0
    first = cluster_machines[0]
    listed: dict[str, object] = {}
    for _ in range(60):
        out = first.exec([*CURL, "-X", "POST", "-d", "{}",
                          f"https://{first.test_address}:2379/v3/cluster/member/list"],
                         check=False)
        listed = json.loads(out.stdout or "{}")
        found = listed.get("members", [])
        if isinstance(found, list) and all("clientURLs" in x for x in found) \
                and len(found) == 3:
            break
        time.sleep(1)
    got = sorted((x["name"], x["peerURLs"], x["clientURLs"])
                 for x in listed["members"])  # type: ignore[attr-defined]
    assert got == sorted((n, [f"https://{a}:2380"], [f"https://{a}:2379"]) for n, a in members)
    for m in cluster_machines:
        health = first.exec([*CURL, f"https://{m.test_address}:2379/health"]).stdout
        assert json.loads(health)["health"] == "true", f"{m.name}: {health}"
    assert_strangers_refused(cluster_machines[1], first.test_address)


def assert_strangers_refused(m: Machine, address: str) -> None:
    """From ``m``: the etcd member at ``address`` refuses plain text and TLS without a
    certificate of the cluster's CA, on its client and its peer port."""
    plain = m.exec(["curl", "-sS", "-m", "5", f"http://{address}:2379/health"], check=False)
    assert plain.returncode != 0 and "health" not in plain.stdout
    anonymous = m.exec(["curl", "-sS", "-m", "5", "--cacert", f"{TLS}/ca.crt",
                        f"https://{address}:2379/health"], check=False)
    assert anonymous.returncode != 0 and "health" not in anonymous.stdout
    plain_peer = m.exec(["curl", "-sS", "-m", "5", f"http://{address}:2380/members"],
                        check=False)
    assert plain_peer.returncode != 0
