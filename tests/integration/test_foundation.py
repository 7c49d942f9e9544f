"""The ground everything stands on: the sandbox machine and dynod.service inside it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.sandbox.machine import PROJECT, Machine, all_residue

pytestmark = pytest.mark.integration

RUN = str(PROJECT / "tests/sandbox/run")
VENV_PY = str(PROJECT / ".venv/bin/python")


def sandbox_run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([RUN, "--quiet", *args], capture_output=True, text=True,
                          timeout=timeout, check=False, stdin=subprocess.DEVNULL)


# ---- the runner, as a user calls it


def test_runner_prints_running_and_passes_exit_codes() -> None:
    ok = sandbox_run("--", "systemctl", "is-system-running")
    assert (ok.returncode, ok.stdout) == (0, "running\n"), ok.stderr
    assert sandbox_run("--", "false").returncode == 1
    seven = sandbox_run("--", "sh", "-c", "echo out; echo err >&2; exit 7")
    assert (seven.returncode, seven.stdout, seven.stderr) == (7, "out\n", "err\n")


def test_runner_runs_command_as_transient_unit_under_its_own_cgroup() -> None:
    proc = sandbox_run("--", "cat", "/proc/self/cgroup")
    assert proc.returncode == 0, proc.stderr
    # A transient unit in the machine's system.slice, seen through its cgroup namespace.
    assert "name=systemd:/system.slice/run-u" in proc.stdout
    assert ".service" in proc.stdout


def test_runner_leaves_host_untouched(tmp_path: Path) -> None:
    marker = Path("/tmp") / f"dynod-host-marker-{os.getpid()}"
    marker.write_text("keep me")
    hostname = socket.gethostname()
    links_before = _host_links()
    try:
        # systemd-tmpfiles runs at boot inside; the host's /tmp must not be cleaned.
        proc = sandbox_run("--", "sh", "-c", "hostname; ls /tmp; touch /etc/sandbox-only")
        assert proc.returncode == 0, proc.stderr
        assert marker.name not in proc.stdout, "the machine must have a private /tmp"
        assert proc.stdout.splitlines()[0].startswith("dsb-")
        assert marker.read_text() == "keep me"
        assert socket.gethostname() == hostname
        assert not Path("/etc/sandbox-only").exists()
        assert not Path("/var/log/journal").exists() or Path("/var/log/journal").is_dir()
        assert _host_links() == links_before
    finally:
        marker.unlink()


def _host_links() -> list[str]:
    # Other machines of a parallel test run have links of their own (dsb*).
    return sorted(p.name for p in Path("/sys/class/net").iterdir() if not p.name.startswith("dsb"))


def test_ctrl_c_of_runner_leaves_nothing() -> None:
    proc = subprocess.Popen([RUN, "--quiet", "--name", "dsb-ctrlc", "--", "sleep", "300"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_machine("dsb-ctrlc")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
    assert [r for r in all_residue() if "dsb-ctrlc" in r] == []


def test_kill_9_of_runner_is_cleaned_up_by_next_run() -> None:
    proc = subprocess.Popen([RUN, "--quiet", "--name", "dsb-killed", "--", "sleep", "300"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    _wait_for_machine("dsb-killed")
    proc.kill()
    proc.wait()
    # The machine's processes die with the runner (parent-death signal + unshare
    # --kill-child); what remains on the host is cleaned by the next run.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _machine_procs("dsb-killed"):
        time.sleep(0.1)
    assert _machine_procs("dsb-killed") == []
    later = sandbox_run("--no-egress", "--", "true")
    assert later.returncode == 0, later.stderr
    assert [r for r in all_residue() if "dsb-killed" in r] == []


def _wait_for_machine(name: str, timeout: float = 60) -> None:
    record = Path("/var/tmp/dynod-sandbox/records") / f"{name}.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if record.exists() and _machine_procs(name):
            # Wait until the command itself runs: systemd-run has a unit inside.
            out = subprocess.run(["pgrep", "-f", f"systemd-run.*DYNOD_SANDBOX={name}"],
                                 capture_output=True, text=True, check=False)
            if out.stdout.strip():
                return
        time.sleep(0.05)
    raise AssertionError(f"machine {name} never came up")


def _machine_procs(name: str) -> list[str]:
    out = subprocess.run(["pgrep", "-f", f'"name": "{name}"'], capture_output=True,
                         text=True, check=False)
    return out.stdout.split()


def test_persistent_state_is_a_reboot(tmp_path: Path) -> None:
    state = str(tmp_path / "state")
    first = sandbox_run("--state", state, "--", "sh", "-c",
                        "echo kept > /var/lib/dynod/marker; echo gone > /run/marker;"
                        " cat /etc/machine-id; journalctl --list-boots --no-pager | wc -l")
    assert first.returncode == 0, first.stderr
    second = sandbox_run("--state", state, "--", "sh", "-c",
                         "cat /var/lib/dynod/marker; test ! -e /run/marker && echo run-clean;"
                         " cat /etc/machine-id; journalctl --list-boots --no-pager | wc -l;"
                         " systemctl is-active dynod")
    assert second.returncode == 0, second.stderr
    kept, run_clean, machine_id, boots, active = second.stdout.split()
    assert (kept, run_clean, active) == ("kept", "run-clean", "active")
    assert machine_id == first.stdout.split()[0]
    assert int(boots) == int(first.stdout.split()[1]) + 1


# ---- dynod.service inside


def test_dynod_is_ready_and_active(shared_machine: Machine) -> None:
    m = shared_machine
    assert m.exec(["systemctl", "is-active", "dynod"]).stdout == "active\n"
    show = m.exec(["systemctl", "show", "dynod", "-p", "Type,StatusText,NRestarts,MainPID"])
    props = dict(line.split("=", 1) for line in show.stdout.splitlines())
    assert props["Type"] == "notify"
    assert props["StatusText"] == "listening on /run/dynod/dynod.sock"
    assert props["NRestarts"] == "0"
    # Not a dyno of its own: dynod.slice exists for dynos, dynod runs in system.slice.
    cgroup = m.exec(["cat", f"/proc/{props['MainPID']}/cgroup"]).stdout
    assert "/system.slice/dynod.service" in cgroup


def test_socket_is_root_and_group_dynod_0660(shared_machine: Machine) -> None:
    out = shared_machine.exec(["stat", "-c", "%a %U %G %F", "/run/dynod/dynod.sock"]).stdout
    assert out.split() == ["660", "root", "dynod", "socket"]


def test_dynoctl_version_answers(shared_machine: Machine) -> None:
    proc = shared_machine.run(["dynoctl", "version"])
    assert proc.returncode == 0, proc.stderr
    client, daemon = proc.stdout.splitlines()
    assert client.startswith("dynoctl ")
    version = client.split()[1]
    assert daemon.startswith(f"dynod {version} (API v1, systemd ")
    assert "cgroup hybrid" in daemon or "cgroup v2" in daemon


def test_reflection_and_health(shared_machine: Machine) -> None:
    script = (
        "import grpc\n"
        "from grpc_reflection.v1alpha import reflection_pb2 as r, reflection_pb2_grpc as rg\n"
        "from grpc_health.v1 import health_pb2 as h, health_pb2_grpc as hg\n"
        "ch = grpc.insecure_channel('unix:/run/dynod/dynod.sock')\n"
        "req = r.ServerReflectionRequest(list_services='')\n"
        "for resp in rg.ServerReflectionStub(ch).ServerReflectionInfo(iter([req])):\n"
        "    print('\\n'.join(sorted(s.name for s in resp.list_services_response.service)))\n"
        "st = hg.HealthStub(ch).Check(h.HealthCheckRequest(service='dynod.v1.System'))\n"
        "print('health', h.HealthCheckResponse.ServingStatus.Name(st.status))\n"
    )
    proc = shared_machine.run([VENV_PY, "-c", script])
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    for service in ("dynod.v1.System", "grpc.health.v1.Health",
                    "grpc.reflection.v1alpha.ServerReflection"):
        assert service in lines
    assert lines[-1] == "health SERVING"


def test_dynoctl_says_plainly_when_daemon_is_down(machine: Machine) -> None:
    machine.exec(["systemctl", "stop", "dynod"])
    proc = machine.run(["dynoctl", "version"])
    assert proc.returncode == 1
    assert proc.stdout.startswith("dynoctl ")
    assert proc.stderr.startswith(" !    daemon: unreachable: dynod is not running")
    assert "systemctl start dynod" in proc.stderr


def test_sigterm_stops_cleanly_with_stopping(machine: Machine) -> None:
    machine.exec(["systemctl", "stop", "dynod"])
    show = machine.exec(["systemctl", "show", "dynod", "-p", "ActiveState,Result,ExecMainStatus"])
    props = dict(line.split("=", 1) for line in show.stdout.splitlines())
    assert props == {"ActiveState": "inactive", "Result": "success", "ExecMainStatus": "0"}
    journal = machine.exec(["journalctl", "-u", "dynod", "-o", "cat", "--no-pager"]).stdout
    assert "dynod: received SIGTERM, stopping" in journal
    assert "dynod: dynod stopped" in journal
    machine.exec(["systemctl", "start", "dynod"])
    assert machine.run(["dynoctl", "version"]).returncode == 0


def test_watchdog_is_pinged(machine: Machine) -> None:
    dropin = "/run/systemd/system/dynod.service.d"
    machine.exec(["mkdir", "-p", dropin])
    machine.exec(["sh", "-c", f"printf '[Service]\\nWatchdogSec=1s\\n' > {dropin}/wd.conf"])
    machine.exec(["systemctl", "daemon-reload"])
    machine.exec(["systemctl", "restart", "dynod"])
    time.sleep(4)  # four watchdog periods: a daemon that did not ping would be killed
    show = machine.exec(["systemctl", "show", "dynod", "-p", "ActiveState,NRestarts,WatchdogUSec"])
    props = dict(line.split("=", 1) for line in show.stdout.splitlines())
    assert props == {"ActiveState": "active", "NRestarts": "0", "WatchdogUSec": "1s"}


def test_daemon_comes_back_after_reboot(persistent_machine: Machine) -> None:
    m = persistent_machine
    m.exec(["sh", "-c", "echo survived > /var/lib/dynod/reboot-marker; touch /run/dynod/volatile"])
    m.reboot()
    assert m.exec(["systemctl", "is-active", "dynod"]).stdout == "active\n"
    assert m.exec(["cat", "/var/lib/dynod/reboot-marker"]).stdout == "survived\n"
    assert m.exec(["test", "-e", "/run/dynod/volatile"], check=False).returncode == 1
    assert m.run(["dynoctl", "version"]).returncode == 0


def test_memory_limit_is_enforced(shared_machine: Machine) -> None:
    hog = "b = bytearray(200 * 1024 * 1024); b[::4096] = b'x' * len(b[::4096]); print('survived')"
    proc = shared_machine.run(["/usr/bin/python3", "-c", hog],
                              properties=["MemoryMax=64M", "MemorySwapMax=0"])
    assert proc.returncode != 0
    assert "survived" not in proc.stdout
    small = shared_machine.run(["/usr/bin/python3", "-c", "b = bytearray(8 << 20); print('ok')"],
                               properties=["MemoryMax=64M"])
    assert (small.returncode, small.stdout) == (0, "ok\n")


def test_tasks_limit_is_enforced(shared_machine: Machine) -> None:
    script = ("import os\npids = []\ntry:\n    for _ in range(50):\n        pid = os.fork()\n"
              "        if pid == 0:\n            os.pause()\n        pids.append(pid)\n"
              "except OSError as e:\n    print('refused at', len(pids))\n"
              "for p in pids:\n    os.kill(p, 9)\n")
    proc = shared_machine.run(["/usr/bin/python3", "-c", script], properties=["TasksMax=10"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "refused at 9"


def test_egress_reaches_registries_but_not_host_or_private_ranges(shared_machine: Machine) -> None:
    route = shared_machine.exec(["ip", "-4", "route", "show", "default"]).stdout.split()
    gateway = route[route.index("via") + 1]  # the host's end of the machine's veth
    script = (
        "import socket, urllib.request\n"
        "print(urllib.request.urlopen('https://pypi.org/simple/pip/', timeout=20).status)\n"
        f"for host in ({gateway!r}, '192.0.2.1', '10.255.255.1'):\n"
        "    s = socket.socket(); s.settimeout(2)\n"
        "    try:\n        s.connect((host, 22)); print(host, 'reached')\n"
        "    except OSError:\n        print(host, 'blocked')\n"
    )
    proc = shared_machine.run(["/usr/bin/python3", "-c", script])
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "200"
    assert all(line.endswith("blocked") for line in lines[1:]), lines
