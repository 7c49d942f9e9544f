"""dyno-init, built and run for real: as a plain reaper, and with its PID namespace
inside an unprivileged user namespace (no root, no systemd)."""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from dynod.system import processes

PROJECT = Path(__file__).resolve().parents[2]
BUILD = PROJECT / "dynod/init/build.sh"
# A plain reaper: no namespace of its own, no capability needed.
PLAIN = ["--no-pidns", "--no-cgroupns"]

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")


@pytest.fixture(scope="module")
def init(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("init") / "dyno-init"
    processes.output([str(BUILD), str(out)], timeout=120)
    return out


def _userns_works() -> bool:
    try:
        processes.output(["unshare", "--user", "--map-root-user", "true"])
    except processes.CommandFailed:
        return False
    return True


def _in_pidns(init: Path, *cmd: str, options: tuple[str, ...] = ()) -> list[str]:
    """dyno-init with its own PID namespace (or ``options``), in a user namespace of
    ours (which gives it CAP_SYS_ADMIN there, as the unit's ambient capability does in a
    dyno)."""
    if not _userns_works():
        pytest.skip("unprivileged user namespaces are disabled")
    return ["unshare", "--user", "--map-root-user", str(init), *options, "--", *cmd]


def _rc(argv: list[str], timeout: float = 10) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


def test_static_and_small(init: Path) -> None:
    assert init.stat().st_size < 1 << 20
    # A static binary has no PT_INTERP: it runs in any stack without a loader.
    assert b"/lib64/ld-linux" not in init.read_bytes()


@pytest.mark.parametrize("mode", [PLAIN, []])
def test_exit_status_is_the_commands(init: Path, mode: list[str]) -> None:
    def argv(*cmd: str) -> list[str]:
        return [str(init), *mode, "--", *cmd] if mode else _in_pidns(init, *cmd)

    assert _rc(argv("sh", "-c", "exit 7")).returncode == 7
    assert _rc(argv("true")).returncode == 0
    # Killed by a signal: 128 + N, like a shell and like Heroku's "status 143".
    assert _rc(argv("sh", "-c", "kill -TERM $$")).returncode == 143
    assert _rc(argv("sh", "-c", "kill -KILL $$")).returncode == 137
    missing = _rc(argv("/nonexistent/command"))
    assert missing.returncode == 127
    assert "/nonexistent/command" in missing.stderr


def test_usage_errors(init: Path) -> None:
    assert _rc([str(init)]).returncode == 125
    assert _rc([str(init), "--bogus", "--", "true"]).returncode == 125
    assert _rc([str(init), "--"]).returncode == 125


def test_pidns_command_sees_only_the_dyno(init: Path) -> None:
    script = 'echo "$$"; for p in /proc/[0-9]*; do echo "${p#/proc/}"; done'
    proc = _rc(_in_pidns(init, "sh", "-c", script))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.split()
    assert lines[0] == "2"  # the command is PID 2; dyno-init is PID 1
    assert set(lines[1:]) <= {"1", "2"}


_CGROUPS = ("cat /proc/self/cgroup; "
            "touch /sys/fs/cgroup/x 2>/dev/null && echo writable || echo read-only")


@pytest.mark.parametrize("options", [(), ("--no-pidns",)])
def test_cgroup_namespace_hides_the_hosts_paths(init: Path, options: tuple[str, ...]) -> None:
    """Every hierarchy's path is "/" (the namespace's root) and the fresh /sys/fs/cgroup
    is read-only. (Which hierarchies it mounts needs a unit's cgroup:
    tests/integration/test_dyno_cgroups.py.)"""
    proc = _rc(_in_pidns(init, "sh", "-c", _CGROUPS, options=options))
    assert proc.returncode == 0, proc.stderr
    *cgroups, access = proc.stdout.splitlines()
    assert cgroups and all(line.endswith(":/") for line in cgroups), proc.stdout
    assert access == "read-only"
    # Without it, the process's own full paths as the test sees them.
    own = Path("/proc/self/cgroup").read_text().splitlines()
    plain = _rc([str(init), *PLAIN, "--", "cat", "/proc/self/cgroup"])
    assert plain.stdout.splitlines() == own


def test_pidns_orphans_are_reaped(init: Path) -> None:
    # Double-forked children become PID 1's; none may stay a zombie.
    script = (
        "(sleep 0.1 &); (sleep 0.1 &); sleep 0.6; "
        'for s in /proc/[0-9]*/stat; do read -r _ _ st _ < "$s"; echo "$st"; done'
    )
    proc = _rc(_in_pidns(init, "sh", "-c", script))
    assert proc.returncode == 0, proc.stderr
    assert "Z" not in proc.stdout.split()


@pytest.mark.parametrize("mode", [PLAIN, []])
def test_sigterm_is_forwarded(init: Path, mode: list[str], tmp_path: Path) -> None:
    marker = tmp_path / "got-term"
    script = f'trap "echo term > {marker}; exit 0" TERM; while :; do sleep 0.05; done'
    argv = (
        [str(init), *mode, "--", "sh", "-c", script]
        if mode
        else _in_pidns(init, "sh", "-c", script)
    )
    # unshare without --fork execs dyno-init: the pid is dyno-init's outer process.
    proc = subprocess.Popen(argv)
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=5) == 0
    assert marker.read_text() == "term\n"


_CTTY = ("import os, sys; "
         "leader = os.getsid(0) == os.getpid(); "
         "fg = os.tcgetpgrp(0) == os.getpgrp() if os.isatty(0) else False; "
         "print(f'leader={leader} foreground={fg}'); sys.stdout.flush()")


def test_a_terminal_becomes_the_commands_controlling_terminal(init: Path) -> None:
    """stdin a pty (dynoctl run bash): the command leads its own session and is the
    terminal's foreground process group, so Ctrl-C, SIGWINCH and SIGHUP reach it."""
    import os  # noqa: PLC0415
    import pty  # noqa: PLC0415

    master, slave = pty.openpty()
    try:
        proc = subprocess.run([str(init), *PLAIN, "--", "python3", "-c", _CTTY],
                              stdin=slave, stdout=slave, stderr=slave, timeout=10,
                              check=False, start_new_session=True)
        os.close(slave)
        out = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(master)
    assert proc.returncode == 0, out
    assert b"leader=True foreground=True" in out


def test_without_a_terminal_no_new_session(init: Path) -> None:
    got = _rc([str(init), *PLAIN, "--", "python3", "-c", _CTTY])
    assert got.returncode == 0, got.stderr
    assert got.stdout.strip() == "leader=False foreground=False"


# ---- --journal: the command's output through dyno-init (a socketpair stands for the
# journal stream systemd gives the unit; the reconnect itself needs journald: it is
# tested in tests/integration/test_faults_services.py, case journald-stop)


def _journal(init: Path, script: str, pidns: bool = False) -> tuple[subprocess.Popen[bytes],
                                                                     socket.socket]:
    ours, theirs = socket.socketpair()
    argv = [str(init), "--journal", "web.1", "--", "sh", "-c", script]
    if pidns:
        argv = [*_in_pidns(init)[:-2], *argv]
    else:
        argv.insert(1, "--no-pidns")
    proc = subprocess.Popen(argv, stdout=theirs.fileno(), stderr=theirs.fileno())
    theirs.close()
    return proc, ours


def _read_all_bytes(sock: socket.socket) -> bytes:
    """Until dyno-init and the command are gone (the stream's end)."""
    sock.settimeout(30)
    data = b""
    while chunk := sock.recv(1 << 16):
        data += chunk
    return data


def _read_all(sock: socket.socket) -> list[str]:
    return _read_all_bytes(sock).decode().splitlines()


@pytest.mark.parametrize("pidns", [False, True])
def test_journal_output_goes_through_a_pipe(init: Path, pidns: bool) -> None:
    proc, ours = _journal(init, "echo out; echo err >&2; readlink /proc/self/fd/1 "
                          "/proc/self/fd/2", pidns)
    assert proc.wait(10) == 0
    lines = _read_all(ours)
    assert lines[:2] == ["out", "err"], lines
    # stdout and stderr: one pipe, as systemd gives them one stream
    assert lines[2].startswith("pipe:") and lines[2] == lines[3], lines


def test_journal_gone_never_blocks_the_command(init: Path) -> None:
    """The stream closed (journald stopped): the command writes on, as if nothing
    happened, and exits with its own status; nothing to reconnect to here."""
    proc, ours = _journal(init, "sleep 0.2; i=0; while [ $i -lt 20000 ]; do "
                          "echo line $i; i=$((i+1)); done; exit 3")
    ours.close()
    started = time.monotonic()
    assert proc.wait(30) == 3
    # the loop's own time, plus at most a second to try to hand the last lines over
    assert time.monotonic() - started < 25


def test_journal_stalled_drops_and_says_how_many(init: Path) -> None:
    """A stream that takes nothing: after a second of back-pressure new output is
    dropped (the command carries on), and when the stream flows again one line says
    how many lines were lost, Heroku's L10."""
    proc, ours = _journal(init, "i=0; while [ $i -lt 100000 ]; do echo line $i; "
                          "i=$((i+1)); done; sleep 6; echo after")
    time.sleep(4)  # more than the loop needs: were the command blocked, it would be in it
    lines = _read_all(ours)
    assert proc.wait(10) == 0
    notes = [x for x in lines if x.startswith("Error L10 (output buffer overflow): ")]
    assert len(notes) == 1, lines[-5:]
    dropped = int(notes[0].split(": ")[1].split()[0])
    # A line kept whole, or its beginning when the buffer filled mid-line ("lin"); the
    # tail of a line begun in what was dropped ("5 12") is not kept: that line is counted.
    kept = [x for x in lines if re.fullmatch(r"l(i(n(e( \d*)?)?)?)?", x)]
    assert kept[0] == "line 0" and lines[-1] == "after"
    # each line is kept (whole or in part) or counted as dropped
    assert dropped > 0 and len(kept) + dropped == 100000, (len(kept), dropped)
    assert " messages dropped since 20" in notes[0] and notes[0].endswith("+00:00.")


def test_journal_taking_a_trickle_does_not_hold_the_command(init: Path,
                                                            tmp_path: Path) -> None:
    """A stream that takes 4 KB each 0.1 s (~200 lines of 200 bytes a second: journald
    slowed down by its own full disk): after a second the command's output is dropped
    rather than held, so 20,000 lines (4 MB, 100 s at that pace) are written, and the
    command has finished, long before the reader has taken a tenth of them; the L10 line
    counts what was dropped."""
    done = tmp_path / "done"
    proc, ours = _journal(init, f"p=$(printf %0190d 0); i=0; while [ $i -lt 20000 ]; do "
                          f"echo \"line $i $p\"; i=$((i+1)); done; touch {done}; echo after")
    ours.settimeout(30)
    data = b""
    while not done.exists():
        chunk = ours.recv(4096)
        assert chunk, "the stream ended before the command did"
        data += chunk
        assert len(data) < 400_000, "the command was held by the slow stream"
        time.sleep(0.1)
    lines = (data + _read_all_bytes(ours)).decode().splitlines()  # journald caught up
    assert proc.wait(10) == 0
    notes = [x for x in lines if x.startswith("Error L10 (output buffer overflow): ")]
    assert notes, lines[-3:]
    dropped = sum(int(n.split(": ")[1].split()[0]) for n in notes)
    kept = [x for x in lines if re.fullmatch(r"l(i(n(e( \d*( 0*)?)?)?)?)?|after", x)]
    # 20,000 lines and "after" (dropped too when the dropping went on till the end)
    assert kept[0].startswith("line 0 ") and len(kept) + dropped == 20001, (len(kept),
                                                                           dropped)
