"""Add-ons across a cluster (issue 19): app shop's Postgres and Redis run on node-a,
where ``addons:create`` ran; its dynos on node-b (a web dyno placed there, a one-off
run through node-b's API, as ``rails db:migrate`` would be) read and write both through
their config vars' URLs, which name node-a's gateway. Another app's dynos on node-b
are turned away by both, network and servers, and node-b's dynos reach nothing else of
node-a (its sshd and API, on its gateway or on its own address).

The cluster is formed as test_crossnet.py forms it (etcd on node-b, the members'
records written by the test, both slugs deployed on both machines).
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from dynod.addons.postgres import parse_hba
from tests.integration.conftest import cluster, stack_bind
from tests.integration.test_addon_isolation import config_get, deploy, members, port_of, run
from tests.integration.test_builds import sh
from tests.integration.test_crossnet import API_PORT, NODES, POOLS, form, up_web
from tests.integration.test_dynos import dynoctl, ps, wait_for
from tests.sandbox.machine import Machine

pytestmark = [pytest.mark.integration, pytest.mark.network]

GW = "10.213.0.1"  # node-a's gateway: where its add-on servers listen
WEB = "exec python3 -u server.py"
HBA = "/var/lib/dynod/addons/postgresql/data/pg_hba.conf"


@pytest.fixture(scope="module")
def two(stack: Path) -> Iterator[list[Machine]]:
    with cluster(2, binds=[stack_bind(stack)]) as machines:
        yield machines


def deploy_on_both(two: list[Machine], app: str) -> None:
    """``app``'s slug (dyno_app.py and the probes) released on both machines: the same
    tarball, so both have its blob (this cluster has no peer API to fetch it over)."""
    a, b = two
    deploy(a, app, web=WEB)
    tarball = a.exec(["base64", "-w0", f"/tmp/{app}.tgz"]).stdout
    b.exec(["sh", "-c", f"base64 -d > /tmp/{app}.tgz"], input=tarball)
    dynoctl(b, "slugs:deploy", "-a", app, f"/tmp/{app}.tgz", "--process-type", f"web={WEB}")


def connects(m: Machine, dyno: dict[str, object], *targets: str) -> dict[str, str]:
    """What the web dyno ``dyno`` (on ``m``) gets connecting to each target."""
    query = "&".join(f"connect={t}" for t in targets)
    out = m.exec(["curl", "-sS", "--max-time", "30",
                  f"http://{dyno['address']}:5000/probe?{query}"]).stdout
    got: dict[str, str] = json.loads(out)["connect"]
    return got


@pytest.fixture(scope="module")
def shop(two: list[Machine]) -> dict[str, object]:
    """The cluster with shop (Postgres and Redis on node-a, a web dyno up on each
    machine) and blog (no add-on). Returns shop's URLs and its two web dynos."""
    a, _b = two
    form(two)
    for app in ("shop", "blog"):
        deploy_on_both(two, app)
    dynoctl(a, "addons:create", "heroku-postgresql", "-a", "shop", "--name", "postgresql-shop")
    dynoctl(a, "addons:create", "heroku-redis", "-a", "shop", "--name", "redis-shop")
    dynoctl(a, "ps:scale", "-a", "shop", "web=2")
    return {"database": config_get(a, "shop", "DATABASE_URL"),
            "redis": config_get(a, "shop", "REDIS_URL"),
            "webs": [up_web(a, name) for name in NODES]}


def test_an_apps_dynos_on_another_machine_use_its_addons(
        two: list[Machine], shop: dict[str, object]) -> None:
    a, b = two
    database, redis = str(shop["database"]), str(shop["redis"])
    # The URLs name node-a's gateway, the same for every machine's dynos.
    pg_port, redis_port = port_of(database), port_of(redis)
    webs = shop["webs"]
    assert isinstance(webs, list)
    web_b = webs[1]
    assert IPv4Address(str(web_b["address"])) in IPv4Network(POOLS[1])
    # node-b's web dyno reaches both servers.
    got = connects(b, web_b, f"{GW}:{pg_port}", f"{GW}:{redis_port}")
    assert set(got.values()) == {"open"}, got
    # A one-off through node-b's API runs on node-b and migrates, writes and reads, by
    # its config vars; node-a sees its address itself (not masqueraded).
    migrate = ('psql "$DATABASE_URL" -Atq -c "create table if not exists visits '
               "(node text)\" -c \"insert into visits values ('node-b')\" "
               '-c "select count(*), host(inet_client_addr()) from visits"')
    got_b = run(b, "shop", migrate)
    count, _, client = got_b.partition("|")
    assert count == "1", got_b
    assert IPv4Address(client) in IPv4Network(POOLS[1]), got_b
    assert run(b, "shop", 'redis-cli -u "$REDIS_URL" --no-auth-warning set greeting '
                          "from-node-b") == "OK"
    # The same database and Redis, read from node-a.
    assert run(a, "shop", 'psql "$DATABASE_URL" -Atc "select node from visits"') == "node-b"
    assert run(a, "shop", 'redis-cli -u "$REDIS_URL" --no-auth-warning get greeting') == (
        "from-node-b")
    print(f"node-b's one-off: {got_b!r}; node-b's {web_b['name']} at "
          f"{web_b['address']} -> {got}")


def test_other_apps_dynos_on_another_machine_are_turned_away(
        two: list[Machine], shop: dict[str, object]) -> None:
    a, b = two
    database, redis = str(shop["database"]), str(shop["redis"])
    pg_port, redis_port = port_of(database), port_of(redis)
    # blog's one-offs on node-b: both servers' ports drop them (no session at all).
    got = run(b, "blog", f"PGCONNECT_TIMEOUT=4 psql {shlex.quote(database)} -Atc "
                         "'select 1' 2>&1 || true")
    assert "timeout expired" in got, got
    assert run(b, "blog", f"python3 probe.py {GW} {redis_port}") == "blocked: timed out"
    # ... and so is blog's web dyno, wherever it runs.
    blog_web = next(d for d in ps(a, "blog") if d["type"] == "web" and d["state"] == "up")
    on = b if blog_web.get("node") == "node-b" else a
    reached = connects(on, blog_web, f"{GW}:{pg_port}", f"{GW}:{redis_port}")
    assert all(v.startswith("blocked") for v in reached.values()), reached
    # The servers too: node-a's sets and pg_hba admit exactly shop's dynos (both
    # machines' web dynos, the one-offs gone), never blog's.
    def shops() -> set[str]:
        return {str(d["address"]) for d in ps(a, "shop") if d["type"] == "web"
                and d["state"] == "up"}

    def admitted() -> tuple[set[str], set[str], dict[str, set[str]]]:
        hba = parse_hba(a.exec(["cat", HBA]).stdout)
        return members(a, pg_port), members(a, redis_port), hba

    wait_for("node-a's sets and pg_hba equal to shop's web dynos", lambda: admitted() == (
        shops(), shops(), {"postgresql-shop": shops()}), timeout=30)
    assert str(blog_web["address"]) not in str(admitted())
    assert any(IPv4Address(x) in IPv4Network(POOLS[1]) for x in shops())


def test_nothing_else_of_the_home_machine_is_reachable_from_another_machine(
        two: list[Machine], shop: dict[str, object]) -> None:
    a, b = two
    webs = shop["webs"]
    assert isinstance(webs, list)
    redis_port = port_of(str(shop["redis"]))
    targets = {"sshd on its gateway": f"{GW}:22",
               "API on its gateway": f"{GW}:{API_PORT}",
               "router on its gateway": f"{GW}:80",
               "sshd": f"{a.test_address}:22",
               "API": f"{a.test_address}:{API_PORT}"}
    # The control: node-a itself reaches each (so each listens).
    for what, target in targets.items():
        host, _, port = target.rpartition(":")
        rc, out = sh(a, f"python3 -c 'import socket; socket.create_connection("
                        f"(\"{host}\", {port}), timeout=3).close()'", ok=False)
        assert rc == 0, f"node-a cannot reach its own {what} {target}: {out}"
    got = connects(b, webs[1], *targets.values())
    breaches = {t: r for t, r in got.items() if not r.startswith("blocked")}
    assert not breaches, got
    # A one-off on node-b (of the attached app) likewise.
    for target in (f"{GW}:22", f"{GW}:{API_PORT}"):
        host, _, port = target.rpartition(":")
        assert run(b, "shop", f"python3 probe.py {host} {port}") == "blocked: timed out"
    # While the add-on port itself stays open to it.
    assert run(b, "shop", f"python3 probe.py {GW} {redis_port}") == (
        "open -NOAUTH Authentication required.")
    print(f"node-b's shop dynos -> node-a: {got}")
