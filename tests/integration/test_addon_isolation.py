"""Add-on isolation in the sandbox (issue 15 item 4): an add-on's port on the dynos'
gateway is reachable from the dynos of the apps it is attached to (web, one-off, release
phase) and from nothing else, and a detached app loses access at once, its open
sessions too.

``test_network_admits_only_attached_dynos`` proves the network half with a plain TCP
server on an add-on port (an add-on record written to the store, dynod restarted so it
reads it back); ``test_real_servers_turn_other_apps_away`` does it with dynod's own
PostgreSQL and Redis through ``dynoctl addons:*``.
"""

from __future__ import annotations

import json
import re
import shlex
import time
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.integration.test_dynos import all_up, dynoctl, journal, ps, wait_for
from tests.sandbox.machine import Machine

pytestmark = pytest.mark.integration

APP_SOURCE = Path(__file__).with_name("dyno_app.py")
PROJECT = Path(__file__).resolve().parents[2]
GW = "10.213.0.1"
PORT = 6390  # a Redis-like port of the plain TCP server

# What the dynos run to probe: connect (or say why not), then say PING and print the
# first line the server answers (Redis: -NOAUTH; the stand-in greets first).
PROBE = """import socket, sys
s = socket.socket()
s.settimeout(3)
try:
    s.connect((sys.argv[1], int(sys.argv[2])))
except OSError as exc:
    sys.exit(print("blocked:", exc or type(exc).__name__))
s.sendall(b"PING\\r\\n")
try:
    print("open", s.recv(200).decode().splitlines()[0])
except (OSError, IndexError) as exc:
    print("open, then:", exc or type(exc).__name__)
"""
# Holds a session open (after an optional first line, e.g. AUTH) and reports when it
# stops getting answers: "held PORT", then "cut PORT: why".
HOLD = """import socket, sys, time
port = sys.argv[2]
s = socket.create_connection((sys.argv[1], int(port)), timeout=3)
if len(sys.argv) > 3:
    s.sendall(sys.argv[3].encode() + b"\\r\\n")
s.recv(64)
print("held", port, flush=True)
while True:
    try:
        s.sendall(b"PING\\r\\n")
        if not s.recv(64):
            raise OSError("closed by the server")
    except OSError as exc:
        print(f"cut {port}:", exc or type(exc).__name__, flush=True)
        sys.exit(0)
    time.sleep(0.3)
"""
# A stand-in add-on server on the gateway: says hello and who you are, then echoes.
ECHO = f"""import socket, threading
def serve(c, addr):
    with c:
        c.sendall(("hello " + addr[0] + "\\n").encode())
        while data := c.recv(64):
            c.sendall(data)
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("{GW}", {PORT}))
s.listen()
while True:
    threading.Thread(target=serve, args=s.accept(), daemon=True).start()
"""
STORE = f"""import sys
from datetime import UTC, datetime
from pathlib import Path
from dynod.model.addons import REDIS, Addon, AddonState, Attachment, Credentials
from dynod.store.sqlite import SqliteStore
store = SqliteStore.open(Path("/var/lib/dynod/state.db"))
now = datetime.now(UTC)
with store.write() as tx:
    if sys.argv[1] == "attach":
        tx.insert_addon(Addon("redis-probe-1", REDIS, "mini", "shop", AddonState.CREATED,
                              now, Credentials("{GW}", {PORT}, "", "x", "0")))
        tx.insert_attachment(Attachment("redis-probe-1", "shop", "PROBE", now))
    else:
        tx.delete_attachment("redis-probe-1", "shop")
store.close()
"""


def deploy(m: Machine, app: str, **process_types: str) -> None:
    """Create ``app`` (unless it exists) and release a slug holding dyno_app.py as
    server.py and the probes."""
    m.exec(["mkdir", "-p", f"/tmp/{app}/app"])
    m.exec(["cp", str(APP_SOURCE), f"/tmp/{app}/app/server.py"])
    for name, text in (("probe.py", PROBE), ("hold.py", HOLD)):
        m.exec(["sh", "-c", f"cat > /tmp/{app}/app/{name} <<'EOF'\n{text}EOF\n"])
    m.exec(["tar", "-C", f"/tmp/{app}", "-czf", f"/tmp/{app}.tgz", "./app"])
    if m.exec(["dynoctl", "apps:info", "-a", app], check=False).returncode != 0:
        dynoctl(m, "apps:create", app)
    types = [a for name, cmd in process_types.items() for a in ("--process-type", f"{name}={cmd}")]
    dynoctl(m, "slugs:deploy", "-a", app, f"/tmp/{app}.tgz", *types)


def run(m: Machine, app: str, command: str) -> str:
    proc = m.exec(["dynoctl", "run", "-a", app, "--no-tty", command], check=False,
                  timeout=120)
    assert proc.returncode == 0, f"run {command} in {app}: {proc.stdout}{proc.stderr}"
    return proc.stdout.strip()


def web_probe(m: Machine, app: str, target: str) -> str:
    web = all_up(m, app, 1)[0]
    proc = m.exec(["curl", "-sS", "--max-time", "10",
                   f"http://{web['address']}:5000/probe?connect={target}"])
    return str(json.loads(proc.stdout)["connect"][target])


def members(m: Machine, port: int) -> set[str]:
    proc = m.exec(["nft", "-j", "list", "set", "ip", "dynod", f"addon_{port}"])
    for item in json.loads(proc.stdout)["nftables"]:
        if "set" in item:
            return {str(e) for e in item["set"].get("elem", [])}
    return set()


def restart_dynod(m: Machine) -> None:
    m.exec(["systemctl", "restart", "dynod"], timeout=120)


def store(m: Machine, verb: str) -> None:
    m.exec([str(PROJECT / ".venv/bin/python"), "-c", STORE, verb])


def outside_probe(m: Machine) -> str:
    """Connect to the gateway's add-on port from a network namespace that reaches the
    machine through another interface than the bridge: the public side."""
    m.exec(["sh", "-c", "ip netns add outside && ip link add pub0 type veth peer name pub1 "
                        "netns outside && ip addr add 192.0.2.1/30 dev pub0 && "
                        "ip link set pub0 up && ip -n outside addr add 192.0.2.2/30 dev pub1 && "
                        "ip -n outside link set pub1 up && ip -n outside link set lo up && "
                        f"ip -n outside route add {GW}/32 via 192.0.2.1"])
    try:
        return m.exec(["ip", "netns", "exec", "outside", "python3", "-c", PROBE, GW,
                       str(PORT)]).stdout.strip()
    finally:
        m.exec(["ip", "netns", "del", "outside"], check=False)


def test_network_admits_only_attached_dynos(stack_machine: Machine) -> None:
    m = stack_machine
    web = "exec python3 -u server.py"
    deploy(m, "shop", web=web)
    deploy(m, "blog", web=web)
    shop_web = all_up(m, "shop", 1)[0]
    blog_web = all_up(m, "blog", 1)[0]
    m.exec(["systemd-run", "--unit=addon-stand-in", "python3", "-c", ECHO])
    target = f"{GW}:{PORT}"
    wait_for("the stand-in server listening", lambda: m.exec(
        ["python3", "-c", PROBE, GW, str(PORT)]).stdout.startswith("open hello"))
    # Nothing is attached yet: no dyno reaches the port.
    assert web_probe(m, "shop", target) == "blocked: timed out"

    # An add-on of shop's on that port; dynod reads the dynos and attachments back.
    store(m, "attach")
    restart_dynod(m)
    assert members(m, PORT) == {str(shop_web["address"])}
    assert web_probe(m, "shop", target) == "open"
    probe = f"python3 probe.py {GW} {PORT}"
    got = run(m, "shop", probe)  # a one-off: its own address, admitted before it ran
    assert re.fullmatch(r"open hello 10\.213\.\d+\.\d+", got), got
    assert got != f"open hello {shop_web['address']}"
    # Another app's dynos, web and one-off, and the public side get nothing.
    assert web_probe(m, "blog", target) == "blocked: timed out"
    assert run(m, "blog", probe) == "blocked: timed out"
    assert outside_probe(m) == "blocked: timed out"
    assert str(blog_web["address"]) not in members(m, PORT)
    # The release phase connects at once, before anything else runs in it.
    out = m.exec(["dynoctl", "slugs:deploy", "-a", "shop", "/tmp/shop.tgz",
                  "--process-type", f"web={web}", "--process-type", f"release={probe}"],
                 check=False, timeout=300)
    released = dynoctl(m, "releases:output", "-a", "shop")
    assert re.search(r"open hello 10\.213\.", released), out.stdout + out.stderr + released
    # Gone dynos leave the set: only the new web dyno is there.
    wait_for("shop's new web dyno alone in the set", lambda: members(m, PORT) == {
        str(d["address"]) for d in ps(m, "shop") if d["type"] == "web" and d["state"] == "up"})

    # A session held open by a detached one-off, then the app is detached.
    dynoctl(m, "run:detached", "-a", "shop", f"python3 -u hold.py {GW} {PORT}")
    wait_for("the held session", lambda: f"held {PORT}" in journal(
        m, "DYNOD_APP=shop", "DYNOD_SOURCE=app"), timeout=60)
    store(m, "detach")
    started = time.monotonic()
    restart_dynod(m)
    wait_for("the held session cut", lambda: f"cut {PORT}: timed out" in journal(
        m, "DYNOD_APP=shop", "DYNOD_SOURCE=app"), timeout=30)
    assert time.monotonic() - started < 30
    assert members(m, PORT) == set()
    assert web_probe(m, "shop", target) == "blocked: timed out"
    assert run(m, "shop", probe) == "blocked: timed out"
    # The host itself (dynod, over loopback) still reaches it.
    assert m.exec(["python3", "-c", PROBE, GW, str(PORT)]).stdout.startswith("open hello")


def config_get(m: Machine, app: str, var: str) -> str:
    return dynoctl(m, "config:get", var, "-a", app).strip()


def port_of(url: str) -> int:
    found = re.search(r"@([\d.]+):(\d+)/", url)
    assert found and found.group(1) == GW, url
    return int(found.group(2))


def psql(m: Machine, app: str, url: str, sql: str = "select 'in'") -> str:
    """psql in a one-off dyno of ``app``: its output, or its error."""
    return run(m, app, f"PGCONNECT_TIMEOUT=4 psql {shlex.quote(url)} -Atc "
                       f"{shlex.quote(sql)} 2>&1 || true")


def test_real_servers_turn_other_apps_away(stack_machine: Machine) -> None:
    m = stack_machine
    web = "exec python3 -u server.py"
    for app in ("shop", "blog", "news", "other"):
        deploy(m, app, web=web)
    # Heroku's flow: create, and the app's next dynos have the URLs.
    dynoctl(m, "addons:create", "heroku-postgresql", "-a", "shop", "--name", "postgresql-shop")
    dynoctl(m, "addons:create", "heroku-redis", "-a", "shop", "--name", "redis-shop")
    dynoctl(m, "addons:create", "heroku-postgresql", "-a", "blog", "--name", "postgresql-blog")
    dynoctl(m, "addons:create", "heroku-redis", "-a", "blog", "--name", "redis-blog")
    database = config_get(m, "shop", "DATABASE_URL")
    redis = config_get(m, "shop", "REDIS_URL")
    pg_port, redis_port = port_of(database), port_of(redis)
    assert port_of(config_get(m, "blog", "DATABASE_URL")) == pg_port  # the same server

    # The owner: its one-offs, its web dyno and its release phase reach both.
    assert psql(m, "shop", database) == "in"
    assert run(m, "shop", f"redis-cli -u {shlex.quote(redis)} --no-auth-warning ping") == "PONG"
    wait_for("shop's web dyno on the new release", lambda: web_probe(
        m, "shop", f"{GW}:{redis_port}") == "open", timeout=90)
    assert web_probe(m, "shop", f"{GW}:{pg_port}") == "open"
    out = m.exec(["dynoctl", "slugs:deploy", "-a", "shop", "/tmp/shop.tgz",
                  "--process-type", f"web={web}", "--process-type",
                  "release=psql \"$DATABASE_URL\" -Atc \"select 'migrated ' || current_user\""],
                 check=False, timeout=300)
    released = dynoctl(m, "releases:output", "-a", "shop")
    assert re.search(r"^migrated \S+$", released, re.M), out.stdout + out.stderr + released

    # An app with no add-on: nothing answers on either port (dropped, no session).
    got = psql(m, "news", database)
    assert "timeout expired" in got, got
    assert run(m, "news", f"python3 probe.py {GW} {redis_port}") == "blocked: timed out"
    assert web_probe(m, "news", f"{GW}:{pg_port}") == "blocked: timed out"
    # An app with its own database on the same server: turned away from shop's before
    # any password is asked; its own works; shop's Redis is dropped.
    got = psql(m, "blog", database)
    assert "pg_hba.conf rejects connection" in got or "no pg_hba.conf entry" in got, got
    assert "password authentication failed" not in got, got
    assert psql(m, "blog", config_get(m, "blog", "DATABASE_URL")) == "in"
    # ... and with its own Redis on the same machine, shop's Redis is dropped all the same,
    # while its own answers.
    assert run(m, "blog", f"python3 probe.py {GW} {redis_port}") == "blocked: timed out"
    blog_redis = config_get(m, "blog", "REDIS_URL")
    assert port_of(blog_redis) != redis_port
    assert run(m, "blog", f"redis-cli -u {shlex.quote(blog_redis)} --no-auth-warning "
                          "ping") == "PONG"

    # Attached to another app: it gets in; detached, it is out at once, held sessions too.
    dynoctl(m, "addons:attach", "postgresql-shop", "-a", "other", "--as", "SHOP")
    dynoctl(m, "addons:attach", "redis-shop", "-a", "other", "--as", "SHOP_REDIS")
    assert psql(m, "other", database) == "in"
    assert run(m, "other", f"python3 probe.py {GW} {redis_port}") == (
        "open -NOAUTH Authentication required.")
    app_log = partial(journal, m, "DYNOD_APP=other", "DYNOD_SOURCE=app")
    hold = ("(echo '\\echo held pg'; echo '\\o /dev/null'; while sleep 0.3 && "
            f"echo 'select 1;'; do :; done) | psql {shlex.quote(database)} -Atq; "
            "echo \"cut pg: $?\"")
    dynoctl(m, "run:detached", "-a", "other", hold)
    password = urlsplit(redis).password
    dynoctl(m, "run:detached", "-a", "other",
            f"python3 -u hold.py {GW} {redis_port} 'AUTH {password}'")
    wait_for("the held sessions", lambda: "held pg" in app_log()
             and f"held {redis_port}" in app_log(), timeout=60)
    dynoctl(m, "addons:detach", "SHOP", "-a", "other")
    # At once: the next connection is dropped, the open session was ended (by the
    # server: "terminating connection due to administrator command", psql's exit 2).
    got = psql(m, "other", database)
    assert "timeout expired" in got, got
    wait_for("the held Postgres session cut", lambda: "cut pg: 2" in app_log(), timeout=10)
    assert f"cut {redis_port}" not in app_log()  # Redis is still attached
    assert run(m, "other", f"python3 probe.py {GW} {redis_port}") == (
        "open -NOAUTH Authentication required.")
    dynoctl(m, "addons:detach", "SHOP_REDIS", "-a", "other")
    assert run(m, "other", f"python3 probe.py {GW} {redis_port}") == "blocked: timed out"
    wait_for("the held Redis session cut", lambda: f"cut {redis_port}:" in app_log(),
             timeout=10)
    # shop itself keeps its access.
    assert psql(m, "shop", database) == "in"
    # Other add-ons: the servers are processes on the host (users postgres and redis),
    # outside the bridge; over loopback their users are refused every add-on port (a
    # Redis could otherwise be made to REPLICAOF or MIGRATE to another). dynod is not.
    for user, port in (("redis", pg_port), ("redis", redis_port), ("postgres", redis_port)):
        got = m.exec(["runuser", "-u", user, "--", "python3", "-c", PROBE, GW,
                      str(port)]).stdout.strip()
        assert got == "blocked: [Errno 111] Connection refused", (user, port, got)
    got = m.exec(["python3", "-c", PROBE, GW, str(redis_port)]).stdout.strip()
    assert got == "open -NOAUTH Authentication required.", got
