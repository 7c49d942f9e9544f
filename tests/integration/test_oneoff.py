"""One-off dynos in the sandbox, driven with dynoctl as a user would: an interactive
bash through a real pseudo-terminal, stdin piped without one, a Procfile type as the
command, a client that goes away (SIGHUP; R16 when ignored), run:detached and ps."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from tests.integration.test_dynos import deploy, dynoctl, wait_for
from tests.sandbox.machine import Machine

pytestmark = pytest.mark.integration

DRIVER = Path(__file__).with_name("pty_driver.py")
ONEOFF_UNITS = ["systemctl", "list-units", "--all", "--no-legend", "--plain",
                "dynod-*-run.*"]


def journal(m: Machine, app: str, dyno: str = "") -> str:
    match = [f"DYNOD_APP={app}"] + ([f"DYNOD_DYNO={dyno}"] if dyno else [])
    return m.exec(["journalctl", "--no-pager", "-o", "cat", *match], check=False).stdout


def oneoff_units(m: Machine) -> list[str]:
    return [line.split()[0] for line in m.exec(ONEOFF_UNITS).stdout.splitlines() if line]


def test_interactive_bash_through_a_pty(stack_machine: Machine) -> None:
    m = stack_machine
    deploy(m, "tty", web="python3 server.py")
    got = json.loads(m.exec(["python3", str(DRIVER), "tty"], timeout=120).stdout)
    transcript = got.get("transcript", "")
    assert "error" not in got, transcript
    assert re.fullmatch(r"Running bash on ⬢ tty\.\.\. up, run\.\d{4} \(Standard-1X\)",
                        got["banner"]), transcript
    assert got["prompt"] is True
    assert re.fullmatch(r"run\.\d{4}", got["dyno"]), transcript
    assert got["cwd"] == "/app"
    assert got["size"] == "24 80"
    assert got["resized"] == "40 100", transcript
    assert got["ctrl_c"] == "130", transcript  # SIGINT reached the foreground sleep
    assert got["exit"] == 3, transcript
    # Never restarted, nothing left behind.
    wait_for("the one-off unit gone", lambda: not oneoff_units(m), timeout=10)
    log = journal(m, "tty", str(got["dyno"]))
    assert "Starting process with command `bash` by user root" in log, log
    assert "Process exited with status 3\nState changed from up to complete" in log, log


def test_stdin_without_a_tty_procfile_types_and_exit_status(stack_machine: Machine) -> None:
    m = stack_machine
    deploy(m, "pipe", web="python3 server.py", worker="echo worker says")
    proc = m.exec(["sh", "-c", "echo hi | dynoctl run -a pipe --no-tty -- python3 -c "
                               "'import sys; print(sys.stdin.read().upper())'"], check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "HI\n\n"
    assert re.search(r"Running python3 -c 'import sys; print\(sys.stdin.read\(\).upper\(\)\)' "
                     r"on ⬢ pipe\.\.\. up, run\.\d{4} \(Standard-1X\)", proc.stderr), proc.stderr
    # A Procfile type name runs that type's command with the extra arguments.
    proc = m.exec(["dynoctl", "run", "-a", "pipe", "--no-tty", "worker", "42"], check=False)
    assert proc.returncode == 0 and proc.stdout == "worker says 42\n", proc
    # The remote exit status is dynoctl's; -x says it too; -e adds variables.
    proc = m.exec(["dynoctl", "run", "-a", "pipe", "-x", "-e", "A=1;B=two", "--no-tty",
                   "echo $A-$B-$DYNO; exit 7"], check=False)
    assert proc.returncode == 7, proc
    assert re.fullmatch(r"1-two-run\.\d{4}\n", proc.stdout), proc.stdout
    assert "Process exited with code 7" in proc.stderr
    # stdout and stderr stay apart.
    proc = m.exec(["dynoctl", "run", "-a", "pipe", "--no-tty", "echo out; echo err >&2"])
    assert proc.stdout == "out\n" and proc.stderr.endswith("err\n"), proc
    # Bad input is refused with a clear message.
    proc = m.exec(["dynoctl", "run", "-a", "pipe", "-s", "huge", "--no-tty", "true"],
                  check=False)
    assert proc.returncode == 1 and "huge" in proc.stderr, proc


def _start_background(m: Machine, app: str, command: str, ready: str = "up, run.") -> int:
    """dynoctl run without a tty in the background; returns its pid once ``ready`` is
    in its output (default: once its dyno is up)."""
    out = m.exec(["sh", "-c", f"dynoctl run -a {app} --no-tty -- {command} "
                              f"</dev/null >/tmp/{app}.out 2>&1 & echo $!"]).stdout
    pid = int(out.strip())
    wait_for(f"{ready!r} from the one-off dyno",
             lambda: ready in m.exec(["cat", f"/tmp/{app}.out"]).stdout, timeout=30)
    return pid


def test_client_gone_hangs_up_and_r16(stack_machine: Machine) -> None:
    m = stack_machine
    deploy(m, "hup", web="python3 server.py")
    pid = _start_background(m, "hup", "sleep 300")
    assert len(oneoff_units(m)) == 1
    m.exec(["kill", "-9", str(pid)])
    started = time.monotonic()
    wait_for("the one-off dyno gone", lambda: not oneoff_units(m), timeout=5)
    took = time.monotonic() - started
    log = journal(m, "hup")
    assert "Client connection closed. Sending SIGHUP to all processes" in log, log
    assert "R16" not in log
    print(f"one-off gone {took:.2f} s after its client was killed")

    # A process that ignores SIGHUP: R16, then it is stopped anyway.
    pid = _start_background(m, "hup", "bash -c 'trap \"\" HUP; echo tr\"\"apped; sleep 300'",
                            ready="trapped\n")  # not the banner's command line
    m.exec(["kill", "-9", str(pid)])
    try:
        wait_for("the SIGHUP-ignoring dyno gone", lambda: not oneoff_units(m), timeout=15)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{journal(m, 'hup')}\n{m.exec(ONEOFF_UNITS).stdout}\n"
                             + m.exec(["journalctl", "-u", "dynod", "-n", "30", "--no-pager"],
                                      check=False).stdout) from None
    log = journal(m, "hup")
    assert ("Error R16 (Detached) -> An attached process is not responding to SIGHUP "
            "after its external connection was closed.") in log, log
    assert log.rindex("Error R16") < log.rindex("Process exited with status 143"), log


def test_detached_ps_and_the_limit(stack_machine: Machine) -> None:
    m = stack_machine
    deploy(m, "det", web="python3 server.py")
    proc = m.exec(["dynoctl", "run:detached", "-a", "det", "echo detached-output; sleep 60"])
    m_ = re.search(r"Running echo detached-output; sleep 60 on ⬢ det\.\.\. done, "
                   r"(run\.\d{4}) \(Standard-1X\)", proc.stderr)
    assert m_, proc.stderr
    dyno = m_.group(1)
    assert f"Run dynoctl logs --app det --dyno {dyno} to view the output." in proc.stderr
    wait_for("the detached output in the app's logs", lambda: m.exec(
        ["journalctl", "--no-pager", "-o", "cat", "DYNOD_APP=det", f"DYNOD_DYNO={dyno}"],
        check=False).stdout.count("detached-output"), timeout=15)
    ps = dynoctl(m, "ps", "-a", "det")
    assert ps.startswith("=== run: one-off processes (1)\n"), ps
    assert re.search(rf"^{re.escape(dyno)} \(Standard-1X\): up \d{{4}}/.*: "
                     r"echo detached-output; sleep 60", ps, re.M), ps
    assert "=== web (Standard-1X)" in ps
    # Four more fill the limit of 5; the sixth is refused with a clear message.
    for _ in range(4):
        m.exec(["dynoctl", "run:detached", "-a", "det", "sleep 60"])
    proc = m.exec(["dynoctl", "run:detached", "-a", "det", "sleep 60"], check=False)
    assert proc.returncode == 1 and "limit" in proc.stderr and "5" in proc.stderr, proc
    # ps:stop ends a one-off; it is not restarted.
    dynoctl(m, "ps:stop", "-a", "det", dyno)
    wait_for("the stopped one-off gone", lambda: dyno not in dynoctl(m, "ps", "-a", "det"),
             timeout=15)
    assert len(oneoff_units(m)) == 4


def test_a_dynod_restart_keeps_detached_one_offs_and_hangs_up_attached_ones(
        stack_machine: Machine) -> None:
    m = stack_machine
    deploy(m, "rst", web="python3 server.py")
    _start_background(m, "rst", "sleep 300")
    proc = m.exec(["dynoctl", "run:detached", "-a", "rst", "sleep 300"])
    detached = re.search(r"done, (run\.\d{4})", proc.stderr)
    assert detached, proc.stderr
    assert len(oneoff_units(m)) == 2
    m.exec(["systemctl", "restart", "dynod"])
    wait_for("the attached one-off gone", lambda: len(oneoff_units(m)) == 1, timeout=15)
    ps = dynoctl(m, "ps", "-a", "rst")
    assert ps.startswith("=== run: one-off processes (1)\n"), ps
    assert f"{detached.group(1)} (Standard-1X): up" in ps, ps
    dynoctl(m, "ps:stop", "-a", "rst", detached.group(1))
    wait_for("the detached one-off gone", lambda: not oneoff_units(m), timeout=15)
    assert "Process exited with status 143" in journal(m, "rst", detached.group(1))
