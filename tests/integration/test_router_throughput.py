"""The router kept alive to the dynos and its log path (issue 16 items 1 and 2), on one
machine: hostile client values logged once each without shifting a field, connections
reused (and not, with http-disable-keepalive-to-dyno), thread-per-connection apps (a
thread-capped http.server, gunicorn's sync workers) under a keep-alive soak never
starved, every request answered also logged."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dynod.router.haproxy_config import POOL_MAX_CONN
from tests.integration.conftest import _teardown, stack_bind
from tests.integration.test_builds import EXAMPLES, push, setup_push
from tests.integration.test_dynos import all_up, dynoctl, wait_for
from tests.integration.test_router import CLIENT, deploy_echo, get, router_lines
from tests.sandbox.machine import Machine

pytestmark = pytest.mark.integration

HOST = "shop.dynod.localhost"
CAPPED = Path(__file__).with_name("capped_app.py")
LOAD = Path(__file__).with_name("load_client.py")
# Heroku's router line, every field in order; quoted values may hold escaped quotes.
_Q = r'"((?:[^"\\]|\\.)*)"'
LINE = re.compile(r"^at=info method=GET path=" + _Q + r" host=(\S+) request_id=(\S+) fwd=" + _Q
                  + r" dyno=web\.1 connect=\d+ms service=\d+ms status=200 bytes=\d+ "
                  r"protocol=http$")


def unescape(value: str) -> str:
    return re.sub(r"\\(.)", r"\1", value)


@pytest.fixture(scope="module")
def m(stack: Path) -> Iterator[Machine]:
    machine = Machine(binds=[stack_bind(stack)])
    machine.boot()
    try:
        deploy_echo(machine, "shop")
        all_up(machine, "shop", 1)
        wait_for("shop routed", lambda: get(machine, HOST)[0] == 200)
        yield machine
    finally:
        _teardown(machine)


def send(m: Machine, request: bytes) -> tuple[int, dict[str, Any]]:
    out = m.exec(["python3", str(CLIENT), "raw", request.hex()], timeout=60).stdout
    head, _, body = out.partition("\n\n")  # (text mode: \\r\\n read as \\n)
    assert head.startswith("HTTP/1.1 200 ") and body.startswith("{"), repr(out[:3000])
    return int(head.split()[1]), json.loads(body)


LONG = "/hostile/long?" + "a" * 8000
CASES = {
    "quote-in-xff": (b"X-Forwarded-For: 1.2.3.4\" status=500 x=\"\r\n", "/hostile/q"),
    "backslash-and-quote": (b"X-Forwarded-For: a\\\", b\\\r\n", "/hostile/bs"),
    "several-xff-lines": (b"X-Forwarded-For: 1.1.1.1\r\nX-Forwarded-For: 2.2.2.2, 3.3.3.3\r\n"
                          b"X-Forwarded-For: 4.4.4.4\r\n", "/hostile/many"),
    "header-full-of-spaces": (b"X-Forwarded-For: " + b" " * 300 + b"x" + b" " * 300 + b"\r\n"
                              b"User-Agent: " + b" " * 2000 + b"\r\n", "/hostile/spaces"),
    "odd-bytes": (b"X-Forwarded-For: \xff\xfe\x80 caf\xc3\xa9\r\nX-Request-Id: \xff\r\n",
                  "/hostile/bytes"),
    "odd-host": (b"", "/hostile/host"),
    "quote-in-path": (b"", '/hostile/path?x="1"&y=%22'),
    "very-long-path": (b"", LONG),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_values_are_served_and_logged_once(m: Machine, case: str) -> None:
    extra, path = CASES[case]
    host = b"Shop.DYNOD.localhost:80" if case == "odd-host" else HOST.encode()
    request = (f"GET {path} HTTP/1.1\r\n".encode() + b"Host: " + host + b"\r\n" + extra
               + b"Connection: close\r\n\r\n")
    status, echoed = send(m, request)
    # Served, and the app's stream intact: its own answer, the path as sent.
    assert status == 200 and echoed["path"] == path
    rid = echoed["headers"]["x-request-id"]
    assert re.fullmatch(r"[0-9a-f-]{36}", rid)
    lines = wait_for(f"the router line of {case}", lambda: [
        x for x in router_lines(m, "shop") if f" request_id={rid} " in x], timeout=10)
    time.sleep(0.5)  # a second line would come in the same flush or the next
    lines = [x for x in router_lines(m, "shop") if f" request_id={rid} " in x]
    assert len(lines) == 1, lines
    parsed = LINE.match(lines[0])
    assert parsed, lines[0]
    logged_path, logged_host, logged_rid, fwd = parsed.groups()
    assert logged_host == HOST and logged_rid == rid
    # The app reads header bytes as latin-1 (http.server), the log as UTF-8.
    sent = echoed["headers"]["x-forwarded-for"].encode("latin-1").decode("utf-8", "replace")
    assert unescape(fwd) == sent
    # HAProxy writes '"' in a path as #22; everything else is the path, whole.
    assert unescape(logged_path).replace("#22", '"') == path
    if case == "several-xff-lines":
        assert echoed["headers"]["x-forwarded-for"] == (
            "1.1.1.1, 2.2.2.2, 3.3.3.3, 4.4.4.4, 127.0.0.1")


def peers(m: Machine, n: int) -> set[int]:
    """The dyno-side view: the router's source ports of n sequential requests, each a new
    client connection."""
    return {json.loads(get(m, HOST, f"/peer{i}")[2])["peer"] for i in range(n)}


def test_keepalive_to_dynos_and_the_opt_out(m: Machine) -> None:
    # Kept alive: one request after another reuses the router's connection.
    assert len(peers(m, 20)) <= 2
    out = dynoctl(m, "features", "-a", "shop")
    assert out.splitlines()[0] == "=== App Features ⬢ shop"
    assert "[ ] http-disable-keepalive-to-dyno  Disable keepalives" in out
    proc = m.exec(["dynoctl", "features:enable", "http-disable-keepalive-to-dyno", "-a",
                   "shop"])
    assert "Enabling http-disable-keepalive-to-dyno for ⬢ shop... done" in proc.stderr
    assert "[+] http-disable-keepalive-to-dyno" in dynoctl(m, "features", "-a", "shop")
    info = dynoctl(m, "features:info", "http-disable-keepalive-to-dyno", "-a", "shop")
    assert info.splitlines()[:3] == [
        "=== http-disable-keepalive-to-dyno",
        "Description: Disable keepalives to dynos in the router: a new connection per request",
        "Enabled:     true"]
    # The router applies it (a hitless reload): a new connection per request.
    wait_for("connections closed after each response", lambda: len(peers(m, 5)) == 5,
             timeout=30)
    assert len(peers(m, 20)) == 20
    m.exec(["dynoctl", "labs:disable", "http-disable-keepalive-to-dyno", "-a", "shop"])
    wait_for("connections reused again", lambda: len(peers(m, 10)) <= 2, timeout=30)
    # An unknown feature: the error names it and what exists.
    proc = m.exec(["dynoctl", "features:enable", "no-such-thing", "-a", "shop"], check=False)
    assert proc.returncode != 0
    assert 'feature "no-such-thing" not found' in proc.stderr
    assert "http-disable-keepalive-to-dyno" in proc.stderr


def idle_per_server(m: Machine) -> dict[str, int]:
    """HAProxy's own count of idle connections per server (``show servers conn``)."""
    script = ("import socket;s=socket.socket(socket.AF_UNIX);"
              "s.connect('/run/dynod/router/admin.sock');s.sendall(b'show servers conn\\n');"
              "d=b''\nwhile (c:=s.recv(65536)): d+=c\nprint(d.decode())")
    out = m.exec(["python3", "-c", script]).stdout
    head: list[str] = []
    idle = {}
    for line in out.splitlines():
        if line.startswith("# "):
            head = line[2:].split()
        elif head and line.strip():
            row = dict(zip(head, line.split(), strict=False))
            idle[row["bkname/svname"]] = int(row["idle_cur"])
    return idle


def soak(m: Machine, hosts: list[str], seconds: float, connections: int = 10,
         ) -> tuple[dict[str, dict[str, Any]], dict[str, int]]:
    """A keep-alive load on each host at once for ``seconds``: each host's totals
    (load_client.py) and the most idle connections HAProxy held per server meanwhile."""
    for i, host in enumerate(hosts):
        m.exec(["rm", "-f", f"/tmp/soak{i}.stop"])
        m.exec(["systemd-run", f"--unit=soak{i}", "--collect", "-p",
                f"StandardOutput=file:/tmp/soak{i}.json", "python3", str(LOAD), host,
                f"/tmp/soak{i}.stop", str(connections)])
    most: dict[str, int] = {}
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for server, n in idle_per_server(m).items():
                most[server] = max(most.get(server, 0), n)
            time.sleep(1)
    finally:
        for i in range(len(hosts)):
            m.exec(["touch", f"/tmp/soak{i}.stop"])
        for i in range(len(hosts)):
            wait_for("the soak to stop", lambda i=i: m.exec(  # type: ignore[misc]
                ["systemctl", "is-active", f"soak{i}"], check=False).stdout.strip() != "active")
    return ({host: json.loads(m.exec(["cat", f"/tmp/soak{i}.json"]).stdout)
             for i, host in enumerate(hosts)}, most)


@pytest.mark.network
def test_thread_per_connection_apps_under_a_keepalive_soak_are_never_starved(
        m: Machine) -> None:
    # http.server with more threads per dyno than the pool keeps idle (an idle kept-alive
    # connection holds a thread), and gunicorn's sync workers (2 per dyno, one request
    # at a time, each connection closed after its response), pushed from PyPI.
    threads = POOL_MAX_CONN + 4
    deploy_echo(m, "capped", web=f"exec python3 -u server.py $PORT {threads}", source=CAPPED)
    setup_push(m, "sync", str(EXAMPLES / "gunicorn-sync"))
    out = push(m, "sync")
    assert "remote: Verifying deploy... done." in out, out
    for app in ("capped", "sync"):
        dynoctl(m, "ps:scale", "-a", app, "web=2")
        all_up(m, app, 2)
        wait_for(f"{app} routed", lambda app=app: get(  # type: ignore[misc]
            m, f"{app}.dynod.localhost")[0] == 200)
    assert "ok from gunicorn" in get(m, "sync.dynod.localhost")[2]
    time.sleep(1)  # the checks' lines flushed (every 0.2 s)
    before = {app: len([x for x in router_lines(m, app) if 'path="/"' in x])
              for app in ("capped", "sync")}
    results, most = soak(m, ["capped.dynod.localhost", "sync.dynod.localhost"], 40)
    for app in ("capped", "sync"):
        result = results[f"{app}.dynod.localhost"]
        assert result["requests"] > 500, (app, result)
        assert result["failed_connections"] == 0 and result["status_5xx"] == 0, (app, result)
        assert result["over_1s"] == 0, (app, result)
        # Idle connections per dyno, from HAProxy's stats socket: never above the bound.
        idle = {s: n for s, n in most.items() if s.startswith(f"app_{app}/")}
        assert len(idle) == 2 and max(idle.values()) <= POOL_MAX_CONN, most
        assert not [x for x in router_lines(m, app) if "code=H12" in x]
        # Every request answered is logged, once.
        answered = before[app] + result["requests"]
        wait_for(f"every line of {app} logged", lambda app=app, n=answered: len([  # type: ignore[misc]
            x for x in router_lines(m, app) if 'path="/"' in x]) >= n, timeout=20)
        logged = len([x for x in router_lines(m, app) if 'path="/"' in x])
        assert logged == answered, (app, logged, answered)
        assert "Router Lines Dropped: 0" in dynoctl(m, "apps:info", "-a", app)
    # Sync workers closed every connection: HAProxy kept none of them idle.
    assert max(n for s, n in most.items() if s.startswith("app_sync/")) == 0, most
