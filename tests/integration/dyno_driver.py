"""Runs inside a sandbox machine, as root, in systemd's mount namespace (a transient
unit): drives dynod.system.mounts, dynod.system.netns and dynod.system.units against the
machine's real systemd and prints what it saw as one JSON object for the test to assert on.

    dyno_driver.py web      start a dyno, probe it, write, restart, probe, tear down
    dyno_driver.py oom      start a dyno with a small MemoryMax= and make it hog memory
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from ipaddress import IPv4Address
from pathlib import Path, PurePosixPath
from typing import Any

from dynod.system import mounts, netns, unit_names, unit_properties, units
from dynod.system.mounts import Bind
from dynod.system.unit_properties import DynoSpec, Limits

PROJECT = Path(__file__).resolve().parents[2]
WORK = Path("/run/dyno-test")
RUNTIME = Path("/run/dynod")
POOL = "10.213.0.0/16"
PORT = 5000
HOST_PORT = 8111
USER = "dynod-app-itest"  # a service on the machine itself, that no dyno may reach


def sh(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=False).stdout


def writable_net_sysctls() -> None:
    """The machine means /proc/sys/net to be writable (its own netns), but its bind
    inherits the read-only flag of /proc/sys; remount it (in the machine only) until
    tests/sandbox fixes that. NAT needs net.ipv4.ip_forward."""
    knob = Path("/proc/sys/net/ipv4/ip_forward")
    try:
        knob.write_text(knob.read_text())
    except OSError:
        subprocess.run(["mount", "-o", "remount,bind,rw", "/proc/sys/net"], check=True)


def prepare() -> tuple[Path, Path, Path]:
    """dyno-init, a 20-inode stack on the machine's /usr, and a slug tree with app/."""
    writable_net_sysctls()
    init = WORK / "dyno-init"
    if not init.exists():
        WORK.mkdir(parents=True, exist_ok=True)
        subprocess.run([str(PROJECT / "dynod/init/build.sh"), str(init)], check=True)
    stack = WORK / "stack"
    if not stack.exists():
        for d in ("usr", "etc", "proc", "sys", "dev", "tmp", "run", "var/tmp", "app"):
            (stack / d).mkdir(parents=True, exist_ok=True)
        for link in ("bin", "sbin", "lib", "lib64"):
            (stack / link).symlink_to(f"usr/{link}")
        (stack / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    slug = WORK / "slug"
    if not slug.exists():
        (slug / "app/.profile.d").mkdir(parents=True)
        shutil.copy(PROJECT / "tests/integration/dyno_app.py", slug / "app/server.py")
        (slug / "app/.profile.d/test.sh").write_text("export FROM_PROFILE_D=yes\n")
        # The app's own unprivileged user owns its slug, as on Heroku (/app is the
        # dyno user's); the machine's /etc is its own.
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", USER],
            check=True,
        )
        for path in [slug / "app", *(slug / "app").rglob("*")]:
            shutil.chown(path, USER, USER)
    return init, stack, slug


class Dyno:
    def __init__(self, app: str, number: int, limits: Limits) -> None:
        init, stack, slug = prepare()
        self.bridge = netns.plan_bridge(POOL)
        resolv = netns.ensure_bridge(self.bridge, RUNTIME)
        key = f"{app}-web.{number}"
        binds = (
            *mounts.dyno_binds(init, resolv),
            Bind(Path("/usr"), PurePosixPath("/usr")),
        )
        self.rootfs = mounts.plan_rootfs(RUNTIME, key, slug, stack, binds)
        address = netns.allocate_address(self.bridge, netns.used_addresses())
        self.net = netns.plan_dyno_network(self.bridge, key, address)
        self.spec = DynoSpec(
            app=app,
            process_type="web",
            number=number,
            release=3,
            command="exec python3 -u server.py",
            root=self.rootfs.root,
            env=unit_properties.make_env({"GREETING": "it's $HOME"}),
            binds=self.rootfs.binds,
            netns_path=self.net.netns_path,
            ip_allow=tuple(netns.ip_allow_list(self.net, self.bridge.pool)),
            limits=limits,
            user=USER,
            port=PORT,
        )
        self.unit = unit_names.unit_name(app, "web", number)
        self.timings: dict[str, float] = {}

    @property
    def address(self) -> IPv4Address:
        return self.net.address

    def start(self) -> None:
        t0 = time.monotonic()
        mounts.apply_rootfs(self.rootfs)
        netns.create_dyno_network(self.net)
        t1 = time.monotonic()
        units.start_dyno(self.spec)
        t2 = time.monotonic()
        self.wait_http()
        t3 = time.monotonic()
        self.timings = {
            "setup_ms": (t1 - t0) * 1e3,
            "start_ms": (t2 - t1) * 1e3,
            "first_http_ms": (t3 - t1) * 1e3,
        }

    def wait_http(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((str(self.address), PORT), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        raise TimeoutError(
            f"{self.unit} did not listen on {self.address}:{PORT}\n"
            + sh("journalctl", "--no-pager", "-n", "40")
        )

    def get(self, path: str, timeout: float = 10.0) -> tuple[int, str]:
        url = f"http://{self.address}:{PORT}{path}"
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode()

    def stop(self) -> bool:
        units.stop_dyno(self.unit)
        gone = units.wait_gone(self.unit)
        mounts.remove_rootfs(self.rootfs)
        netns.remove_dyno_network(self.net)
        return gone

    def cgroup_file(self, v1: str, v2: str) -> str:
        cg = sh("systemctl", "show", "-p", "ControlGroup", "--value", self.unit).strip()
        for path in (
            Path("/sys/fs/cgroup/memory") / cg.lstrip("/") / v1,
            Path("/sys/fs/cgroup") / cg.lstrip("/") / v2,
        ):
            if path.exists():
                return path.read_text().strip()
        return ""


def residue() -> dict[str, list[str]]:
    points = [
        m
        for m in mounts.mount_points(Path("/proc/self/mountinfo").read_text())
        if m.startswith(str(RUNTIME / "dynos")) or m.startswith("/run/netns/dynod-")
    ]
    links = [ln for ln in sh("ip", "-o", "link").splitlines() if ": dv" in ln]
    return {
        "mounts": points,
        "netns": netns.list_dyno_netns(),
        "links": links,
        "dyno_dirs": mounts.list_dyno_dirs(RUNTIME),
    }


def host_listener() -> None:
    srv = socket.create_server(("0.0.0.0", HOST_PORT))  # noqa: S104 - the probe's target

    def serve() -> None:
        while True:
            conn, _ = srv.accept()
            conn.close()

    threading.Thread(target=serve, daemon=True).start()


def scenario_web() -> dict[str, Any]:
    host_listener()
    out: dict[str, Any] = {}
    dyno = Dyno("itest", 1, Limits(memory_max=256 << 20, tasks_max=64, cpu_weight=50))
    dyno.start()
    try:
        out["timings"] = dyno.timings
        out["address"] = str(dyno.address)
        out["hello"] = dyno.get("/")
        gw = f"{dyno.bridge.gateway}:{HOST_PORT}"
        out["probe1"] = json.loads(dyno.get(f"/probe?connect={gw}")[1])
        out["slice"] = sh("systemctl", "show", "-p", "Slice", "--value", dyno.unit).strip()
        out["memory_limit"] = dyno.cgroup_file("memory.limit_in_bytes", "memory.max")
        out["security"] = sh("systemd-analyze", "security", "--no-pager", dyno.unit)
        out["write"] = dyno.get("/write")
        out["probe_after_write"] = json.loads(dyno.get("/probe")[1])
        out["journal"] = sh(
            "journalctl",
            "--no-pager",
            "-o",
            "cat",
            "DYNOD_APP=itest",
            "DYNOD_DYNO=web.1",
            "DYNOD_RELEASE=3",
        )
        out["stopped_cleanly"] = dyno.stop()
        out["residue_between"] = residue()
        dyno.start()  # a restart: a fresh upper layer
        out["probe2"] = json.loads(dyno.get("/probe")[1])
    finally:
        out["stopped_cleanly_2"] = dyno.stop()
        out["unit_log"] = sh("journalctl", "--no-pager", "-o", "cat", "-u", dyno.unit)
    out["residue"] = residue()
    return out


def scenario_oom() -> dict[str, Any]:
    out: dict[str, Any] = {}
    dyno = Dyno("oomtest", 1, Limits(memory_max=64 << 20))
    dyno.start()
    try:
        out["memory_limit"] = dyno.cgroup_file("memory.limit_in_bytes", "memory.max")
        try:
            out["hog"] = dyno.get("/hog?mb=200", timeout=20)
        except OSError as exc:
            out["hog"] = f"failed: {exc}"
        out["gone"] = units.wait_gone(dyno.unit, timeout=20)
    finally:
        dyno.stop()
        out["unit_log"] = sh("journalctl", "--no-pager", "-o", "cat", "-u", dyno.unit)
    out["residue"] = residue()
    return out


if __name__ == "__main__":
    scenarios = {"web": scenario_web, "oom": scenario_oom}
    print(json.dumps(scenarios[sys.argv[1]]()))
