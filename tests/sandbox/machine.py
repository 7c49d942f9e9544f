"""A throwaway systemd machine booted in namespaces, for tests that need real systemd.

The host here does not run systemd as PID 1 (and CI hosts may not either), so every test
that needs systemd boots one: ``unshare`` gives it its own pid, mount, uts, ipc, cgroup and
network namespaces; its root is an overlay of the host's / with an upper layer in the
machine's state directory; it gets fresh cgroup mounts rooted (through the cgroup
namespace) in a subtree of *our own* cgroups, private /dev, /run and /tmp, a read-only
/sys and /proc/sys (except /proc/sys/net, which belongs to its own network namespace),
and its own boot id. dynod is installed from the working tree: the project is bound at its
own path and ``/usr/bin/dynod`` points into the project's virtualenv.

Everything a machine creates on the host is written down first in a record
(``RECORDS/<name>.json``), so teardown, and the next run after a crash, can remove it:
cgroup directories, a veth, iptables chains, the forwarding setting it changed.

Only the standard library is used: this runs with Debian's /usr/bin/python3 on the host.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]
BASE = Path(os.environ.get("DYNOD_SANDBOX_DIR", "/var/tmp/dynod-sandbox"))
RECORDS = BASE / "records"
LOCK = BASE / "lock"
NAME_PREFIX = "dsb-"
# Link between host and machine: one /30 per machine out of this /16.
LINK_NET = (10, 215)
# A test network among machines (cluster tests): a bridge in a network namespace of its
# own, NETNS_PREFIX + hex; its records live beside the machines' in NETWORK_RECORDS.
NETWORK_RECORDS = BASE / "networks"
NETNS_PREFIX = "dsbnet-"
TEST_NET_PREFIX = "10.216.0"
TEST_NET_IFACE = "cluster0"
# Host units that follow into an overlay of / and have no business in a test machine.
MASKED_UNITS = (
    "postgresql.service", "redis-server.service", "haproxy.service", "getty@tty1.service",
    "console-getty.service",
    "e2scrub_reap.service", "e2scrub_all.timer", "apt-daily.timer", "apt-daily-upgrade.timer",
    "apt-daily.service", "apt-daily-upgrade.service", "dpkg-db-backup.timer", "fstrim.timer",
    "man-db.timer", "systemd-timesyncd.service", "systemd-pstore.service",
    "systemd-networkd-wait-online.service", "serial-getty@ttyS0.service",
    "docker.service", "docker.socket", "containerd.service",
    "podman.socket", "podman.service", "podman-restart.service", "podman-auto-update.timer",
    "podman-auto-update.service", "podman-clean-transient.service",
    # Tests run their own rsyslogd (a drain's receiver), never the host's system logger.
    "rsyslog.service", "syslog.socket",
    # Debian's etcd-server ships its own member on 127.0.0.1; dynod runs dynod-etcd.
    "etcd.service",
)
# Capabilities the machine's whole process tree loses: nothing in it may touch the
# host's kernel modules, clock, raw I/O or kernel log.
DROPPED_CAPS = ("sys_module", "sys_time", "sys_rawio", "syslog", "wake_alarm",
                "block_suspend", "mac_admin", "mac_override")
BOOT_TIMEOUT = 60.0
POWEROFF_TIMEOUT = 30.0


class SandboxError(Exception):
    """The machine could not be booted, reached or torn down."""


# --------------------------------------------------------------------------- records


@dataclass
class Record:
    """Everything one machine owns on the host, written before it is created."""

    name: str
    state: str
    persistent: bool
    runner_pid: int
    cgroups: list[str] = field(default_factory=list)
    unshare_pid: int = 0
    veth: str = ""
    link_index: int = -1
    chains: list[str] = field(default_factory=list)
    forwarding: dict[str, str] = field(default_factory=dict)

    def save(self) -> None:
        RECORDS.mkdir(parents=True, exist_ok=True)
        tmp = RECORDS / f".{self.name}.json.tmp"
        tmp.write_text(json.dumps(asdict(self), indent=1))
        tmp.replace(RECORDS / f"{self.name}.json")

    @classmethod
    def load(cls, path: Path) -> Record:
        return cls(**json.loads(path.read_text()))


@contextlib.contextmanager
def host_lock() -> Iterator[None]:
    """Serialise changes to shared host state (link addresses, forwarding, iptables)."""
    BASE.mkdir(parents=True, exist_ok=True)
    with LOCK.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is dead for our purposes.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


# --------------------------------------------------------------------------- cgroups


@dataclass(frozen=True)
class Hierarchy:
    """One mounted cgroup hierarchy of the host and our own place in it."""

    mountpoint: Path
    fstype: str  # cgroup or cgroup2
    options: str  # mount options for a fresh mount inside the machine
    subdir: str  # the name under /sys/fs/cgroup inside the machine ("" for pure v2)
    own: str  # our own cgroup path in it

    def path(self, *parts: str) -> Path:
        return self.mountpoint / self.own.lstrip("/") / "/".join(parts)


def host_hierarchies() -> list[Hierarchy]:
    """The host's cgroup hierarchies, from /proc/self/mountinfo and /proc/self/cgroup."""
    own: dict[str, str] = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _num, names, path = line.split(":", 2)
        own[names] = path
    found: list[Hierarchy] = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        pre, post = line.split(" - ", 1)
        mountpoint = Path(pre.split()[4])
        fstype, _source, super_opts = post.split()[:3]
        if fstype == "cgroup2":
            sub = "" if mountpoint == Path("/sys/fs/cgroup") else mountpoint.name
            found.append(Hierarchy(mountpoint, fstype, "", sub, own.get("", "/")))
        elif fstype == "cgroup":
            opts = [o for o in super_opts.split(",") if o not in ("rw", "ro")]
            ctrls = [o for o in opts if o not in ("xattr", "clone_children", "noprefix")
                     and not o.startswith("release_agent")]
            key = ",".join(ctrls)
            own_path = own.get(key)
            if own_path is None:
                continue
            fresh = "none," + key if key.startswith("name=") else key
            found.append(Hierarchy(mountpoint, fstype, fresh, mountpoint.name, own_path))
    if not found:
        raise SandboxError("no cgroup hierarchy is mounted under /sys/fs/cgroup")
    return found


def _cgroup_mkdir(h: Hierarchy, rel: str) -> Path:
    path = h.path(rel)
    path.mkdir(exist_ok=True)
    if h.fstype == "cgroup" and (path / "cpuset.cpus").exists():
        # A cpuset child starts empty and refuses tasks until cpus and mems are set.
        for knob in ("cpuset.cpus", "cpuset.mems"):
            if not (path / knob).read_text().strip():
                (path / knob).write_text((path.parent / knob).read_text())
    return path


def _enable_v2_controllers(path: Path) -> None:
    available = (path / "cgroup.controllers").read_text().split()
    for ctrl in available:
        with contextlib.suppress(OSError):
            (path / "cgroup.subtree_control").write_text(f"+{ctrl}")


def make_cgroups(name: str) -> list[str]:
    """Create NAME/payload and NAME/supervisor in every hierarchy; return what was made.

    ``payload`` becomes the machine's cgroup-namespace root (systemd's /); ``supervisor``
    takes the ``unshare`` parent afterwards, so that the root holds only the machine's
    own processes (on cgroup v2 a cgroup with processes cannot delegate controllers).
    """
    made: list[str] = []
    for h in host_hierarchies():
        top = _cgroup_mkdir(h, name)
        made.append(str(top))
        if h.fstype == "cgroup2":
            _enable_v2_controllers(top)
        for child in ("payload", "supervisor"):
            made.append(str(_cgroup_mkdir(h, f"{name}/{child}")))
        if h.fstype == "cgroup2":
            _enable_v2_controllers(top / "payload")
    return made


def attach(pid: int, name: str, child: str) -> None:
    for h in host_hierarchies():
        (h.path(name, child) / "cgroup.procs").write_text(str(pid))


def systemd_delegates() -> bool:
    """On a unified (v2) host run by systemd, cgroups come from a delegated scope.

    There a cgroup holding processes (our own: a session scope) cannot hand controllers
    to children, and systemd owns the tree; so, like systemd-nspawn, the machine runs in
    a transient scope with Delegate=yes and builds payload/supervisor inside it.
    """
    if not Path("/run/systemd/system").is_dir():
        return False
    return any(h.fstype == "cgroup2" and h.subdir == "" for h in host_hierarchies())


def make_delegated_cgroups() -> Path:
    """Inside a delegated scope: payload + supervisor, ourselves into payload."""
    h = next(h for h in host_hierarchies() if h.fstype == "cgroup2")
    scope = h.path()
    for child in ("payload", "supervisor"):
        (scope / child).mkdir(exist_ok=True)
    (scope / "payload" / "cgroup.procs").write_text(str(os.getpid()))
    _enable_v2_controllers(scope)
    _enable_v2_controllers(scope / "payload")
    return scope


def cgroup_pids(paths: Sequence[str]) -> set[int]:
    pids: set[int] = set()
    for top in paths:
        root = Path(top)
        if not root.is_dir():
            continue
        for procs in root.rglob("cgroup.procs"):
            with contextlib.suppress(OSError):
                pids.update(int(p) for p in procs.read_text().split())
    return pids


def remove_cgroups(paths: Sequence[str]) -> list[str]:
    """Kill what is left in them and rmdir them depth-first; return what remains."""
    tops = [p for p in paths if Path(p).is_dir()]
    for _ in range(100):
        pids = cgroup_pids(tops)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for top in tops:
            root = Path(top)
            if not root.is_dir():
                continue
            dirs = sorted((d for d in root.rglob("*") if d.is_dir()),
                          key=lambda d: len(d.parts), reverse=True)
            for d in [*dirs, root]:
                with contextlib.suppress(OSError):
                    d.rmdir()
        tops = [p for p in tops if Path(p).is_dir()]
        if not tops:
            return []
        time.sleep(0.05)
    return tops


# --------------------------------------------------------------------------- network


def _run(argv: Sequence[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise SandboxError(f"{' '.join(argv)}: {proc.stderr.strip() or proc.returncode}")
    return proc


def _resolvers() -> list[str]:
    servers = []
    with contextlib.suppress(OSError):
        for line in Path("/etc/resolv.conf").read_text().splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "nameserver" and ":" not in parts[1]:
                servers.append(parts[1])
    return servers


def _link_addrs(index: int) -> tuple[str, str]:
    base = index * 4
    a, b = LINK_NET
    host = f"{a}.{b}.{base // 256}.{base % 256 + 1}"
    guest = f"{a}.{b}.{base // 256}.{base % 256 + 2}"
    return host, guest


def _free_link_index() -> int:
    used = set()
    for path in RECORDS.glob("*.json"):
        with contextlib.suppress(OSError, ValueError, TypeError):
            used.add(Record.load(path).link_index)
    for index in range(16384):
        # A link of a machine that just died may outlive its record for a moment: the
        # kernel tears a network namespace down asynchronously.
        if index not in used and not Path(f"/sys/class/net/dsb{index}").exists():
            return index
    raise SandboxError("no free link address; purge old machines (tests/sandbox/run --purge)")


def _iptables(table: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return _run(["iptables", "-w", "-t", table, *args], check=check)


def _default_interface() -> str:
    out = _run(["ip", "-4", "route", "show", "default"], check=False).stdout.split()
    return out[out.index("dev") + 1] if "dev" in out else ""


def setup_egress(rec: Record, machine_pid: int) -> None:
    """A veth into the machine and NAT out of it, for the package registries only.

    The machine may resolve names (the host's resolvers) and open connections to public
    addresses through NAT; it may not reach the host itself, nor any private range.
    """
    host_if = rec.veth
    host_ip, guest_ip = _link_addrs(rec.link_index)
    _run(["ip", "link", "add", host_if, "type", "veth", "peer", "name", "host0",
          "netns", str(machine_pid)])
    _run(["ip", "addr", "add", f"{host_ip}/30", "dev", host_if])
    _run(["ip", "link", "set", host_if, "up"])
    ns = ["nsenter", "-t", str(machine_pid), "-n"]
    _run([*ns, "ip", "link", "set", "lo", "up"])
    _run([*ns, "ip", "addr", "add", f"{guest_ip}/30", "dev", "host0"])
    _run([*ns, "ip", "link", "set", "host0", "up"])
    _run([*ns, "ip", "route", "add", "default", "via", host_ip])

    inp, fwd, nat = (f"DSB-{rec.link_index}-{s}" for s in ("IN", "FWD", "NAT"))
    tag = ["-m", "comment", "--comment", f"dynod-sandbox {rec.name}"]
    rec.chains = [f"filter:{inp}", f"filter:{fwd}", f"nat:{nat}"]
    rec.save()
    for item in rec.chains:
        table, chain = item.split(":")
        _iptables(table, "-N", chain, check=False)
        _iptables(table, "-F", chain)
    # Into the host: only replies to what the host itself opened.
    _iptables("filter", "-I", "INPUT", "-i", host_if, *tag, "-j", inp)
    _iptables("filter", "-A", inp, "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED",
              "-j", "ACCEPT")
    _iptables("filter", "-A", inp, "-j", "DROP")
    # Through the host: DNS to the host's resolvers, then public addresses only.
    _iptables("filter", "-I", "FORWARD", "-i", host_if, *tag, "-j", fwd)
    _iptables("filter", "-I", "FORWARD", "-o", host_if, *tag, "-j", fwd)
    _iptables("filter", "-A", fwd, "-o", host_if, "-m", "conntrack", "--ctstate",
              "ESTABLISHED,RELATED", "-j", "ACCEPT")
    _iptables("filter", "-A", fwd, "-o", host_if, "-j", "DROP")
    for server in _resolvers():
        for proto in ("udp", "tcp"):
            _iptables("filter", "-A", fwd, "-d", server, "-p", proto, "--dport", "53",
                      "-j", "ACCEPT")
    for private in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10",
                    "169.254.0.0/16", "127.0.0.0/8", "192.0.0.0/24", "192.0.2.0/24",
                    "198.18.0.0/15", "224.0.0.0/4", "240.0.0.0/4"):
        _iptables("filter", "-A", fwd, "-d", private, "-j", "DROP")
    _iptables("filter", "-A", fwd, "-j", "ACCEPT")
    _iptables("nat", "-I", "POSTROUTING", "-s", f"{guest_ip}/32", *tag, "-j", nat)
    _iptables("nat", "-A", nat, "-j", "MASQUERADE")
    # Forwarding only on the two interfaces involved, not host-wide; restored at teardown.
    for iface in (host_if, _default_interface()):
        if not iface:
            continue
        knob = Path(f"/proc/sys/net/ipv4/conf/{iface}/forwarding")
        old = knob.read_text().strip()
        if iface != host_if:
            rec.forwarding.setdefault(iface, old)
            rec.save()
        knob.write_text("1")


def _restore_forwarding(rec: Record) -> None:
    """Put back each interface's forwarding once no live machine needs it any more."""
    others = []
    for path in RECORDS.glob("*.json"):
        with contextlib.suppress(OSError, ValueError, TypeError):
            other = Record.load(path)
            if other.name != rec.name and _alive(other.unshare_pid):
                others.append(other)
    for iface, old in rec.forwarding.items():
        if any(iface in o.forwarding for o in others):
            # Hand the original value on to a machine still using it.
            heir = next(o for o in others if iface in o.forwarding)
            heir.forwarding[iface] = old
            heir.save()
            continue
        with contextlib.suppress(OSError):
            Path(f"/proc/sys/net/ipv4/conf/{iface}/forwarding").write_text(old)


def teardown_egress(rec: Record) -> None:
    tag = f"dynod-sandbox {rec.name}"
    for table in ("filter", "nat"):
        rules = _iptables(table, "-S", check=False).stdout.splitlines()
        for rule in rules:
            if tag in rule and rule.startswith("-A "):
                spec = _split_rule(rule)
                _iptables(table, "-D", *spec[1:], check=False)
    for item in rec.chains:
        table, chain = item.split(":", 1)
        _iptables(table, "-F", chain, check=False)
        _iptables(table, "-X", chain, check=False)
    if rec.veth:
        _run(["ip", "link", "del", rec.veth], check=False)
        # The namespace (and the veth with it) is destroyed asynchronously by the kernel;
        # wait, so the name is free again when the record goes.
        deadline = time.monotonic() + 30
        while Path(f"/sys/class/net/{rec.veth}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
            _run(["ip", "link", "del", rec.veth], check=False)
    _restore_forwarding(rec)


def _split_rule(rule: str) -> list[str]:
    return shlex.split(rule)


# --------------------------------------------------------------------------- the machine


def _prctl_pdeathsig() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


@dataclass
class Machine:
    """One sandbox machine. ``boot()``, then ``run()``/``exec()``, then ``shutdown()``."""

    name: str = ""
    state_dir: Path | None = None
    # (host path, path inside[:ro]); binds under /var/lib/dynod land in the machine's
    # own data directory, e.g. a prebuilt stack at /var/lib/dynod/stacks/NAME:ro.
    binds: list[tuple[str, str]] = field(default_factory=list)
    egress: bool = True
    mask: tuple[str, ...] = ()  # extra units to mask (benchmarks: a machine without dynod)
    # Another root file system (e.g. a debootstrapped Debian) as the overlay's lower layer
    # instead of the host's /; dynod is then NOT installed from the working tree (the
    # project is still bound at its path), so a test can install the package there.
    lower: Path | None = None
    record: Record | None = None
    systemd_pid: int = 0
    delegated: bool = False
    # Its address on a test network (``Network.attach``), "" when on none.
    test_address: str = ""
    test_network: str = ""  # that network's namespace
    _proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        if not self.name:
            self.name = NAME_PREFIX + secrets.token_hex(4)
        self.persistent = self.state_dir is not None
        self.state = (self.state_dir or BASE / "machines" / self.name).resolve()

    # ---- lifecycle

    def boot(self, timeout: float = BOOT_TIMEOUT) -> float:
        """Boot and wait until systemd is running and dynod answers; return seconds taken."""
        if os.geteuid() != 0:
            raise SandboxError("the sandbox needs root (namespaces, mounts, cgroups)")
        purge_stale()
        started = time.monotonic()
        for sub in ("upper", "work", "merged", "data"):
            (self.state / sub).mkdir(parents=True, exist_ok=True)
        with host_lock():
            rec = Record(name=self.name, state=str(self.state), persistent=self.persistent,
                         runner_pid=os.getpid())
            if self.egress:
                rec.link_index = _free_link_index()
                rec.veth = f"dsb{rec.link_index}"
            rec.save()
            self.record = rec
        try:
            self.delegated = systemd_delegates()
            if not self.delegated:
                rec.cgroups = make_cgroups(self.name)
                rec.save()
            self._spawn()
            if self.egress:
                with host_lock():
                    setup_egress(rec, self.systemd_pid)
            self._wait_running(started + timeout)
        except BaseException:
            self.shutdown()
            raise
        return time.monotonic() - started

    def _spawn(self) -> None:
        assert self.record is not None
        stage2 = [
            sys.executable, str(Path(__file__).resolve()), "--stage2",
            json.dumps({
                "name": self.name, "state": str(self.state), "project": str(PROJECT),
                "binds": self.binds, "mask": list(self.mask),
                "lower": str(self.lower) if self.lower is not None else "",
            }),
        ]
        argv = [
            # The trampoline joins the payload cgroups (before unshare --cgroup makes them
            # the namespace root) and dies with the runner, even on kill -9.
            *(["systemd-run", "--scope", "--quiet", "--collect", "--property=Delegate=yes",
               f"--unit=dynod-sandbox-{self.name}"] if self.delegated else []),
            sys.executable, "-I", str(Path(__file__).resolve()),
            "--enter-delegated" if self.delegated else "--enter", self.name,
            "setpriv", "--bounding-set", ",".join(f"-{c}" for c in DROPPED_CAPS),
            "unshare", "--pid", "--mount", "--uts", "--ipc", "--cgroup", "--net", "--fork",
            "--kill-child=SIGKILL", "--propagation", "private", *stage2,
        ]
        console = (self.state / "console.log").open("ab")
        self._proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=console, stderr=console,
            start_new_session=True, close_fds=True,
        )
        console.close()
        self.record.unshare_pid = self._proc.pid
        self.record.save()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            kids = _children(self._proc.pid)
            if kids:
                self.systemd_pid = kids[0]
                break
            if self._proc.poll() is not None:
                raise SandboxError(f"machine {self.name} died at once; "
                                   f"{self.state}/console.log says:\n{self.console_tail()}")
            time.sleep(0.002)
        else:
            raise SandboxError(f"machine {self.name}: no init process after 10 s")
        # The unshare parent leaves the namespace root (see make_cgroups).
        if self.delegated:
            own = Path(f"/proc/{self.systemd_pid}/cgroup").read_text().split("::", 1)[1]
            scope = Path("/sys/fs/cgroup") / own.strip().lstrip("/")
            scope = scope.parent if scope.name == "payload" else scope
            self.record.cgroups = [str(scope)]
            self.record.save()
            with contextlib.suppress(OSError):
                (scope / "supervisor" / "cgroup.procs").write_text(str(self._proc.pid))
        else:
            with contextlib.suppress(OSError):
                attach(self._proc.pid, self.name, "supervisor")

    def console_tail(self, lines: int = 30) -> str:
        try:
            text = (self.state / "console.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _wait_running(self, deadline: float) -> None:
        last = ""
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise SandboxError(f"machine {self.name} stopped while booting:\n"
                                   + self.console_tail())
            proc = self.exec(["systemctl", "is-system-running"], check=False, timeout=10)
            last = proc.stdout.strip()
            if last in ("running", "degraded"):
                if last == "degraded":
                    failed = self.exec(["systemctl", "--failed", "--no-legend"], check=False)
                    raise SandboxError(f"machine {self.name} booted degraded:\n{failed.stdout}")
                return
            time.sleep(0.02)
        raise SandboxError(f"machine {self.name} not running after boot timeout (state {last!r})")

    def shutdown(self, timeout: float = POWEROFF_TIMEOUT) -> None:
        """Power off (kill after ``timeout``), then remove everything on the host."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            self.exec(["systemctl", "poweroff", "--no-block"], check=False, timeout=10)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        if self.record is not None:
            with host_lock():
                purge(self.record)
        self._proc = None

    def reboot(self, timeout: float = BOOT_TIMEOUT) -> float:
        """Power off and boot again on the same state: a host reboot."""
        if not self.persistent:
            raise SandboxError("reboot needs a persistent machine (state_dir)")
        self.shutdown()
        return self.boot(timeout)

    def __enter__(self) -> Machine:
        self.boot()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    # ---- running things inside

    def _nsenter(self) -> list[str]:
        if not self.systemd_pid:
            raise SandboxError(f"machine {self.name} is not booted")
        return ["nsenter", "-t", str(self.systemd_pid), "-a", "-r", "-w"]

    def exec(self, argv: Sequence[str], *, check: bool = True, timeout: float = 120,
             input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run argv in the machine's namespaces directly (not as a unit, not accounted)."""
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
               "LANG": "C.UTF-8", "SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0"}
        proc = subprocess.run([*self._nsenter(), *argv], capture_output=True, text=True,
                              env=env, timeout=timeout, input=input, check=False)
        if check and proc.returncode != 0:
            raise SandboxError(f"in {self.name}: {' '.join(argv)} exited {proc.returncode}:\n"
                               f"{proc.stdout}{proc.stderr}")
        return proc

    def unit_argv(self, argv: Sequence[str], *, properties: Sequence[str] = (),
                  env: dict[str, str] | None = None, cwd: str | None = None,
                  tty: bool = False) -> list[str]:
        """The host-side argv that runs ``argv`` in the machine as a transient unit."""
        cmd = [*self._nsenter(), "systemd-run", "--quiet", "--wait", "--collect",
               "--service-type=exec", "--pty" if tty else "--pipe",
               f"--working-directory={cwd or PROJECT}"]
        for prop in properties:
            cmd.append(f"--property={prop}")
        merged = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                  "LANG": "C.UTF-8", "HOME": "/root", "DYNOD_SANDBOX": self.name}
        merged.update(env or {})
        for key, value in merged.items():
            cmd.append(f"--setenv={key}={value}")
        # systemd-run expands $VAR in the command line; $$ is a literal $.
        return [*cmd, "--", *(a.replace("$", "$$") for a in argv)]

    def run(self, argv: Sequence[str], *, check: bool = False, timeout: float = 600,
            properties: Sequence[str] = (), env: dict[str, str] | None = None,
            input: str | None = None, cwd: str | None = None,
            ) -> subprocess.CompletedProcess[str]:
        """Run argv in the machine as a transient unit (accounted and limited like real
        work), with its output captured and its exit status returned."""
        proc = subprocess.run(self.unit_argv(argv, properties=properties, env=env, cwd=cwd),
                              capture_output=True, text=True, timeout=timeout, input=input,
                              check=False,
                              env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
        if check and proc.returncode != 0:
            raise SandboxError(f"in {self.name}: {' '.join(argv)} exited {proc.returncode}:\n"
                               f"{proc.stdout}{proc.stderr}")
        return proc

    def residue(self) -> list[str]:
        """What this machine left on the host (empty after a clean shutdown)."""
        return residue_of(self.name, self.record)


# --------------------------------------------------------------------------- cleanup


def residue_of(name: str, rec: Record | None) -> list[str]:
    left: list[str] = []
    for h in host_hierarchies():
        if h.path(name).exists():
            left.append(f"cgroup {h.path(name)}")
    if rec is not None:
        if _alive(rec.unshare_pid):
            left.append(f"process {rec.unshare_pid}")
        if rec.veth and Path(f"/sys/class/net/{rec.veth}").exists():
            left.append(f"link {rec.veth}")
        for table in ("filter", "nat"):
            rules = _iptables(table, "-S", check=False).stdout
            if f"dynod-sandbox {name}" in rules:
                left.append(f"iptables {table} rules for {name}")
        if (RECORDS / f"{name}.json").exists():
            left.append(f"record {RECORDS / (name + '.json')}")
        if not rec.persistent and Path(rec.state).exists():
            left.append(f"state {rec.state}")
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        if f"/{name}/" in line.split(" - ")[0]:
            left.append(f"mount {line.split()[4]}")
    return left


def purge(rec: Record) -> None:
    """Remove everything ``rec`` owns. Call with host_lock held."""
    if _alive(rec.unshare_pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(rec.unshare_pid, signal.SIGKILL)
        for _ in range(200):
            if not _alive(rec.unshare_pid):
                break
            time.sleep(0.01)
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(rec.unshare_pid, os.WNOHANG)
    left = remove_cgroups(rec.cgroups)
    if left:
        raise SandboxError(f"machine {rec.name}: cgroups still busy: {left}")
    teardown_egress(rec)
    if not rec.persistent:
        state = Path(rec.state)
        if state.exists() and state.is_relative_to(BASE):
            shutil.rmtree(state, ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        (RECORDS / f"{rec.name}.json").unlink()


def purge_stale() -> list[str]:
    """Clean up after machines whose runner died (kill -9, a crashed CI job)."""
    purged: list[str] = []
    if not RECORDS.is_dir():
        return purged
    with host_lock():
        for path in sorted(RECORDS.glob("*.json")):
            try:
                rec = Record.load(path)
            except (OSError, ValueError, TypeError):
                path.unlink(missing_ok=True)
                continue
            if _alive(rec.runner_pid) and rec.runner_pid != os.getpid():
                continue
            if rec.runner_pid == os.getpid() and _alive(rec.unshare_pid):
                continue
            purge(rec)
            purged.append(rec.name)
    return purged


# --------------------------------------------------------------------------- test network


@dataclass
class NetworkRecord:
    """A test network, written down before its namespace is made."""

    name: str
    runner_pid: int

    def path(self) -> Path:
        return NETWORK_RECORDS / f"{self.name}.json"

    def save(self) -> None:
        NETWORK_RECORDS.mkdir(parents=True, exist_ok=True)
        tmp = NETWORK_RECORDS / f".{self.name}.json.tmp"
        tmp.write_text(json.dumps(asdict(self)))
        tmp.replace(self.path())

    @classmethod
    def load(cls, path: Path) -> NetworkRecord:
        return cls(**json.loads(path.read_text()))


def _netns_exists(name: str) -> bool:
    return Path("/run/netns", name).exists()


def _purge_network(rec: NetworkRecord) -> None:
    """Delete the network's namespace (its bridge and every machine's far end go with
    it), then its record."""
    if _netns_exists(rec.name):
        _run(["ip", "netns", "del", rec.name], check=False)
    rec.path().unlink(missing_ok=True)


def purge_stale_networks() -> list[str]:
    """Remove the networks whose runner died (kill -9, a crashed CI job)."""
    purged: list[str] = []
    if not NETWORK_RECORDS.is_dir():
        return purged
    with host_lock():
        for path in sorted(NETWORK_RECORDS.glob("*.json")):
            try:
                rec = NetworkRecord.load(path)
            except (OSError, ValueError, TypeError):
                path.unlink(missing_ok=True)
                continue
            if _alive(rec.runner_pid):
                continue
            _purge_network(rec)
            purged.append(rec.name)
    return purged


@dataclass
class Network:
    """A network of its own for several machines: a bridge in a network namespace made
    for it, with no other interface, route or forwarding, so nothing on it can reach the
    host or anything beyond, and nothing outside can reach it.

    ``attach(machine)`` gives the machine a second interface (``cluster0``) on the
    bridge with the next address of 10.216.0.0/24 and returns that address. Each
    network has a namespace of its own, so addresses repeat across networks freely.
    """

    name: str = ""
    record: NetworkRecord | None = None
    addresses: dict[str, str] = field(default_factory=dict)  # machine name -> address

    def __post_init__(self) -> None:
        if not self.name:
            self.name = NETNS_PREFIX + secrets.token_hex(4)

    def create(self) -> None:
        if os.geteuid() != 0:
            raise SandboxError("the test network needs root (network namespaces)")
        purge_stale_networks()
        with host_lock():
            self.record = NetworkRecord(name=self.name, runner_pid=os.getpid())
            self.record.save()
        try:
            _run(["ip", "netns", "add", self.name])
            ns = ["ip", "-n", self.name]
            _run([*ns, "link", "set", "lo", "up"])
            _run([*ns, "link", "add", "br0", "type", "bridge"])
            _run([*ns, "link", "set", "br0", "up"])
        except BaseException:
            self.destroy()
            raise

    def attach(self, machine: Machine) -> str:
        """Plug a booted machine into the network; return its address on it."""
        if not machine.systemd_pid:
            raise SandboxError(f"machine {machine.name} is not booted")
        address = f"{TEST_NET_PREFIX}.{len(self.addresses) + 1}"
        # The far end is named after its position; it is made in the network's namespace
        # and its peer moved straight into the machine's, so it is never on the host.
        far = f"m{len(self.addresses) + 1}"
        ns = ["ip", "-n", self.name]
        _run([*ns, "link", "add", far, "type", "veth", "peer", "name", TEST_NET_IFACE,
              "netns", str(machine.systemd_pid)])
        _run([*ns, "link", "set", far, "master", "br0", "up"])
        inside = ["nsenter", "-t", str(machine.systemd_pid), "-n"]
        _run([*inside, "ip", "addr", "add", f"{address}/24", "dev", TEST_NET_IFACE])
        _run([*inside, "ip", "link", "set", TEST_NET_IFACE, "up"])
        self.addresses[machine.name] = address
        machine.test_address = address
        machine.test_network = self.name
        return address

    def destroy(self) -> None:
        if self.record is not None:
            with host_lock():
                _purge_network(self.record)

    def residue(self) -> list[str]:
        left = []
        if _netns_exists(self.name):
            left.append(f"netns {self.name}")
        if (NETWORK_RECORDS / f"{self.name}.json").exists():
            left.append(f"record {NETWORK_RECORDS / (self.name + '.json')}")
        return left

    def __enter__(self) -> Network:
        self.create()
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()


# --------------------------------------------------------------------------- stage 2


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _mount(source: str, target: str | Path, fstype: str | None = None, flags: int = 0,
           data: str | None = None) -> None:
    libc = _libc()
    rc = libc.mount(source.encode(), str(target).encode(),
                    fstype.encode() if fstype else None, ctypes.c_ulong(flags),
                    data.encode() if data else None)
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {source} on {target} ({fstype} {data}): {os.strerror(err)}")


PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}  # syscall numbers
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18


def _bind(src: str | Path, dst: str | Path, readonly: bool = False) -> None:
    _mount(str(src), dst, None, MS_BIND | MS_REC)
    if readonly:
        _mount("none", dst, None, MS_BIND | MS_REMOUNT | MS_RDONLY)


def _mknod(root: Path, name: str, major: int, minor: int) -> None:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.mknod(path, 0o666 | 0o020000, os.makedev(major, minor))
    path.chmod(0o666)  # device nodes everyone may use, as on any host


def _symlink(target: str, link: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        link.unlink()
    link.symlink_to(target)


def _install_dynod(root: Path, project: Path) -> None:
    """Install dynod from the working tree into the machine's (upper) root."""
    venv_bin = project / ".venv" / "bin"
    for exe in ("dynod", "dynoctl"):
        _symlink(str(venv_bin / exe), root / "usr/bin" / exe)
    units = project / "systemd"
    etc = root / "etc/systemd/system"
    etc.mkdir(parents=True, exist_ok=True)
    for unit in units.iterdir():
        if unit.suffix in (".service", ".slice", ".socket", ".target"):
            shutil.copyfile(unit, etc / unit.name)
        elif unit.suffix == ".d":  # drop-ins for other packages' units
            shutil.copytree(unit, etc / unit.name, dirs_exist_ok=True)
    wants = etc / "multi-user.target.wants"
    wants.mkdir(exist_ok=True)
    _symlink("/etc/systemd/system/dynod.service", wants / "dynod.service")
    sysusers = units / "dynod.sysusers"
    if sysusers.exists():
        (root / "usr/lib/sysusers.d").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(sysusers, root / "usr/lib/sysusers.d/dynod.conf")
        subprocess.run(["systemd-sysusers", f"--root={root}", str(sysusers)], check=True,
                       capture_output=True)
    tmpfiles = units / "dynod.tmpfiles"
    if tmpfiles.exists():
        (root / "usr/lib/tmpfiles.d").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tmpfiles, root / "usr/lib/tmpfiles.d/dynod.conf")


def stage2(spec: dict[str, object]) -> None:
    """PID 1 of the new pid namespace: build the root, pivot into it, exec systemd."""
    name = str(spec["name"])
    state = Path(str(spec["state"]))
    project = Path(str(spec["project"]))
    binds: list[tuple[str, str]] = [(str(b[0]), str(b[1])) for b in spec["binds"]]  # type: ignore[attr-defined]
    lower = str(spec.get("lower") or "/")
    root = state / "merged"
    _mount("none", "/", None, MS_REC | MS_PRIVATE)
    _mount("overlay", root, "overlay", 0,
           f"lowerdir={lower},upperdir={state}/upper,workdir={state}/work")

    (root / "proc").mkdir(exist_ok=True)
    _mount("proc", root / "proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    for sub in ("sys", "sysrq-trigger", "irq", "bus", "fs"):
        p = root / "proc" / sub
        if p.exists():
            _bind(p, p, readonly=True)
    # Network sysctls belong to the machine's own network namespace: writable.
    _bind(root / "proc/sys/net", root / "proc/sys/net")
    # A bind inherits the read-only flag of the /proc/sys mount it came from.
    _mount("none", root / "proc/sys/net", None, MS_BIND | MS_REMOUNT)
    _mount("sysfs", root / "sys", "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
    cg = root / "sys/fs/cgroup"
    hierarchies = host_hierarchies()
    if any(h.fstype == "cgroup2" and h.subdir == "" for h in hierarchies):
        _mount("cgroup2", cg, "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    else:
        _mount("tmpfs", cg, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=755")
        for h in hierarchies:
            (cg / h.subdir).mkdir(exist_ok=True)
            _mount("cgroup", cg / h.subdir, h.fstype, MS_NOSUID | MS_NODEV | MS_NOEXEC,
                   h.options or None)
        for h in hierarchies:  # cpu,cpuacct style co-mounts get their usual aliases
            if "," in h.subdir:
                for alias in h.subdir.split(","):
                    _symlink(h.subdir, cg / alias)

    dev = root / "dev"
    _mount("tmpfs", dev, "tmpfs", MS_NOSUID, "mode=755,size=4m")
    for node, major, minor in (("null", 1, 3), ("zero", 1, 5), ("full", 1, 7),
                               ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0),
                               ("net/tun", 10, 200), ("fuse", 10, 229)):
        _mknod(dev, node, major, minor)
    (dev / "pts").mkdir()
    _mount("devpts", dev / "pts", "devpts", MS_NOSUID | MS_NOEXEC,
           "newinstance,ptmxmode=0666,mode=620,gid=5")
    _symlink("pts/ptmx", dev / "ptmx")
    (dev / "shm").mkdir()
    _mount("tmpfs", dev / "shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
    (dev / "console").touch()
    _bind("/dev/null", dev / "console")
    for link, dest in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                       ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"),
                       ("core", "/proc/kcore")):
        _symlink(dest, dev / link)

    _mount("tmpfs", root / "run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=755")
    _mount("tmpfs", root / "tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
    # A fresh boot id, so journald sees each boot of the machine as one.
    boot_id = root / "run/.sandbox-boot-id"
    boot_id.write_text(str(uuid.uuid4()) + "\n")
    _bind(boot_id, root / "proc/sys/kernel/random/boot_id", readonly=True)
    # Never let tmpfiles "D /tmp" anything (Debian's tmp.conf); /tmp is our tmpfs anyway.
    _symlink("/dev/null", root / "run/tmpfiles.d/tmp.conf")
    for unit in (*MASKED_UNITS, *(str(u) for u in spec.get("mask", []))):  # type: ignore[attr-defined]
        _symlink("/dev/null", root / "run/systemd/system" / unit)

    # The project at its own path (tests write into it), dynod's state on a real file
    # system (overlay upper dirs of dynos cannot live on our overlay root).
    (root / str(project).lstrip("/")).mkdir(parents=True, exist_ok=True)
    _bind(project, root / str(project).lstrip("/"))
    data = root / "var/lib/dynod"
    data.mkdir(parents=True, exist_ok=True)
    _bind(state / "data", data)
    for src, dst in binds:
        readonly = dst.endswith(":ro")
        target = root / dst.removesuffix(":ro").lstrip("/")
        if Path(src).is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.touch(exist_ok=True)
        _bind(src, target, readonly=readonly)

    # First boot of this state: a machine-id and a persistent journal of its own.
    marker = state / "upper/etc/.dynod-sandbox"
    if not marker.exists():
        (root / "etc/machine-id").write_text(uuid.uuid4().hex + "\n")
        (root / "var/log/journal").mkdir(parents=True, exist_ok=True)
        marker.write_text(name + "\n")
    (root / "etc/hostname").write_text(name + "\n")
    _libc().sethostname(name.encode(), len(name))
    if lower == "/":
        _install_dynod(root, project)
        # Extra masks go to /etc: a unit file there (dynod.service, just installed)
        # outranks a mask in /run.
        for unit in spec.get("mask", []):  # type: ignore[attr-defined]
            _symlink("/dev/null", root / "etc/systemd/system" / str(unit))

    os.chdir(root)
    libc = _libc()
    if libc.syscall(PIVOT_ROOT[os.uname().machine], b".", b".") != 0:
        raise OSError(ctypes.get_errno(), "pivot_root failed")
    libc.umount2(b".", 2)  # MNT_DETACH the old root stacked under the new one
    os.chdir("/")
    env = {"container": "other", "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin"}
    os.execve("/lib/systemd/systemd", ["/lib/systemd/systemd", "--system"], env)  # noqa: S606




def all_residue() -> list[str]:
    """Everything any machine left on the host: cgroups, links, rules, mounts, records."""
    left: list[str] = []
    for h in host_hierarchies():
        base = h.path()
        if base.is_dir():
            left += [f"cgroup {d}" for d in base.iterdir() if d.name.startswith(NAME_PREFIX)]
    for link in Path("/sys/class/net").iterdir():
        if link.name.startswith("dsb"):
            left.append(f"link {link.name}")
    for table in ("filter", "nat"):
        for rule in _iptables(table, "-S", check=False).stdout.splitlines():
            if "dynod-sandbox" in rule or "DSB-" in rule:
                left.append(f"iptables {table}: {rule}")
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        if str(BASE) in line.split(" - ")[0]:
            left.append(f"mount {line.split()[4]}")
    if RECORDS.is_dir():
        left += [f"record {p}" for p in RECORDS.glob("*.json")]
    if NETWORK_RECORDS.is_dir():
        left += [f"record {p}" for p in NETWORK_RECORDS.glob("*.json")]
    with contextlib.suppress(OSError):
        left += [f"netns {n.name}" for n in Path("/run/netns").iterdir()
                 if n.name.startswith(NETNS_PREFIX)]
    return left


def enter(name: str, argv: list[str]) -> None:
    """Trampoline run by the runner's child: die with the runner, join the payload
    cgroups, exec ``argv`` (setpriv ... unshare ...)."""
    _prctl_pdeathsig()
    if os.getppid() == 1:  # the runner is gone already
        sys.exit(1)
    attach(os.getpid(), name, "payload")
    os.execvp(argv[0], argv)  # noqa: S606


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--stage2":
        try:
            stage2(json.loads(sys.argv[2]))
        except OSError as exc:
            print(f"sandbox stage2: {exc}", file=sys.stderr)
            sys.exit(errno.EIO)
    elif len(sys.argv) > 3 and sys.argv[1] == "--enter":
        enter(sys.argv[2], sys.argv[3:])
    elif len(sys.argv) > 3 and sys.argv[1] == "--enter-delegated":
        _prctl_pdeathsig()
        make_delegated_cgroups()
        os.execvp(sys.argv[3], sys.argv[3:])  # noqa: S606
