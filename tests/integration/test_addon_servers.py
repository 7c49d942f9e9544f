"""The add-on servers for real, in a sandbox machine: dynod's ``AddonManager`` (run with
the project's Python inside the machine, as the daemon would) provisions a Postgres and
a Redis add-on on Debian's servers; clients connect with the credentials it returns at
the bridge's gateway; the plans' limits hold; pg_hba turns a non-admitted address away
before any password is checked; the data outlives ``systemctl restart`` and a reboot
(dynod starts the servers at boot); the units are in ``dynod-addons.slice`` and log to
journald."""

from __future__ import annotations

import json
import re
import shlex

import pytest

from tests.integration.test_dynos import wait_for
from tests.sandbox.machine import PROJECT, Machine

pytestmark = pytest.mark.integration

PY = str(PROJECT / ".venv" / "bin" / "python")
PG = "postgresql-sturdy-10101"
RD = "redis-brisk-20202"
PG_UNIT = "dynod-postgresql.service"
RD_UNIT = f"dynod-redis@{RD}.service"

# AddonManager built the way dynod/__main__.py builds it; one action per run, so each
# run is a fresh process reading the servers' state back, as after a restart of dynod.
DRIVER = """
import json, sys
from dataclasses import asdict
from functools import partial
from pathlib import Path
from dynod.addons.manager import AddonManager
from dynod.model.addons import Plan
from dynod.system import netns
bridge = netns.plan_bridge("10.213.0.0/16")
m = AddonManager(Path("/var/lib/dynod"), str(bridge.gateway),
                 partial(netns.ensure_bridge, bridge, Path("/run/dynod")))
action, args = sys.argv[1], json.loads(sys.argv[2])
if action == "provision":
    service, name, plan, connections, memory = args
    c = m.provision(name, Plan(service, plan, connections, memory, None, False))
    print(json.dumps({**asdict(c), "url": c.url(service)}))
elif action == "rotate":
    c = m.rotate_credentials(args[1], args[0])
    print(json.dumps({**asdict(c), "url": c.url(args[0])}))
elif action == "admit":
    m.admit({k: set(v) for k, v in args.items()})
elif action == "info":
    print(json.dumps(dict(m.info(args[1], args[0]))))
elif action == "reset":
    m.reset(args[1], args[0])
elif action == "deprovision":
    m.deprovision(args[1], args[0])
"""

# Raw RESP over TCP (the machine has no Redis library): open N sessions, AUTH each,
# keep them all open, print each AUTH reply.
REDIS_SESSIONS = """
import json, socket, sys
host, port, password, count = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
def cmd(*args):
    return b"*%d\\r\\n" % len(args) + b"".join(
        b"$%d\\r\\n%s\\r\\n" % (len(a.encode()), a.encode()) for a in args)
held, replies = [], []
for _ in range(count):
    s = socket.create_connection((host, port), timeout=5)
    s.sendall(cmd("AUTH", "default", password))
    replies.append(s.recv(200).decode().strip())
    held.append(s)
print(json.dumps(replies))
"""


def manager(m: Machine, action: str, *args: object) -> str:
    payload: object = args[0] if action == "admit" else list(args)
    return m.exec([PY, "-c", DRIVER, action, json.dumps(payload)], timeout=180).stdout


def sh(m: Machine, script: str) -> tuple[int, str]:
    proc = m.exec(["bash", "-c", script], check=False, timeout=120)
    return proc.returncode, proc.stdout + proc.stderr


def psql(m: Machine, url: str, sql: str) -> tuple[int, str]:
    return sh(m, f"psql -X -q -At {shlex.quote(url)} -c {shlex.quote(sql)}")


def rcli(m: Machine, url: str, *args: str, stdin: str = "") -> tuple[int, str]:
    redirect = f" < {shlex.quote(stdin)}" if stdin else ""
    return sh(m, f"redis-cli --no-auth-warning -u {shlex.quote(url)} "
                 f"{' '.join(map(shlex.quote, args))}{redirect}")


def test_addons_are_real_limited_admitted_and_survive_restarts_and_a_reboot(
        persistent_machine: Machine) -> None:
    m = persistent_machine
    pg = json.loads(manager(m, "provision", "heroku-postgresql", PG, "essential-0", 2, None))
    rd = json.loads(manager(m, "provision", "heroku-redis", RD, "mini", 2, 5))
    assert pg["host"] == rd["host"] == "10.213.0.1"
    assert (pg["port"], pg["user"], pg["database"]) == (5432, "postgresql_sturdy_10101",
                                                        "postgresql_sturdy_10101")
    assert rd["port"] == 6380

    # Not admitted yet: pg_hba turns the client away before asking for a password
    # (a wrong one gets the same answer, not "password authentication failed").
    wrong = re.sub(r":[0-9a-f]{64}@", ":wrong@", pg["url"])
    for url in (pg["url"], wrong):
        rc, out = psql(m, url, "SELECT 1")
        assert rc != 0
        assert ('pg_hba.conf rejects connection for host "' in out
                and f'user "{pg["user"]}", database "{pg["database"]}"' in out), out
    # The address the server sees for this machine's clients (the bridge's address
    # reached over loopback) is the one to admit.
    source = re.search(r'rejects connection for host "([0-9.]+)"', out)
    assert source, out
    client = source.group(1)
    manager(m, "admit", {PG: [client], RD: [client]})

    rc, out = psql(m, pg["url"], "CREATE TABLE orders (id int); "
                                 "INSERT INTO orders SELECT generate_series(1, 42); "
                                 "SELECT count(*) FROM orders")
    assert (rc, out.strip()) == (0, "42"), out
    assert rcli(m, rd["url"], "SET", "greeting", "hello")[1].strip() == "OK"

    # CONNECTION LIMIT of the plan (2 here): two sessions held, the third refused.
    sh(m, f"for i in 1 2; do systemd-run --quiet --unit=hold-pg-$i psql -X "
          f"{shlex.quote(pg['url'])} -c 'SELECT pg_sleep(60)'; done")
    wait_for("two held sessions", lambda: sh(
        m, "psql -X -At -h /run/dynod-postgresql -U postgres -c \"SELECT count(*) FROM "  # noqa: S608
           f"pg_stat_activity WHERE usename = '{pg['user']}'\"")[1].strip() == "2")
    rc, out = psql(m, pg["url"], "SELECT 1")
    assert rc != 0 and f'too many connections for role "{pg["user"]}"' in out, out
    sh(m, "systemctl stop hold-pg-1 hold-pg-2")

    # maxmemory with noeviction (5 MB here): writes fail with Redis' OOM error, and what
    # was written stays.
    sh(m, "head -c 1500000 /dev/zero | tr '\\0' x > /tmp/blob")
    answers = [rcli(m, rd["url"], "-x", "SET", f"blob{i}", stdin="/tmp/blob")[1].strip()
               for i in range(6)]
    assert answers[0] == "OK"
    assert "OOM command not allowed when used memory > 'maxmemory'." in answers, answers
    assert rcli(m, rd["url"], "GET", "greeting")[1].strip() == "hello"
    # maxclients: the plan's 2 sessions and the one kept for dynod; the next is refused.
    replies = json.loads(m.exec([PY, "-c", REDIS_SESSIONS, rd["host"], str(rd["port"]),
                                 rd["password"], "4"]).stdout)
    assert replies == ["+OK", "+OK", "+OK", "-ERR max number of clients reached"], replies
    # The app's user may not lift its limits.
    out = rcli(m, rd["url"], "CONFIG", "SET", "maxmemory", "0")[1]
    assert "NOPERM" in out, out

    # Inspectable with systemd's tools, in dynod-addons.slice under dynod.slice.
    for unit, ready in ((PG_UNIT, "database system is ready to accept connections"),
                        (RD_UNIT, "Ready to accept connections")):
        status = sh(m, f"systemctl status --no-pager {unit}")[1]
        assert "Active: active (running)" in status, status
        assert f"/dynod.slice/dynod-addons.slice/{unit}" in status, status
        assert ready in sh(m, f"journalctl --no-pager -o cat -u {unit}")[1]

    # systemctl restart: the data is still there.
    sh(m, f"systemctl restart {PG_UNIT} {RD_UNIT}")
    assert psql(m, pg["url"], "SELECT count(*) FROM orders")[1].strip() == "42"
    assert rcli(m, rd["url"], "GET", "greeting")[1].strip() == "hello"

    # A reboot: dynod starts both servers at boot, before any dyno; the data, the port
    # and the password are as they were. (dynod's own admission pass at its start has
    # no add-on in its store, so this test admits its client again.)
    m.reboot()
    wait_for("both units active after the reboot", lambda: all(
        sh(m, f"systemctl is-active {u}")[1].strip() == "active" for u in (PG_UNIT, RD_UNIT)))
    manager(m, "admit", {PG: [client], RD: [client]})
    rc, out = psql(m, pg["url"], "SELECT count(*) FROM orders")
    assert (rc, out.strip()) == (0, "42"), out
    assert rcli(m, rd["url"], "GET", "greeting")[1].strip() == "hello"
    boots = sh(m, f"journalctl --no-pager -o cat -u {PG_UNIT} --list-boots")[1]
    assert len(boots.strip().splitlines()) >= 2, boots


def test_rotate_reset_admit_and_deprovision(machine: Machine) -> None:
    m = machine
    pg = json.loads(manager(m, "provision", "heroku-postgresql", PG, "essential-0", 20,
                            None))
    rd = json.loads(manager(m, "provision", "heroku-redis", RD, "mini", 20, 25))
    client = re.search(r'rejects connection for host "([0-9.]+)"',
                       psql(m, pg["url"], "SELECT 1")[1])
    assert client
    admitted = {PG: [client.group(1)], RD: [client.group(1)]}
    manager(m, "admit", admitted)
    assert psql(m, pg["url"], "CREATE TABLE t AS SELECT 1 AS x")[0] == 0
    rcli(m, rd["url"], "SET", "k", "v")

    # Sessions of an address that loses access are ended, at once.
    sh(m, f"systemd-run --quiet --unit=hold-pg psql -X {shlex.quote(pg['url'])} "
          "-c 'SELECT pg_sleep(60)'")
    sh(m, f"systemd-run --quiet --unit=hold-redis redis-cli --no-auth-warning -u "
          f"{shlex.quote(rd['url'])} BLPOP never 60")
    wait_for("both sessions open", lambda: all(
        sh(m, f"systemctl is-active {u}")[1].strip() == "active"
        for u in ("hold-pg", "hold-redis")) and '"Connections": "1/20"' in manager(
            m, "info", "heroku-redis", RD))
    manager(m, "admit", {})
    wait_for("both sessions ended", lambda: all(
        sh(m, f"systemctl is-active {u}")[1].strip() != "active"
        for u in ("hold-pg", "hold-redis")), timeout=10)
    rc, out = psql(m, pg["url"], "SELECT 1")
    assert rc != 0 and "pg_hba.conf rejects connection" in out, out
    manager(m, "admit", admitted)

    # Rotation: the old password stops working, the new one works, the data stays.
    new_pg = json.loads(manager(m, "rotate", "heroku-postgresql", PG))
    new_rd = json.loads(manager(m, "rotate", "heroku-redis", RD))
    assert new_pg["password"] != pg["password"] and new_rd["password"] != rd["password"]
    rc, out = psql(m, pg["url"], "SELECT 1")
    assert rc != 0 and "password authentication failed" in out, out
    assert psql(m, new_pg["url"], "SELECT x FROM t")[1].strip() == "1"
    assert "WRONGPASS" in rcli(m, rd["url"], "GET", "k")[1]
    assert rcli(m, new_rd["url"], "GET", "k")[1].strip() == "v"
    assert new_rd["port"] == rd["port"]

    info = json.loads(manager(m, "info", "heroku-postgresql", PG))
    assert info["PG Version"].startswith("15") and info["Connections"] == "0/20"
    assert info["Tables"] == "1"
    info = json.loads(manager(m, "info", "heroku-redis", RD))
    assert (info["Maxmemory"], info["Keys"]) == ("25 MB", "1")

    # Reset empties; the credentials still work.
    manager(m, "reset", "heroku-postgresql", PG)
    manager(m, "reset", "heroku-redis", RD)
    rc, out = psql(m, new_pg["url"], "SELECT count(*) FROM pg_stat_user_tables")
    assert (rc, out.strip()) == (0, "0"), out
    assert rcli(m, new_rd["url"], "DBSIZE")[1].strip() == "0"

    # Deprovision leaves no database, role, unit or directory; twice is fine.
    for _ in range(2):
        manager(m, "deprovision", "heroku-postgresql", PG)
        manager(m, "deprovision", "heroku-redis", RD)
    names = sh(m, "psql -X -At -h /run/dynod-postgresql -U postgres -c "
                  "'SELECT datname FROM pg_database UNION ALL SELECT rolname FROM pg_roles'")[1]
    assert pg["database"] not in names, names
    assert sh(m, f"systemctl is-active {RD_UNIT}")[1].strip() in ("inactive", "unknown")
    assert sh(m, "ls /var/lib/dynod/addons/redis")[1].strip() == ""


def test_purge_lists_the_addons_and_removes_them(machine: Machine) -> None:
    """The package's postrm on `apt purge` (run from the tree, dynod stopped as its
    prerm does): it names each add-on, stops the servers and removes their data."""
    m = machine
    manager(m, "provision", "heroku-postgresql", PG, "essential-0", 20, None)
    manager(m, "provision", "heroku-redis", RD, "mini", 20, 25)
    sh(m, "systemctl stop dynod.service")
    rc, out = sh(m, f"sh {PROJECT}/packaging/debian/dynod.postrm purge")
    assert rc == 0, out
    assert "dynod:   add-ons and their data (dynod-postgresql.service, " \
           "dynod-redis@*.service):" in out, out
    assert f"dynod:     {RD} (heroku-redis)\n" in out, out
    assert f"dynod:     {PG} (heroku-postgresql)\n" in out, out
    assert "running dynos" in out and "dynod:   0 running dynos" in out, out
    for unit in (PG_UNIT, RD_UNIT):
        assert sh(m, f"systemctl is-active {unit}")[1].strip() != "active"
    assert sh(m, "ls -A /var/lib/dynod")[1].strip() == ""
