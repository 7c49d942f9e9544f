"""Issue 20, item 1, part B: the services dynod leans on fail under a steady load.

One machine for the module (each case must leave it as it found it, which is itself the
proof that the fault healed): app ``shop`` with web=2 and worker=1, a steady load
through the router (load_client.py, retrying 0.1 s after a failure), then one fault per
case. Every case ends with the same checks: the running release still serving, release
versions gap-free, the formation as asked, nothing leaked (router servers, units, dyno
dirs, netns, veths, overlay roots).
Each prints its row of the note's table: fault, requests sent, failed, what the user
saw, leaks, time to recover.

The wall clock's steps are test_faults_clock.py (the machine shares CLOCK_REALTIME
with the host, so they are made by a preloaded test tool, not by ``date -s``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import _teardown, stack_bind
from tests.integration.test_dynos import dynoctl, ps, wait_for
from tests.integration.test_lifecycle import Load as SteadyLoad
from tests.integration.test_lifecycle import (
    active,
    deploy,
    leftovers,
    settled,
    trouble,
    versions,
)
from tests.sandbox.machine import Machine

pytestmark = pytest.mark.integration

APP = "shop"
HOST = f"{APP}.dynod.localhost"
WANT = {"web": 2, "worker": 1}
CONNS = 4
RETRY_AFTER = 0.1
# Longer than dynod.service's SYSTEMD_BUS_TIMEOUT (10 s), so a call times out.
STALL = 15.0
JOURNALD_UNITS = ["systemd-journald.service", "systemd-journald.socket",
                  "systemd-journald-dev-log.socket", "systemd-journald-audit.socket"]


@pytest.fixture(scope="module")
def fm(stack: Path) -> Iterator[Machine]:
    m = Machine(binds=[stack_bind(stack)])
    m.boot()
    try:
        start_shop(m, "f0")
        yield m
    finally:
        _teardown(m)


def start_shop(m: Machine, version: str) -> None:
    """The fault matrix's app, running: ``shop`` at slug ``version``, web=2 worker=1."""
    dynoctl(m, "apps:create", APP)
    deploy(m, APP, version)
    dynoctl(m, "ps:scale", "-a", APP, "web=2", "worker=1")
    wait_for("the formation", lambda: settled(m, APP, WANT), timeout=90)


class Load(SteadyLoad):
    """The module's load, one at a time: each client retries 0.1 s after a failure (a
    browser's retry), so an outage counts its failures, not a spin on ECONNREFUSED;
    a second of load on each side of the fault."""

    def __init__(self, m: Machine) -> None:
        super().__init__(m, HOST, CONNS, name="fload", retry_after=RETRY_AFTER)
        time.sleep(1)

    def finish(self) -> dict[str, Any]:
        time.sleep(1)
        return super().finish()


def now(m: Machine) -> float:
    """The machine's monotonic clock (the load client's)."""
    return float(m.exec(["python3", "-c", "import time; print(time.monotonic())"]).stdout)


def invocations(m: Machine) -> dict[str, str]:
    """Each dyno unit's InvocationID: a restarted unit gets a new one."""
    return {str(d["unit"]): m.exec(["systemctl", "show", "-p", "InvocationID", "--value",
                                    str(d["unit"])]).stdout.strip() for d in ps(m, APP)}


def main_pid(m: Machine, unit: str) -> str:
    return m.exec(["systemctl", "show", "-p", "MainPID", "--value", unit]).stdout.strip()


def consistent(m: Machine, want: dict[str, int] = WANT) -> None:
    """The common end of every case: formation as asked (exactly once per dyno name),
    nothing leaked, versions gap-free."""
    try:
        wait_for("the formation", lambda: settled(m, APP, want), timeout=90)
        wait_for("nothing leaked", lambda: not leftovers(m, APP), timeout=30)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{leftovers(m, APP)}\n{trouble(m, APP)}") from None
    names = [str(d["name"]) for d in ps(m, APP)]
    assert len(names) == len(set(names)), names
    numbers = [int(r["version"]) for r in versions(m, APP)]
    assert numbers == list(range(len(numbers), 0, -1)), numbers


def row(fault: str, result: dict[str, Any], saw: str, recover: float) -> None:
    print(f"\n| {fault} | {result['sent']} | {result['failed']} | {saw} | 0 | "
          f"{recover:.1f} s |")
    if result["failed"]:
        print("\n".join(result["failures"]))


def logged(m: Machine, needle: str, *, router: bool = False) -> bool:
    """In `logs`: the app's own lines (the load's GET / logs none), or the router's (the
    load's fill them: the most `logs` gives, ~18 s of them at this load)."""
    which = ["-s", "dynod", "-d", "router", "-n", "1500"] if router else ["-s", "app",
                                                                          "-n", "300"]
    out = m.run(["dynoctl", "logs", "-a", APP, *which], cwd="/tmp").stdout
    return any(needle in line and (not router or "dynod[router]" in line)
               for line in out.splitlines())


def hit(m: Machine, path: str) -> None:
    out = m.exec(["curl", "-s", "-w", "\n%{http_code}", "-H", f"Host: {HOST}",
                  f"http://127.0.0.1{path}"], check=False).stdout
    assert out.endswith("\n200"), f"GET {path}: {out}\n{trouble(m, APP)}"


# ---- the cases


def haproxy_killed(m: Machine) -> None:
    ids = invocations(m)
    load = Load(m)
    pid = main_pid(m, "dynod-router.service")
    t0 = now(m)
    # kill -9 of every HAProxy process (master and workers), as the OOM killer would.
    m.exec(["systemctl", "kill", "-s", "KILL", "dynod-router.service"])
    wait_for("HAProxy back", lambda: main_pid(m, "dynod-router.service") not in ("0", pid)
             and active(m, "dynod-router.service"), timeout=30)
    wait_for("every web dyno routed again", lambda: not leftovers(m, APP), timeout=30)
    hit(m, "/after-haproxy")
    back = now(m) - t0
    result = load.finish()
    consistent(m)
    assert invocations(m) == ids, "a dyno was restarted"
    # Unavoidable: the requests in flight on the killed workers, and the connections
    # refused until systemd restarts HAProxy (RestartSec=1s plus its start) and dynod puts
    # the servers back. Bound: every failure falls in that window, and each of the
    # CONNS clients fails at most once per 0.1 s retry in it (plus its one in flight).
    if result["failed"]:
        assert result["first_failure"] >= t0 and result["last_failure"] <= t0 + back, result
    assert result["failed"] <= CONNS * (back / RETRY_AFTER + 2), json.dumps(result)[:3000]
    assert result["requests"] > 0 and set(result["versions"]) == {"f0"}, result
    recovered = (result["last_failure"] - t0) if result["failed"] else 0.0
    row("HAProxy kill -9", result, f"{result['failed']} refused/reset requests in a "
        f"{recovered:.1f} s window, then every dyno routed", back)


def journald(m: Machine, how: str) -> None:
    ids = invocations(m)
    load = Load(m)
    # A `logs --tail` client across the fault: dynod's reader must carry on. Its backlog
    # printed first (a fresh file: the last case's must not count), then the line: hit
    # before the tail runs, the line could be older than a backlog of the load's lines.
    m.exec(["rm", "-f", "/tmp/ftail.log"])
    m.exec(["systemd-run", "--unit=ftail", "--collect", "-p", "WorkingDirectory=/tmp",
            "-p", "StandardOutput=file:/tmp/ftail.log", "dynoctl", "logs", "-a", APP,
            "--tail"])
    wait_for("the tail's backlog", lambda: m.exec(
        ["sh", "-c", "cat /tmp/ftail.log 2>/dev/null"], check=False).stdout != "", timeout=30)
    hit(m, "/before-journald")
    wait_for("the tail to run", lambda: "/before-journald" in m.exec(
        ["cat", "/tmp/ftail.log"]).stdout, timeout=30)
    pid = main_pid(m, "systemd-journald.service")
    t0 = now(m)
    if how == "kill":
        m.exec(["systemctl", "kill", "-s", "KILL", "systemd-journald.service"])
    elif how == "restart":
        m.exec(["systemctl", "restart", "systemd-journald.service"])
    else:
        # Stopped, not restarted: the service and every socket that could start it again
        # (the audit socket would), so the dynos' streams are closed, not handed over
        # through journald's fd store. A request that logs gets its answer all the same;
        # its line is kept by dyno-init and written once journald is back.
        units = [u for u in JOURNALD_UNITS if active(m, u)]
        m.exec(["systemctl", "stop", *units])
        try:
            assert not active(m, "systemd-journald.service")
            for n in range(3):
                hit(m, f"/during-journald-{n}")
            time.sleep(2)  # the load runs on with journald down
            hit(m, "/during-journald-3")
        finally:
            m.exec(["systemctl", "start", *units])
    wait_for("journald back", lambda: main_pid(m, "systemd-journald.service") not in (
        "0", pid) and active(m, "systemd-journald.service"), timeout=30)
    hit(m, "/after-journald")
    wait_for("app lines after the restart in logs", lambda: logged(m, "GET /after-journald"),
             timeout=30)
    wait_for("router lines after the restart in logs",
             lambda: logged(m, 'path="/after-journald"', router=True), timeout=30)
    wait_for("the running tail to see them", lambda: "/after-journald" in m.exec(
        ["cat", "/tmp/ftail.log"]).stdout, timeout=30)
    back = now(m) - t0
    saw = "nothing; lines after the restart in `logs` and in a running `logs --tail`"
    if how == "stop":
        # Written while journald was down: kept (64 KiB a dyno) and written on reconnect.
        kept = [n for n in range(4) if logged(m, f"GET /during-journald-{n} ")]
        assert kept == [0, 1, 2, 3], f"lines written while journald was stopped: {kept}"
        # The reconnected stream's lines carry the unit's LogExtraFields, as before.
        fields = json.loads(m.exec(["journalctl", "-o", "json", "-n", "1", "--no-pager",
                                    f"DYNOD_APP={APP}", "DYNOD_SOURCE=app",
                                    "--grep", "/after-journald"]).stdout)
        assert fields["DYNOD_DYNO"].startswith("web.") and fields["SYSLOG_IDENTIFIER"] == \
            fields["DYNOD_DYNO"] and fields["_SYSTEMD_UNIT"].startswith(f"dynod-{APP}-web"), \
            fields
        saw = ("nothing; the 4 lines logged while journald was down, and every line "
               "after, in `logs` and in a running `logs --tail`")
    m.exec(["systemctl", "stop", "ftail"], check=False)
    result = load.finish()
    consistent(m)
    assert invocations(m) == ids, "a dyno was restarted"
    assert result["failed"] == 0, result["failures"]
    name = {"kill": "kill -9", "restart": "systemctl restart", "stop": "systemctl stop, start"}
    row(f"journald {name[how]}", result, saw, back)


def dbus_stalled(m: Machine) -> None:
    ids = invocations(m)
    load = Load(m)
    pid = main_pid(m, "dbus.service")
    t0 = now(m)
    m.exec(["kill", "-STOP", pid])
    outcomes = []
    try:
        for argv in (["ps:scale", "-a", APP, "web=3"], ["ps", "-a", APP],
                     ["releases", "-a", APP]):
            began = time.monotonic()
            # Not m.run: systemd-run itself needs the bus.
            proc = m.exec(["env", "HOME=/root", "dynoctl", *argv], check=False, timeout=120)
            outcomes.append((argv[0], proc.returncode, time.monotonic() - began,
                             proc.stderr.strip()))
        time.sleep(max(0.0, STALL - (now(m) - t0)))
    finally:
        m.exec(["kill", "-CONT", pid])
    print("\nwhile D-Bus was stopped:", outcomes)
    for name, rc, took, err in outcomes:
        # Within the CLI's deadline (30 s), or a refusal that says to retry.
        assert took < 35, (name, took)
        if rc and "retry" not in err.lower():
            print(m.exec(["journalctl", "--no-pager", "-o", "short-monotonic", "-u", "dynod",
                          "-n", "80"]).stdout)
        assert rc == 0 or "retry" in err.lower(), (name, rc, err)
    scaled = outcomes[0][1] == 0
    if not scaled:
        dynoctl(m, "ps:scale", "-a", APP, "web=3")
    consistent(m, {"web": 3, "worker": 1})
    back = now(m) - t0
    dynoctl(m, "ps:scale", "-a", APP, "web=2")
    consistent(m)
    result = load.finish()
    assert {u: i for u, i in invocations(m).items() if u in ids} == ids, "a dyno restarted"
    assert result["failed"] == 0, result["failures"]
    saw = "; ".join(f"{n} {'ok' if rc == 0 else repr(err)} in {t:.1f} s"
                    for n, rc, t, err in outcomes)
    row(f"D-Bus stopped {STALL:.0f} s while scaling", result, saw, back)


CASES = {
    "haproxy-kill": haproxy_killed,
    "journald-kill": lambda m: journald(m, "kill"),
    "journald-restart": lambda m: journald(m, "restart"),
    "journald-stop": lambda m: journald(m, "stop"),
    "dbus-stop": dbus_stalled,
}


@pytest.mark.parametrize("fault", list(CASES))
def test_fault(fm: Machine, fault: str) -> None:
    CASES[fault](fm)
