"""Issue 20, the fault matrix's clock case: the wall clock stepped an hour forwards and
backwards (and a day forwards: a machine without a battery-backed clock that NTP sets
after boot) under a steady load. The user must see no spurious daily cycle, back-off
or R10, release times that keep increasing with their versions, and `logs` in the
order the lines were written.

The machine shares the host's CLOCK_REALTIME (Linux time namespaces cover only
MONOTONIC and BOOTTIME), so nothing here sets a clock. Instead dynod.service and
systemd-journald.service get a drop-in preloading clockshift.so (clockshift.c, a test
tool), which adds to their CLOCK_REALTIME the seconds in OFFSET, a file the test
rewrites: their wall clock steps, the kernel's does not. Debian's libfaketime cannot
do this for dynod: see clockshift.c. The dynos, HAProxy and systemd (PID 1) keep the
real clock (on a real machine they would step too): what is tested is what dynod and
journald make of a step; this app has no timer unit (OnCalendar) that PID 1 would fire.

Same shape as test_faults_services.py: one machine, app ``shop`` with web=2 and
worker=1, the load client retrying 0.1 s after a failure; the case ends with 0 failed
requests, the formation as asked, versions gap-free and nothing leaked.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from functools import partial
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import _teardown, stack_bind
from tests.integration.test_dynos import dynoctl, ps, wait_for
from tests.integration.test_faults_services import (
    APP,
    WANT,
    Load,
    consistent,
    hit,
    invocations,
    main_pid,
    row,
    start_shop,
)
from tests.integration.test_lifecycle import settled, trouble, versions
from tests.sandbox.machine import PROJECT, Machine

pytestmark = pytest.mark.integration

SHIM_SOURCE = Path(__file__).with_name("clockshift.c")
SHIM = PROJECT / "build" / "clockshift.so"
OFFSET = "/run/clockshift/offset"
SHIFTED = ["dynod.service", "systemd-journald.service"]
HOUR = 3600
# More than the daily cycle's 24 h plus its 216 min of jitter: on the wall clock, every
# dyno would be due at once.
DAY_AND_MORE = 28 * HOUR
# Held after each step: many supervisor passes (0.5 s each) see the stepped clock.
HOLD = 3.0
# How far a logged time may be from the real clock plus the offset (the test's own
# delays); a step is an hour or more.
SLACK = timedelta(minutes=5)
# (A rollout's old dynos exit with 143 after SIGTERM: "Process exited" is no event here.)
EVENTS = ("Cycling", "Error R10", "to crashed", "Error starting process")


def build_shim() -> Path:
    """clockshift.so, built on the host into the project's build/ (the machine sees the
    project at its own path)."""
    SHIM.parent.mkdir(exist_ok=True)
    if not SHIM.exists() or SHIM.stat().st_mtime < SHIM_SOURCE.stat().st_mtime:
        subprocess.run(["gcc", "-O2", "-Wall", "-Werror", "-shared", "-fPIC", "-o",
                        str(SHIM), str(SHIM_SOURCE), "-ldl"], check=True)
    return SHIM


def step_to(m: Machine, offset: int) -> None:
    """The shifted services' wall clock from now on: real + ``offset`` seconds (written
    whole: the shim never reads a half-written file)."""
    m.exec(["sh", "-c", f"echo {offset} > {OFFSET}.new && mv {OFFSET}.new {OFFSET}"])


@pytest.fixture(scope="module")
def cm(stack: Path) -> Iterator[Machine]:
    shim = build_shim()
    m = Machine(binds=[stack_bind(stack)])
    m.boot()
    try:
        m.exec(["mkdir", "-p", str(Path(OFFSET).parent)])
        step_to(m, 0)
        for unit in SHIFTED:
            m.exec(["sh", "-c", f"mkdir -p /run/systemd/system/{unit}.d && printf "
                    f"'[Service]\\nEnvironment=LD_PRELOAD={shim} CLOCKSHIFT_FILE={OFFSET}\\n'"
                    f" > /run/systemd/system/{unit}.d/50-clockshift.conf"])
        m.exec(["systemctl", "daemon-reload"])
        m.exec(["systemctl", "restart", *SHIFTED])
        wait_for("dynod answering", lambda: m.run(["dynoctl", "apps"]).returncode == 0, 60)
        for unit in SHIFTED:
            pid = main_pid(m, unit)
            maps = m.exec(["cat", f"/proc/{pid}/maps"]).stdout
            assert str(shim) in maps, f"{unit} (pid {pid}) has not preloaded {shim}"
        start_shop(m, "c0")
        yield m
    finally:
        _teardown(m)


def logs(m: Machine, *args: str) -> list[str]:
    return m.run(["dynoctl", "logs", "-a", APP, *args], cwd="/tmp").stdout.splitlines()


def router_time(m: Machine, path: str) -> datetime:
    """The time `logs` gives the router's line of a request for ``path``: dynod's
    clock (the router's log path stamps each line as it reads it)."""
    needle = f'path="{path}"'

    def line() -> str:
        return next((x for x in logs(m, "-s", "dynod", "-d", "router", "-n", "1500")
                     if needle in x and "dynod[router]" in x), "")

    return datetime.fromisoformat(str(wait_for(f"the router line of {path}", line,
                                               timeout=30)).split(" ", 1)[0])


def near(seen: datetime, offset: int) -> bool:
    return abs(seen - (datetime.now().astimezone() + timedelta(seconds=offset))) < SLACK


def platform_events(m: Machine) -> list[str]:
    """dynod's lines about the app's dynos that a clock step must not cause."""
    return [x for x in logs(m, "-s", "dynod", "-n", "1500")
            if "dynod[router]" not in x and any(e in x for e in EVENTS)]


def steady(m: Machine) -> tuple[dict[str, Any], str, float]:
    """Steps with nothing else going on: no dyno restarts, no event; dynod's clock
    (its router lines) and journald's (the app's lines) follow each step; `logs` and a
    running `logs --tail` keep the order the lines were written in."""
    ids = invocations(m)
    m.exec(["rm", "-f", "/tmp/ctail.log"])
    m.exec(["systemd-run", "--unit=ctail", "--collect", "-p", "WorkingDirectory=/tmp",
            "-p", "StandardOutput=file:/tmp/ctail.log", "dynoctl", "logs", "-a", APP,
            "-s", "app", "--tail"])
    hit(m, "/clock-start")
    wait_for("the tail to run", lambda: "/clock-start" in m.exec(
        ["cat", "/tmp/ctail.log"]).stdout, timeout=30)
    load = Load(m)
    t0 = time.monotonic()
    offsets = [HOUR, 0, -HOUR, DAY_AND_MORE, 0]
    marks = [f"/clock-{i}" for i in range(len(offsets))]
    for offset, mark in zip(offsets, marks, strict=True):
        step_to(m, offset)
        time.sleep(HOLD)
        hit(m, mark)
        seen = router_time(m, mark)
        assert near(seen, offset), f"dynod's clock at {offset:+d} s: {mark} logged at {seen}"
    took = time.monotonic() - t0
    result = load.finish()
    app_lines = [x for x in logs(m, "-s", "app", "-n", "300")
                 if any(f"GET {k} " in x for k in marks)]
    order = [next(k for k in marks if f"GET {k} " in x) for x in app_lines]
    assert order == marks, "`logs` out of order after the steps:\n" + "\n".join(app_lines)
    stamps = [datetime.fromisoformat(x.split(" ", 1)[0]) for x in app_lines]
    for offset, mark, stamp in zip(offsets, marks, stamps, strict=True):
        assert near(stamp, offset), f"journald's clock at {offset:+d} s: {mark} at {stamp}"
    wait_for("the running tail to see every mark", lambda: all(
        f"GET {k} " in m.exec(["cat", "/tmp/ctail.log"]).stdout for k in marks), timeout=30)
    tail = [x for x in m.exec(["cat", "/tmp/ctail.log"]).stdout.splitlines()
            if any(f"GET {k} " in x for k in marks)]
    assert [next(k for k in marks if f"GET {k} " in x) for x in tail] == marks, tail
    m.exec(["systemctl", "stop", "ctail"], check=False)
    assert invocations(m) == ids, f"a dyno was restarted (cycled?)\n{trouble(m, APP)}"
    assert not platform_events(m), platform_events(m)
    assert result["failed"] == 0, result["failures"]
    saw = (f"no dyno restarted (no cycle at +{DAY_AND_MORE // HOUR} h), no R10/crash; "
           "`logs` and `logs --tail` in written order with the stepped times")
    return result, saw, took


def restart_after_step(m: Machine) -> tuple[dict[str, Any], str, float]:
    """dynod restarted with its clock a day and more ahead: it adopts the dynos, whose
    daily cycle it counts from systemd's monotonic start of each (the wall-clock start
    systemd gives is a day and more before dynod's now); none restarts, before or after
    the step back."""
    ids = invocations(m)
    load = Load(m)
    t0 = time.monotonic()
    step_to(m, DAY_AND_MORE)
    m.exec(["systemctl", "restart", "dynod"])
    wait_for("dynod answering", lambda: m.run(["dynoctl", "apps"]).returncode == 0, 60)
    wait_for("the dynos adopted", lambda: settled(m, APP, WANT), timeout=60)
    time.sleep(HOLD)
    hit(m, "/clock-restarted")
    assert near(router_time(m, "/clock-restarted"), DAY_AND_MORE)
    step_to(m, 0)
    time.sleep(HOLD)
    took = time.monotonic() - t0
    result = load.finish()
    assert invocations(m) == ids, f"a dyno was restarted (cycled?)\n{trouble(m, APP)}"
    assert not platform_events(m), platform_events(m)
    assert result["failed"] == 0, result["failures"]
    return result, "dynod adopted every dyno; none restarted or cycled", took


def releases_across_steps(m: Machine) -> tuple[dict[str, Any], str, float]:
    """A release on each side of each step, the step landing while its web dynos boot
    (an R10 or back-off on the wall clock would fire): release times keep increasing,
    the ones made while the clock is behind dated just after the one before, and
    dynod's log says so."""
    load = Load(m)
    t0 = time.monotonic()
    first = int(versions(m, APP)[0]["version"])
    # Release i is made on the clock the step before it left (0, +1 h, 0, -1 h); the
    # next step lands while its web dynos boot.
    made_at = [0, HOUR, 0, -HOUR]
    for i, then in enumerate([*made_at[1:], 0]):
        version = first + i + 1
        dynoctl(m, "config:set", "-a", APP, f"CLOCK_STEP={i}")
        step_to(m, then)
        wait_for(f"v{version} rolled out", partial(settled, m, APP, WANT, release=version),
                 timeout=120)
    took = time.monotonic() - t0
    result = load.finish()
    listed = sorted(versions(m, APP), key=lambda r: int(r["version"]))
    times = [datetime.fromisoformat(str(r.get("created_at", r.get("createdAt")))
                                    .replace("Z", "+00:00")) for r in listed]
    assert all(a < b for a, b in pairwise(times)), list(zip(
        [r["version"] for r in listed], times, strict=True))
    ours = times[-len(made_at):]
    assert near(ours[0], 0) and near(ours[1], HOUR), ours
    # Made an hour behind the release before: a millisecond after it, each.
    assert ours[2] - ours[1] == ours[3] - ours[2] == timedelta(milliseconds=1), ours
    said = [x for x in m.exec(["journalctl", "-u", "dynod", "--no-pager", "-o", "cat"]
                              ).stdout.splitlines() if "is behind release" in x]
    assert len(said) == 2, said
    assert not platform_events(m), platform_events(m)
    assert result["failed"] == 0, result["failures"]
    return result, f"4 releases, times increasing; dynod said: {said[0]}", took


CASES = {"steady": steady, "dynod-restart": restart_after_step,
         "releases": releases_across_steps}


@pytest.mark.parametrize("case", list(CASES))
def test_clock_step(cm: Machine, case: str) -> None:
    try:
        result, saw, took = CASES[case](cm)
    finally:
        step_to(cm, 0)
    consistent(cm)
    assert {str(d["name"]) for d in ps(cm, APP)} == {"web.1", "web.2", "worker.1"}
    row(f"wall clock stepped ({case})", result, saw, took)
