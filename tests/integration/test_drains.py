"""Log drains in the sandbox: Debian's rsyslog over TLS (its own test CA) and an HTTPS
logplex receiver get every line of the app's stream, in order, once each; a receiver
that is down, a dynod restart and a drain that never reads lose nothing elsewhere."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from dynod.control import logs
from dynod.router import local_ca
from tests.integration.test_dynos import all_up, dynoctl, wait_for
from tests.integration.test_router import count, deploy_echo
from tests.sandbox.machine import Machine

pytestmark = pytest.mark.integration

RECEIVER = Path(__file__).with_name("drain_receiver.py")
PYTHON = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "python")
SYSLOG_URL = "syslog+tls://localhost:6514"
HTTPS_URL = "https://localhost:8443/logs"
HOLE_URL = "syslog://127.0.0.1:7514"
RSYSLOG_CONF = """\
global(workDirectory="/tmp/rsyslog"
       DefaultNetstreamDriver="gtls"
       DefaultNetstreamDriverCAFile="/tmp/drains/test-ca.pem"
       DefaultNetstreamDriverCertFile="/tmp/drains/rsyslog.pem"
       DefaultNetstreamDriverKeyFile="/tmp/drains/rsyslog.key")
module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1"
       StreamDriver.AuthMode="anon")
input(type="imtcp" port="6514")
template(name="drain" type="string"
         string="%timereported:::date-rfc3339% %hostname% %app-name% %procid% %msg%\\n")
action(type="omfile" file="/tmp/drains/rsyslog.out" template="drain")
"""


def _write(m: Machine, path: str, text: str) -> None:
    m.run(["sh", "-c", f"cat > {path}"], input=text, check=True)


def _start_receivers(m: Machine) -> None:
    now = datetime.now(UTC)
    m.exec(["mkdir", "-p", "/tmp/drains", "/tmp/rsyslog"])
    # rsyslog: a certificate from a CA made here, trusted as a system CA of the machine.
    test_ca = local_ca.make_ca(now, "drains-test")
    cert, key = local_ca.issue(test_ca, ("localhost",), now)
    _write(m, "/tmp/drains/test-ca.pem", test_ca.cert_pem)
    _write(m, "/usr/local/share/ca-certificates/drains-test.crt", test_ca.cert_pem)
    m.exec(["update-ca-certificates"])
    _write(m, "/tmp/drains/rsyslog.pem", cert)
    _write(m, "/tmp/drains/rsyslog.key", key)
    _write(m, "/tmp/drains/rsyslog.conf", RSYSLOG_CONF)
    m.exec(["systemd-run", "--unit=drain-rsyslog", "rsyslogd", "-n", "-f",
            "/tmp/drains/rsyslog.conf", "-i", "/tmp/drains/rsyslog.pid"])
    # The HTTPS receiver: a certificate from dynod's local CA (trusted by dynod too).
    ca = local_ca.LocalCA(m.exec(["cat", "/var/lib/dynod/tls/ca.crt"]).stdout,
                          m.exec(["cat", "/var/lib/dynod/tls/ca.key"]).stdout)
    cert, key = local_ca.issue(ca, ("localhost",), now)
    _write(m, "/tmp/drains/https.pem", cert)
    _write(m, "/tmp/drains/https.key", key)
    _https(m, "start")
    m.exec(["systemd-run", "--unit=drain-hole", PYTHON, str(RECEIVER), "blackhole", "7514"])
    for port in (6514, 8443, 7514):
        wait_for(f"port {port}", lambda p=port: m.exec(  # type: ignore[misc]
            ["sh", "-c", f"ss -ltn | grep -q ':{p} '"], check=False).returncode == 0)


def _https(m: Machine, verb: str) -> None:
    if verb == "stop":
        m.exec(["systemctl", "stop", "drain-https"])
        return
    m.exec(["systemd-run", "--unit=drain-https", "--collect", PYTHON, str(RECEIVER),
            "https", "8443", "/tmp/drains/https.pem", "/tmp/drains/https.key",
            "/tmp/drains/https.out"])


def _stream(m: Machine, app: str) -> list[tuple[str, str, str, str]]:
    """The app's stream in the journal as (time, app|heroku, process, message)."""
    out = m.exec(["journalctl", "--output=json", "--no-pager", "--all", f"DYNOD_APP={app}",
                  "DYNOD_SOURCE=app", "DYNOD_SOURCE=dynod"], timeout=120).stdout
    return [(line.time.isoformat(timespec="microseconds"),
             "heroku" if line.source == "dynod" else "app", line.dyno, line.message)
            for raw in out.splitlines() for line in logs.parse_entry(raw)]


def _rsyslog(m: Machine) -> list[tuple[str, str, str, str]]:
    rows = m.exec(["cat", "/tmp/drains/rsyslog.out"], check=False).stdout.splitlines()
    return [(t, a, p, msg) for t, _host, a, p, msg in (r.split(" ", 4) for r in rows)]


def _received_https(m: Machine) -> list[dict[str, str]]:
    out = m.exec(["cat", "/tmp/drains/https.out"], check=False).stdout
    return [json.loads(r) for r in out.splitlines()]


def _https_lines(m: Machine) -> list[tuple[str, str, str, str]]:
    return [(r["time"], r["app"], r["proc"], r["msg"]) for r in _received_https(m)]


def _assert_all_once_in_order(name: str, got: list[tuple[str, str, str, str]],
                              stream: list[tuple[str, str, str, str]],
                              must: list[str]) -> None:
    """``got`` is a contiguous run of the journal's stream, so no line is missing,
    repeated or out of order; it covers every line that has ``must`` in it."""
    assert got, f"{name} got nothing"
    start = stream.index(got[0])
    want = stream[start:start + len(got)]
    if got != want:
        i = next((i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b),
                 min(len(got), len(want)))
        raise AssertionError(f"{name}: {len(got)} lines, {len(want)} in the journal from "
                             f"its first; first difference at {i}: got {got[i:i + 3]}, "
                             f"journal {want[i:i + 3]}")
    for needle in must:
        assert any(needle in line[3] for line in got), f"{name}: no line with {needle!r}"


def _p50(m: Machine, n: int = 100) -> float:
    out = m.exec([PYTHON, str(RECEIVER), "p50", "shop.dynod.localhost", str(n)],
                 timeout=300).stdout
    return float(json.loads(out)["p50_ms"])


def test_drains_get_every_line_in_order_once_through_outages_restarts_and_a_dead_drain(
        stack_machine: Machine) -> None:
    m = stack_machine
    deploy_echo(m, "shop")
    all_up(m, "shop", 1)
    _start_receivers(m)

    # Bad input: clear errors, nothing added.
    for url, says in [("ftp://localhost:21", "unknown scheme 'ftp'"),
                      ("localhost:6514", "has no scheme"),
                      ("syslog+tls://localhost", "has no port"),
                      ("syslog+tls://nowhere.invalid:6514", "does not resolve"),
                      ("syslog://127.0.0.1:9", "refused the connection"),
                      ("https://127.0.0.1:8443/logs", "certificate is not trusted")]:
        bad = m.run(["dynoctl", "drains:add", url, "-a", "shop"], cwd="/tmp")
        assert bad.returncode == 1 and says in bad.stderr, (url, bad.stderr)
    assert dynoctl(m, "drains", "-a", "shop") == ""

    assert dynoctl(m, "drains:add", SYSLOG_URL, "-a", "shop") == (
        f"Successfully added drain {SYSLOG_URL}\n")
    assert dynoctl(m, "drains:add", HTTPS_URL, "-a", "shop") == (
        f"Successfully added drain {HTTPS_URL}\n")
    listed = json.loads(dynoctl(m, "drains", "-a", "shop", "--json"))
    tokens = {d["url"]: d["token"] for d in listed}
    assert list(tokens) == [SYSLOG_URL, HTTPS_URL]
    assert dynoctl(m, "drains", "-a", "shop").splitlines() == [
        "=== Drains", *(f"{u} ({t})" for u, t in tokens.items())]
    assert count(m, "shop.dynod.localhost", 1)["failures"] == []
    wait_for("the drains' first lines", lambda: _https_lines(m) and _rsyslog(m))
    baseline = _p50(m)

    # A drain that accepts and never reads: it slows neither the app nor the others.
    dynoctl(m, "drains:add", HOLE_URL, "-a", "shop")
    dynoctl(m, "slugs:deploy", "-a", "shop", "/tmp/shop.tgz", "--process-type",
            "web=exec python3 -u server.py $PORT")
    dynoctl(m, "ps:scale", "-a", "shop", "web=2")
    all_up(m, "shop", 2)
    assert count(m, "shop.dynod.localhost", 1000)["failures"] == []
    with_hole = _p50(m)
    # Generous: the same loop, a drain that never reads attached; no timing target.
    assert with_hole < max(3 * baseline, baseline + 50), (baseline, with_hole)
    must = ["Release v3 created by user root", "Scaled to web@2:Standard-1X by user root",
            "State changed from starting to up", 'at=info method=GET path="/"']

    def caught_up() -> bool:
        last = _stream(m, "shop")[-1]
        return _https_lines(m)[-1] == last and _rsyslog(m)[-1] == last
    try:
        wait_for("both drains to catch up", caught_up, timeout=120)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\njournal: {_stream(m, 'shop')[-2:]}\nrsyslog: "
                             f"{len(_rsyslog(m))} {_rsyslog(m)[-2:]}\nhttps: "
                             f"{len(_https_lines(m))} {_https_lines(m)[-2:]}") from None
    stream = _stream(m, "shop")
    _assert_all_once_in_order("rsyslog", _rsyslog(m), stream, must)
    _assert_all_once_in_order("https", _https_lines(m), stream, must)
    rows = _received_https(m)
    assert all(r["ok"] and r["host"] == r["token"] == tokens[HTTPS_URL] for r in rows)
    assert len({r["frame_id"] for r in rows}) > 1  # several POSTs, several frames each
    assert {r["proc"] for r in rows} >= {"web.1", "web.2", "router", "api"}

    # The HTTPS receiver down for 60 s, dynod restarted meanwhile: the lines of that
    # time arrive once it is back, once each.
    _https(m, "stop")
    before = len(_https_lines(m))
    assert count(m, "shop.dynod.localhost", 20)["failures"] == []
    m.exec(["systemctl", "restart", "dynod"])
    assert count(m, "shop.dynod.localhost", 20)["failures"] == []
    time.sleep(60)
    assert len(_https_lines(m)) == before
    _https(m, "start")
    wait_for("the buffered lines", lambda: _https_lines(m)[-1] == _stream(m, "shop")[-1],
             timeout=60)
    stream = _stream(m, "shop")
    _assert_all_once_in_order("https after the outage", _https_lines(m), stream, must)
    _assert_all_once_in_order("rsyslog after the restart", _rsyslog(m), stream, must)
    assert len(_https_lines(m)) >= before + 80  # 40 requests: router and app lines

    assert dynoctl(m, "drains:remove", tokens[HTTPS_URL], "-a", "shop") == (
        f"Successfully removed drain {HTTPS_URL}\n")
    assert dynoctl(m, "drains:remove", HOLE_URL, "-a", "shop") == (
        f"Successfully removed drain {HOLE_URL}\n")
    gone = m.run(["dynoctl", "drains:remove", HOLE_URL, "-a", "shop"], cwd="/tmp")
    assert gone.returncode == 1 and "not found" in gone.stderr
    assert dynoctl(m, "drains", "-a", "shop").splitlines()[1:] == [
        f"{SYSLOG_URL} ({tokens[SYSLOG_URL]})"]
    for unit in ("drain-rsyslog", "drain-https", "drain-hole"):
        m.exec(["systemctl", "stop", unit], check=False)
