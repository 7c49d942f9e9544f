"""Three sandbox machines on a test network of their own: the ground cluster tests
stand on. Each machine reaches the others at its ``test_address`` on ``cluster0``;
the network is nowhere on the host, and it is gone after its runner dies."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tests.sandbox import machine as sandbox
from tests.sandbox.machine import Machine, Network

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
