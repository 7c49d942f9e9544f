"""Networks and routing across machines (issue 19 item 6), on two sandbox machines of
one test network: each has a dyno pool of its own and routes to the other's; an app's
web dynos on both machines answer through each machine's router; a dyno on one
machine reaches neither the other machine's dynos nor its sshd, API, etcd or router,
while that machine itself (its router) does; a node's records vanishing takes its dynos
out of the other router within seconds, and a removed member loses its route.

The test forms the cluster itself, the test_cluster.py way, rather than with
``cluster:init``/``cluster:join`` (members' test covers those, over TLS with three etcd
members): one etcd (on node-b, plain HTTP on the closed test network), both dynods on
``store = "etcd"`` with their ``node_name``, ``node_address`` and ``address_pool``, and
the ``members/`` keys written here. Each node's keeper (merged from the members
branch) publishes its dynos under ``dynos/`` on its lease. Without the placement branch
``ps:scale web=2`` places one web dyno on each machine; the slug reaches node-b by
deploying the same tarball there (same checksum, so both machines have its blob: this
hand-made cluster has no member certificates, so no peer API to fetch it over).
"""

from __future__ import annotations

import base64
import json
import textwrap
import time
from collections.abc import Iterator
from functools import partial
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from dynod.model.cluster import NODE_TTL
from tests.integration.conftest import cluster, stack_bind
from tests.integration.test_builds import sh
from tests.integration.test_dynos import all_up, deploy, dynoctl, http, ps, wait_for
from tests.sandbox.machine import Machine

# make test runs each module on one worker (--dist loadfile): its tests share its cluster.
pytestmark = [pytest.mark.integration, pytest.mark.network]

NODES = ("node-a", "node-b")
POOLS = ("10.213.0.0/20", "10.213.16.0/20")
API_PORT = 5443
ETCD = 2379
HOST = "shop.dynod.localhost"
# Says which dyno answered (its DYNO and the address it was reached at: the pool tells
# the machine); /connect?to=HOST:PORT says whether the dyno can open that connection;
# ``python3 server.py probe HOST:PORT...`` says it for each, from a one-off dyno.
SERVER = textwrap.dedent("""
    import http.server, os, socket, sys, urllib.parse

    def reach(target):
        host, _, port = target.rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=3).close()
            return "reached"
        except OSError as exc:
            return f"refused ({exc})"

    if sys.argv[1:2] == ["probe"]:
        for target in sys.argv[2:]:
            print(target, reach(target))
        sys.exit(0)

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            url = urllib.parse.urlsplit(self.path)
            if url.path == "/connect":
                body = reach(urllib.parse.parse_qs(url.query)["to"][0])
            else:
                body = f"{os.environ['DYNO']} at {self.connection.getsockname()[0]}"
            data = body.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    http.server.ThreadingHTTPServer(("", int(os.environ["PORT"])), H).serve_forever()
""")


def etcd(m: Machine, call: str, body: dict[str, object]) -> dict[str, object]:
    """One call of the v3 JSON gateway of the etcd on ``m`` (node-b)."""
    out = m.exec(["curl", "-sS", "-m", "10", "-X", "POST", f"http://127.0.0.1:{ETCD}/v3/{call}",
                  "-d", json.dumps(body)]).stdout
    got: dict[str, object] = json.loads(out)
    return got


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def put(m: Machine, key: str, value: dict[str, object]) -> None:
    etcd(m, "kv/put", {"key": b64("/dynod-cluster/" + key), "value": b64(json.dumps(value))})


def up_web(m: Machine, node: str) -> dict[str, object]:
    """The web dyno placed on ``node``, up on the app's newest release."""
    latest = json.loads(dynoctl(m, "releases:info", "-a", "shop", "--json"))["version"]

    def check() -> dict[str, object] | None:
        found = [d for d in ps(m, "shop") if d["type"] == "web" and d["state"] == "up"
                 and d.get("release") == latest and d.get("node") == node]
        return found[0] if len(found) == 1 else None

    got = wait_for(f"a web dyno of v{latest} up on {node}", check, timeout=120)
    assert isinstance(got, dict)
    return got


def answers(m: Machine, count: int = 8) -> set[str]:
    """Who answers ``count`` requests through ``m``'s router."""
    return {sh(m, f"curl -sS -m 10 -H 'Host: {HOST}' http://127.0.0.1/")[1].strip()
            for _ in range(count)}


def answered_by(m: Machine, want: set[str]) -> bool:
    return answers(m) == want


ADMIN = ("import socket; s = socket.socket(socket.AF_UNIX); "
         "s.connect('/run/dynod/router/admin.sock'); s.sendall(b'show servers state\\n'); "
         "print(s.makefile().read())")


def dynos_key(m: Machine, node: str) -> list[str]:
    """The keys of what ``node`` publishes under ``dynos/``, read from the etcd on ``m``."""
    prefix = f"/dynod-cluster/dynos/{node}/"
    end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    got = etcd(m, "kv/range", {"key": b64(prefix), "range_end": b64(end), "keys_only": True})
    kvs = got.get("kvs", [])
    assert isinstance(kvs, list)
    return [base64.b64decode(kv["key"]).decode() for kv in kvs]


def servers(m: Machine) -> str:
    """HAProxy's ``show servers state`` on ``m``."""
    return m.exec(["python3", "-c", ADMIN], check=False).stdout


def diagnose(m: Machine) -> str:
    return "\n".join([
        f"answers: {sorted(answers(m, 4))}",
        servers(m),
        sh(m, "ip -4 route; nft list table ip dynod", ok=False)[1],
        sh(m, "journalctl -u dynod -o cat --no-pager | tail -40", ok=False)[1]])


def api_ready(m: Machine) -> bool:
    return sh(m, "dynoctl apps", ok=False)[0] == 0


def connect(m: Machine, dyno_address: str, target: str) -> str:
    """Whether the dyno at ``dyno_address`` (on ``m``) can connect to ``target``."""
    return sh(m, f"curl -sS -m 20 'http://{dyno_address}:5000/connect?to={target}'")[1]


def start_etcd(m: Machine, members: list[tuple[Machine, str, str]]) -> None:
    """An etcd on ``m`` (plain HTTP on the closed test network) with the ``members/``
    keys of the (machine, node name, pool) given."""
    sh(m, f"systemd-run -q --unit etcd-test -p StateDirectory=etcd-test /usr/bin/etcd "
          f"--name e --data-dir /var/lib/etcd-test/data "
          f"--listen-client-urls http://127.0.0.1:{ETCD},http://{m.test_address}:{ETCD} "
          f"--advertise-client-urls http://{m.test_address}:{ETCD} "
          f"--listen-peer-urls http://{m.test_address}:2380 "
          f"--initial-advertise-peer-urls http://{m.test_address}:2380 "
          f"--initial-cluster e=http://{m.test_address}:2380")
    wait_for("etcd healthy", lambda: '"true"' in sh(
        m, f"curl -s http://127.0.0.1:{ETCD}/health", ok=False)[1])
    for member, name, pool in members:
        put(m, f"members/{name}", {"name": name, "address": member.test_address,
                                   "api": f"{member.test_address}:{API_PORT}", "pool": pool})


def on_etcd(m: Machine, etcd_machine: Machine, name: str, pool: str,
            extra: tuple[str, ...] = ()) -> None:
    """``m``'s dynod as node ``name`` of the etcd on ``etcd_machine``, with its SQLite
    state gone and ``extra`` dynod.toml lines; returns once its API answers."""
    settings = ['store = "etcd"', f'etcd_endpoints = "{etcd_machine.test_address}:{ETCD}"',
                f'node_name = "{name}"', f'node_address = "{m.test_address}"',
                f'address_pool = "{pool}"', f'api_listen = "0.0.0.0:{API_PORT}"', *extra]
    sh(m, "mkdir -p /etc/dynod && printf '%s\\n' " + " ".join(f"'{s}'" for s in settings)
       + " > /etc/dynod/dynod.toml && rm -f /var/lib/dynod/state.db* && "
         "systemctl restart dynod")
    wait_for(f"the API on {name}", partial(api_ready, m))


@pytest.fixture(scope="module")
def two(stack: Path) -> Iterator[list[Machine]]:
    with cluster(2, binds=[stack_bind(stack)]) as machines:
        yield machines


def form(two: list[Machine]) -> None:
    """The two machines as one cluster (see the module's docstring): etcd on node-b,
    the members' records, each dynod on etcd as its node with its pool."""
    _a, b = two
    start_etcd(b, list(zip(two, NODES, POOLS, strict=True)))
    for m, name, pool in zip(two, NODES, POOLS, strict=True):
        on_etcd(m, b, name, pool)


@pytest.fixture(scope="module")
def formed(two: list[Machine]) -> dict[str, object]:
    """The two machines as one cluster running one of app shop's two web dynos each,
    each node's dynos published by its keeper. Returns each machine's (``ps --json``)."""
    a, b = two
    form(two)
    # The same slug on both machines (see the module's docstring).
    a.exec(["mkdir", "-p", "/tmp/shop/app"])
    a.exec(["sh", "-c", "cat > /tmp/shop/app/server.py"], input=SERVER)
    a.exec(["tar", "-C", "/tmp/shop", "-czf", "/tmp/shop.tgz", "./app"])
    tarball = a.exec(["base64", "-w0", "/tmp/shop.tgz"]).stdout
    b.exec(["sh", "-c", "base64 -d > /tmp/shop.tgz"], input=tarball)
    dynoctl(a, "apps:create", "shop")
    web = ("--process-type", "web=exec python3 -u server.py")
    dynoctl(a, "slugs:deploy", "-a", "shop", "/tmp/shop.tgz", *web)
    dynoctl(b, "slugs:deploy", "-a", "shop", "/tmp/shop.tgz", *web)
    dynoctl(a, "ps:scale", "-a", "shop", "web=2")
    return {"dynos": [up_web(a, name) for name in NODES]}


def test_each_router_reaches_every_web_dyno_of_the_cluster(
        two: list[Machine], formed: dict[str, object]) -> None:
    dynos = formed["dynos"]
    assert isinstance(dynos, list)
    addresses = [str(d["address"]) for d in dynos]
    # Each machine's dyno has an address of its own pool.
    assert addresses[0].startswith("10.213.") and int(addresses[0].split(".")[2]) < 16
    assert 16 <= int(addresses[1].split(".")[2]) < 32
    for m, other_pool, other in zip(two, reversed(POOLS), reversed(two), strict=True):
        routes = sh(m, "ip -4 route show proto 213")[1]
        assert f"{other_pool} via {other.test_address}" in routes, routes
    want = {f"{d['name']} at {d['address']}" for d in dynos}
    for m in two:
        try:
            wait_for(f"both dynos through {m.name}'s router", partial(answered_by, m, want),
                     timeout=30)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{diagnose(m)}") from None
        print(f"{m.name}'s router answers from: {sorted(want)}")


def test_a_dyno_reaches_nothing_of_the_other_machine(
        two: list[Machine], formed: dict[str, object]) -> None:
    dynos = formed["dynos"]
    assert isinstance(dynos, list)
    rows, breaches = [], []
    for i, (m, d) in enumerate(zip(two, dynos, strict=True)):
        other, other_dyno = two[1 - i], dynos[1 - i]
        targets = {
            f"{NODES[1 - i]}'s {other_dyno['name']}": f"{other_dyno['address']}:5000",
            f"{NODES[1 - i]}'s sshd": f"{other.test_address}:22",
            f"{NODES[1 - i]}'s API": f"{other.test_address}:{API_PORT}",
            f"{NODES[1 - i]}'s router": f"{other.test_address}:80",
        }
        if NODES[1 - i] == "node-b":
            targets["node-b's etcd (client)"] = f"{other.test_address}:{ETCD}"
            targets["node-b's etcd (peer)"] = f"{other.test_address}:2380"
        for what, target in targets.items():
            # The control: the machine itself reaches it (so it listens and routes).
            host, _, port = target.rpartition(":")
            rc, out = sh(m, f"python3 -c 'import socket; socket.create_connection("
                            f"(\"{host}\", {port}), timeout=3).close()'", ok=False)
            from_host = "reached" if rc == 0 else f"refused ({out.strip()[-80:]})"
            from_dyno = connect(m, str(d["address"]), target)
            rows.append(f"{NODES[i]} host -> {what} {target}: {from_host}; "
                        f"{NODES[i]} {d['name']} -> it: {from_dyno}")
            if not from_host.startswith("reached"):
                breaches.append(f"control: {NODES[i]}'s host cannot reach {what}: {from_host}")
            if not from_dyno.startswith("refused"):
                breaches.append(f"{NODES[i]}'s {d['name']} reached {what} ({target})")
        # Defence in depth, the dyno's own cgroup filter: the other machine's pool is
        # out of its IPAddressAllow= but for its gateway (that machine's add-on servers,
        # test_addon_cluster.py), that machine's address (its router) is in.
        allow = [IPv4Network(n) for n in sh(
            m, f"systemctl show -p IPAddressAllow --value {d['unit']}")[1].split()]
        other_pool = IPv4Network(POOLS[1 - i])
        assert allow and [n for n in allow if n.overlaps(other_pool)] == [
            IPv4Network(f"{other_pool.network_address + 1}/32")], allow
        assert any(IPv4Address(other.test_address) in n for n in allow), allow
    # A one-off dyno (dynoctl run) on node-a: the same network as a web dyno.
    a, b = two
    probed = [f"{dynos[1]['address']}:5000", f"{b.test_address}:22",
              f"{b.test_address}:{ETCD}"]
    run = a.exec(["dynoctl", "run", "-a", "shop", "--no-tty",
                  "python3 server.py probe " + " ".join(probed)], check=False, timeout=120)
    lines = dict(line.split(" ", 1) for line in run.stdout.splitlines() if " " in line)
    rows += [f"node-a one-off -> {t}: {lines.get(t, 'no answer')}" for t in probed]
    breaches += [f"node-a's one-off dyno: {t}: {lines.get(t)}" for t in probed
                 if not lines.get(t, "").startswith("refused")]
    print("\n" + "\n".join(rows))
    assert not breaches, "\n".join(breaches) + f"\n{run.stdout}{run.stderr}"


def test_a_nodes_records_vanishing_takes_its_dynos_out_of_every_router(
        two: list[Machine], formed: dict[str, object]) -> None:
    a, b = two
    dynos = formed["dynos"]
    assert isinstance(dynos, list)
    mine = f"{dynos[0]['name']} at {dynos[0]['address']}"
    theirs = f" {dynos[1]['address']} "
    # node-a's dynod restarts first: its router adopts node-b's server as node-b's
    # (to keep or drop by what node-b publishes), not as one of its own dynos.
    sh(a, "systemctl restart dynod")
    wait_for("the API on node-a", partial(api_ready, a))
    assert theirs in servers(a)
    # node-b's dynod stops: its keeper's lease lapses within NODE_TTL, and with it every
    # record node-b published (its dyno itself goes on running).
    dynod_b = dynos_key(b, "node-b")
    sh(b, "systemctl stop dynod")
    stopped = time.monotonic()
    wait_for("node-b's records gone", lambda: not dynos_key(b, "node-b"),
             timeout=NODE_TTL + 10)
    vanished = time.monotonic()
    wait_for("node-b's dyno out of node-a's HAProxy",
             lambda: theirs not in servers(a), timeout=15)
    print(f"node-b's records (had {dynod_b}) vanished {vanished - stopped:.1f} s after its "
          f"dynod stopped; its dyno left node-a's router "
          f"{time.monotonic() - vanished:.1f} s after that")
    # (The leader, node-a, places node-b's dyno on node-a meanwhile: it may answer too.)
    got = answers(a, 6)
    assert mine in got and not any(theirs.strip() in x for x in got), got
    # cluster:remove node-b: node-a's route to its pool goes.
    etcd(b, "kv/deleterange", {"key": b64("/dynod-cluster/members/node-b")})
    wait_for("node-a's route to node-b's pool removed",
             lambda: POOLS[1] not in sh(a, "ip -4 route show proto 213")[1], timeout=15)


def test_the_pool_shrinks_to_the_machines_share_with_dynos_running(
        stack_machine: Machine) -> None:
    """``cluster:init`` gives the first machine the first /20 of the range it had whole
    (10.213.0.0/16): its running dynos keep serving, new ones take addresses of the
    /20, and the bridge is the /20's gateway only."""
    m = stack_machine
    deploy(m, "shop", web="exec python3 -u server.py")
    before = all_up(m, "shop", 1)[0]
    assert sh(m, "ip -4 -o addr show dynod0")[1].count("10.213.0.1/16") == 1
    sh(m, "mkdir -p /etc/dynod && echo 'address_pool = \"10.213.0.0/20\"' "
          "> /etc/dynod/dynod.toml && systemctl restart dynod")
    wait_for("the API", partial(api_ready, m))
    # The running dyno was adopted, not restarted.
    still = all_up(m, "shop", 1)[0]
    assert (still["unit"], still["address"]) == (before["unit"], before["address"])
    # The next dyno's start lays the bridge out for the new pool (the dyno host does it).
    dynoctl(m, "ps:scale", "-a", "shop", "web=2")
    new = next(d for d in all_up(m, "shop", 2) if d["name"] == "web.2")
    assert IPv4Address(str(new["address"])) in IPv4Network("10.213.0.0/20")
    bridge = sh(m, "ip -4 -o addr show dynod0")[1]
    assert "10.213.0.1/20" in bridge and "/16" not in bridge, bridge
    # Both serve, directly and through the router: the old one's gateway still answers.
    for d in (still, new):
        assert http(m, str(d["address"])) == "hello from dyno\n"
    got = {sh(m, f"curl -sS -m 10 -H 'Host: {HOST}' http://127.0.0.1/")[1] for _ in range(4)}
    assert got == {"hello from dyno\n"}, got
