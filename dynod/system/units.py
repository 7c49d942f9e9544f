"""Dynos as transient systemd units: a ``DynoSpec`` in, unit properties out.

The only module that imports pystemd. Names and properties are computed by pure
functions (``unit_name``, ``slice_name``, ``unit_properties`` ...); ``start_dyno``,
``stop_dyno`` and ``list_dynos`` talk to systemd over D-Bus with
``StartTransientUnit`` (never unit files plus daemon-reload).

A dyno unit is ``dynod-<app>-<type>.<n>-<gen>.service`` in ``dynod-<app>.slice`` (a child of
``dynod.slice`` by systemd's dash rule), app and type escaped the way ``systemd-escape``
does, so an app called ``my-shop`` cannot land in the slice of an app called ``my``.
``gen`` is the app's rollout generation: old and new dynos of a rollout run side by side
under distinct names, while the user-facing dyno name stays ``web.1`` (``DYNOD_DYNO``).
Dynos are not children of ``dynod.service``: restarting dynod restarts no dyno.

Process model. systemd >= 257 has ``PrivatePIDs=``: the unit gets its own PID
namespace and dyno-init only reaps and forwards (``--no-pidns``); that allows the
tightest sandbox (no capability at all, ``PrivateUsers=``). On older systemd (Debian
12 has 252) dyno-init makes the PID namespace itself, which costs an ambient
CAP_SYS_ADMIN (dropped before the command runs), ``@mount`` and
``RestrictNamespaces=pid mnt``: ``systemd-analyze security`` exposure 1.5 against 0.5.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

from dynod.errors import InvalidArgument, NotFound, Unavailable
from dynod.model.sizes import Size
from dynod.system import processes
from dynod.system.mounts import INIT_PATH, Bind

ROOT_SLICE = "dynod.slice"
UNIT_PREFIX = "dynod-"
APP_DIR = "/app"
# Heroku (hsup, `heroku run env`): PATH before buildpack .profile.d additions.
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
# Heroku: SIGTERM, then SIGKILL after 30 s (dyno-shutdown-behavior).
STOP_TIMEOUT_USEC = 30_000_000
# The first systemd with PrivatePIDs=.
PRIVATE_PIDS_SINCE = 257

# <linux/capability.h>, <sched.h>, <sys/socket.h>, <errno.h>
CAP_SYS_ADMIN = 21
CLONE_NEWNS = 0x00020000
CLONE_NEWPID = 0x20000000
AF_INET = 2
AF_INET6 = 10
EPERM = 1
# Binds are recursive, as BindPaths= in a unit file is by default (rbind).
MS_REC = 16384

# Heroku: config vars, then .profile.d/*.sh, then .profile, then `bash -c COMMAND`
# (dyno-startup-behavior). $1 is the command; the second bash execs a simple one.
LAUNCHER = (
    'for f in /app/.profile.d/*.sh; do if [ -r "$f" ]; then . "$f"; fi; done; unset f; '
    'if [ -r /app/.profile ]; then . /app/.profile; fi; exec bash -c "$1"'
)


class PidMode(StrEnum):
    """How a dyno gets its own PID namespace."""

    WRAPPER = "wrapper"  # dyno-init unshares it (systemd < 257)
    PRIVATE_PIDS = "private-pids"  # systemd's PrivatePIDs= (systemd >= 257)


@dataclass(frozen=True)
class Limits:
    """cgroup limits of one dyno. Bytes for memory; None leaves systemd's default."""

    memory_high: int | None = None  # quota: throttled and reclaimed above (R14)
    memory_max: int | None = None  # killed above (R15)
    cpu_weight: int | None = None
    tasks_max: int | None = None


def limits_for_size(size: Size) -> Limits:
    """Heroku's memory model: the size's RAM is the quota (R14, ``MemoryHigh=``), the
    kill limit is twice that (R15, ``MemoryMax=``; dyno-memory-behavior: 2x for Eco to
    Performance-L). On cgroup v1 only ``MemoryMax=`` has an effect."""
    quota = size.memory_mb * 1024 * 1024
    return Limits(
        memory_high=quota,
        memory_max=2 * quota,
        cpu_weight=size.cpu_weight,
        tasks_max=size.tasks_max,
    )


@dataclass(frozen=True)
class DynoSpec:
    """Everything systemd needs to run one dyno. Paths are host paths.

    ``env`` holds the release's config vars; the platform adds ``PORT`` (when set),
    ``DYNO``, ``HOME`` and ``PATH`` (a config var ``PATH`` wins over the default).
    ``root`` is the mounted overlay (``RootfsPlan.root``), ``binds`` its ``Bind``
    entries (dyno-init among them). ``user`` None means ``DynamicUser=yes``.
    """

    app: str
    process_type: str
    number: int
    release: int
    command: str
    root: Path
    env: tuple[tuple[str, str], ...] = ()
    binds: tuple[Bind, ...] = ()
    netns_path: Path | None = None
    ip_allow: tuple[IPv4Network, ...] = ()
    limits: Limits = field(default_factory=Limits)
    user: str | None = None
    group: str | None = None
    port: int | None = None
    generation: int = 1
    # One-off dynos: stdin, stdout, stderr of the command (a pty's slave, or pipes),
    # passed to systemd as file descriptors; None leaves systemd's (journal).
    stdio: tuple[int, int, int] | None = None

    @property
    def dyno(self) -> str:
        """Heroku's dyno name, ``web.1``."""
        return f"{self.process_type}.{self.number}"


def make_env(config: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """Config vars as DynoSpec.env, sorted so equal configs give equal specs."""
    return tuple(sorted(config.items()))


# --- names ------------------------------------------------------------------------

_VALID = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:_.")


def escape(text: str) -> str:
    """systemd's string escaping (``systemd-escape TEXT``, not ``--path``): ``/``
    becomes ``-``, a leading ``.`` and every byte outside ``[A-Za-z0-9:_.]`` becomes
    ``\\xNN``."""
    out: list[str] = []
    for i, ch in enumerate(text):
        if ch == "/":
            out.append("-")
        elif ch in _VALID and not (i == 0 and ch == "."):
            out.append(ch)
        else:
            out.extend(f"\\x{b:02x}" for b in ch.encode())
    return "".join(out)


_ESCAPED = re.compile(rb"\\x([0-9a-fA-F]{2})")


def unescape(text: str) -> str:
    """The inverse of ``escape`` (``systemd-escape --unescape``)."""
    raw = text.replace("-", "/").encode()
    return _ESCAPED.sub(lambda m: bytes([int(m.group(1), 16)]), raw).decode()


def _check_name(what: str, value: str) -> None:
    if not value:
        raise InvalidArgument(f"{what} must not be empty")


def slice_name(app: str) -> str:
    _check_name("app name", app)
    return f"{UNIT_PREFIX}{escape(app)}.slice"


def unit_name(app: str, process_type: str, number: int, generation: int = 1) -> str:
    """``dynod-<app>-<type>.<n>-<gen>.service``, app and type escaped."""
    _check_name("app name", app)
    _check_name("process type", process_type)
    if number < 1:
        raise InvalidArgument(f"dyno number {number} must be 1 or more")
    if generation < 1:
        raise InvalidArgument(f"generation {generation} must be 1 or more")
    return f"{UNIT_PREFIX}{escape(app)}-{escape(process_type)}.{number}-{generation}.service"


@dataclass(frozen=True)
class DynoName:
    app: str
    process_type: str
    number: int
    generation: int = 1

    @property
    def dyno(self) -> str:
        return f"{self.process_type}.{self.number}"


_UNIT = re.compile(r"^dynod-([^-]+)-([^-]+)\.([1-9][0-9]*)-([1-9][0-9]*)\.service$")


def parse_unit_name(name: str) -> DynoName | None:
    """App, type, number and generation of a dyno unit; None for any other unit."""
    m = _UNIT.match(name)
    if m is None:
        return None
    return DynoName(unescape(m.group(1)), unescape(m.group(2)), int(m.group(3)),
                    int(m.group(4)))


# --- properties -------------------------------------------------------------------

Property = tuple[str, Any]


def pid_mode_for(systemd_version: int) -> PidMode:
    return PidMode.PRIVATE_PIDS if systemd_version >= PRIVATE_PIDS_SINCE else PidMode.WRAPPER


def literal(arg: str) -> str:
    """systemd expands ``$VAR`` in ExecStart= arguments at exec time; ``$$`` is a
    literal ``$``. Commands are expanded by bash in the dyno, never by systemd."""
    return arg.replace("$", "$$")


def exec_argv(spec: DynoSpec, mode: PidMode) -> list[str]:
    """dyno-init, then bash running the launcher with the command as ``$1``."""
    init = [str(INIT_PATH)] + (["--no-pidns"] if mode is PidMode.PRIVATE_PIDS else [])
    return [*init, "--", "/bin/bash", "-c", LAUNCHER, "dyno", spec.command]


def environment(spec: DynoSpec) -> list[str]:
    """``KEY=value`` strings: config vars, then the platform's (which win)."""
    env: dict[str, str] = {"PATH": DEFAULT_PATH}
    env.update(spec.env)
    env.update({"DYNO": spec.dyno, "HOME": APP_DIR})
    if spec.port is not None:
        env["PORT"] = str(spec.port)
    for key in env:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise InvalidArgument(
                f"app {spec.app!r}: config var name {key!r} is not a valid environment "
                "variable name; rename it"
            )
    return [f"{k}={v}" for k, v in env.items()]


def _mask(bits: Iterable[int]) -> int:
    mask = 0
    for bit in bits:
        mask |= bit
    return mask


def unit_properties(spec: DynoSpec, mode: PidMode) -> list[Property]:
    """The transient unit's properties, in order; a name may repeat (SystemCallFilter
    allow-list then deny-list), which is why this is a list and not a dict.

    Values are the Python shapes of the D-Bus signatures pystemd sends.
    Raises InvalidArgument for a bad config var name.
    """
    pidns = mode is PidMode.WRAPPER
    props: list[Property] = [
        ("Description", f"dynod {spec.app} {spec.dyno} (v{spec.release})"),
        ("Slice", slice_name(spec.app)),
        # Type=exec: active once the command is exec'd; "up" is judged by dynod.
        ("Type", "exec"),
        ("ExecStart", [(str(INIT_PATH), [literal(a) for a in exec_argv(spec, mode)], False)]),
        ("Environment", environment(spec)),
        (
            "LogExtraFields",
            [
                f"DYNOD_APP={spec.app}",
                f"DYNOD_DYNO={spec.dyno}",
                f"DYNOD_RELEASE={spec.release}",
                "DYNOD_SOURCE=app",
            ],
        ),
        ("SyslogIdentifier", spec.dyno),
        ("RootDirectory", str(spec.root)),
        ("MountAPIVFS", True),
        ("WorkingDirectory", APP_DIR),
    ]
    if spec.stdio is not None:
        props += [("StandardInputFileDescriptor", spec.stdio[0]),
                  ("StandardOutputFileDescriptor", spec.stdio[1]),
                  ("StandardErrorFileDescriptor", spec.stdio[2])]
    # Both go to one list in systemd, and an empty array *resets* that list: send
    # only non-empty ones, or an empty BindPaths= drops the read-only binds.
    for prop, read_only in (("BindReadOnlyPaths", True), ("BindPaths", False)):
        binds = [
            (str(b.source), str(b.target), False, MS_REC)
            for b in spec.binds
            if b.read_only is read_only
        ]
        if binds:
            props.append((prop, binds))
    if spec.netns_path is not None:
        # The path wins over PrivateNetwork=; PrivateNetwork= alone would mean "no
        # network", so a missing path can never leave the dyno on the host's network.
        props += [("NetworkNamespacePath", str(spec.netns_path)), ("PrivateNetwork", True)]
    else:
        props.append(("PrivateNetwork", True))
    props.append(("User", spec.user) if spec.user else ("DynamicUser", True))
    if spec.group:
        props.append(("Group", spec.group))
    lim = spec.limits
    props += [("MemoryAccounting", True), ("TasksAccounting", True), ("CPUAccounting", True)]
    if lim.memory_high is not None:
        props.append(("MemoryHigh", lim.memory_high))
    if lim.memory_max is not None:
        props.append(("MemoryMax", lim.memory_max))
    if lim.cpu_weight is not None:
        props.append(("CPUWeight", lim.cpu_weight))
    if lim.tasks_max is not None:
        props.append(("TasksMax", lim.tasks_max))
    props += [
        # Lifecycle: dynod restarts crashed dynos itself (Heroku's back-off). The unit
        # stays loaded after its command exits (active/exited, or failed), so dynod can
        # read the exit status and log it; dynod then stops it (and resets it).
        ("Restart", "no"),
        ("RemainAfterExit", True),
        ("KillMode", "control-group"),
        ("TimeoutStopUSec", STOP_TIMEOUT_USEC),
        ("SendSIGKILL", True),
        # Heroku: "Process exited with status 143" after SIGTERM is a clean stop.
        ("SuccessExitStatus", ([143], [15])),
        # Sandboxing (harness.md 2.3). No MemoryDenyWriteExecute=: it breaks every JIT
        # (V8, the JVM, PyPy, YJIT), i.e. most Heroku apps.
        ("NoNewPrivileges", True),
        ("PrivateTmp", True),
        ("ProtectSystem", "strict"),
        # Relative to the host's root, not RootDirectory= (systemd 252, verified).
        ("ReadWritePaths", [f"-{spec.root}{APP_DIR}"]),
        ("ProtectHome", "yes"),
        ("PrivateDevices", True),
        ("DevicePolicy", "closed"),
        ("PrivateIPC", True),
        ("ProtectKernelTunables", True),
        ("ProtectKernelModules", True),
        ("ProtectKernelLogs", True),
        ("ProtectControlGroups", True),
        ("ProtectClock", True),
        ("ProtectHostname", True),
        ("ProtectProc", "invisible"),
        ("ProcSubset", "pid"),
        ("RestrictAddressFamilies", (True, ["AF_INET", "AF_INET6", "AF_UNIX"])),
        ("LockPersonality", True),
        ("RestrictRealtime", True),
        ("RestrictSUIDSGID", True),
        ("RemoveIPC", True),
        ("SystemCallArchitectures", ["native"]),
        ("UMask", 0o077),
        ("KeyringMode", "private"),
        ("SystemCallErrorNumber", EPERM),
        ("SystemCallFilter", (True, ["@system-service", *(["@mount"] if pidns else [])])),
        ("SystemCallFilter", (False, ["@resources", *([] if pidns else ["@privileged"])])),
    ]
    if spec.ip_allow:
        props += [
            # "any" is both families; dynos have no IPv6 address, so v6 stays denied.
            ("IPAddressDeny", [(AF_INET, bytes(4), 0), (AF_INET6, bytes(16), 0)]),
            (
                "IPAddressAllow",
                [(AF_INET, n.network_address.packed, n.prefixlen) for n in spec.ip_allow],
            ),
        ]
    if pidns:
        cap = 1 << CAP_SYS_ADMIN
        props += [
            ("CapabilityBoundingSet", cap),
            ("AmbientCapabilities", cap),
            ("RestrictNamespaces", _mask((CLONE_NEWPID, CLONE_NEWNS))),
        ]
    else:
        props += [
            ("PrivatePIDs", "yes"),  # a string on D-Bus ("yes"), checked with busctl on 257
            ("CapabilityBoundingSet", 0),
            ("AmbientCapabilities", 0),
            ("RestrictNamespaces", 0),
            ("PrivateUsers", True),
        ]
    return props


# --- acting -----------------------------------------------------------------------

# D-Bus signatures pystemd 0.15 lacks for properties systemd 252 accepts.
_SIGNATURES: dict[bytes, bytes] = {
    b"NetworkNamespacePath": b"s",
    b"LogExtraFields": b"aay",
    b"RestrictAddressFamilies": b"(bas)",
    b"CapabilityBoundingSet": b"t",
    b"RestrictNamespaces": b"t",
    b"ProtectHostname": b"b",
    b"ProtectClock": b"b",
    b"ProtectKernelLogs": b"b",
    b"RestrictSUIDSGID": b"b",
    b"PrivateIPC": b"b",
    b"PrivatePIDs": b"s",
    b"ProtectProc": b"s",
    b"ProcSubset": b"s",
    b"UMask": b"u",
    b"SystemCallErrorNumber": b"i",
    b"CPUWeight": b"t",
    b"OOMPolicy": b"s",
}


class _Props:
    """pystemd iterates ``.items()``: a list lets a property repeat."""

    def __init__(self, items: Sequence[tuple[bytes, Any]]) -> None:
        self._items = items

    def items(self) -> Sequence[tuple[bytes, Any]]:
        return self._items


def _dbus_value(value: Any) -> Any:
    """str -> bytes, recursively (pystemd wants bytes for s and ay)."""
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, list):
        return [_dbus_value(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_dbus_value(v) for v in value)
    return value


def _pystemd() -> Any:
    try:
        import pystemd.systemd1  # noqa: PLC0415 - imported late: the unit tier has no D-Bus
        from pystemd.systemd1 import unit_signatures  # noqa: PLC0415
    except ImportError as exc:  # pragma: no cover - a dependency
        raise Unavailable(f"pystemd is not installed: {exc}") from exc
    for name, sig in _SIGNATURES.items():
        unit_signatures.KNOWN_UNIT_SIGNATURES.setdefault(name, sig)
    return pystemd.systemd1


_MANAGER: Any = None
_MANAGER_LOCK = threading.Lock()


def _manager() -> Any:
    """One loaded Manager for the process: loading introspects systemd and builds the
    interface classes (~40 ms); calls on a loaded one open their own bus, so it is
    shared safely by threads."""
    global _MANAGER  # noqa: PLW0603 - a process-wide cache
    with _MANAGER_LOCK:
        if _MANAGER is None:
            manager = _pystemd().Manager()
            manager.load()
            _MANAGER = manager
        return _MANAGER


@contextlib.contextmanager
def _managed() -> Iterator[Any]:
    yield _manager()


def _properties(name: str, interfaces: Sequence[str]) -> dict[str, Any] | None:
    """Properties.GetAll of the loaded unit ``name`` for each interface, merged; None
    when the unit is not loaded. No introspection of the unit (that costs ~40 ms)."""
    from pystemd.dbuslib import DBus, apply_signature  # noqa: PLC0415 - as _pystemd

    try:
        path = _manager().Manager.GetUnit(name.encode())
    except Exception as exc:
        if isinstance(_dbus_error(name, exc), NotFound):
            return None
        raise _dbus_error(name, exc) from exc
    out: dict[str, Any] = {}
    bus = DBus()
    bus.open()
    try:
        for interface in interfaces:
            body = bus.call_method(
                b"org.freedesktop.systemd1", path, b"org.freedesktop.DBus.Properties",
                b"GetAll", apply_signature(b"s", [interface.encode()])).body
            out.update({_text(k): v for k, v in dict(body).items()})
    except Exception as exc:
        err = _dbus_error(name, exc)
        if isinstance(err, NotFound):
            return None
        raise err from exc
    finally:
        bus.close()
    return out


def _dbus_error(what: str, exc: Exception) -> Exception:
    text = str(exc)
    if "NoSuchUnit" in text or "not loaded" in text:
        return NotFound(f"{what}: no such unit")
    return Unavailable(f"{what}: systemd said: {text}")


def systemd_version() -> int:
    """The running systemd's major version (Manager.Version over D-Bus)."""
    try:
        version = _manager().Manager.Version
    except Exception as exc:
        raise _dbus_error("systemd version", exc) from exc
    raw = version.decode() if isinstance(version, bytes) else str(version)
    m = re.match(r"v?(\d+)", raw)
    if m is None:
        raise Unavailable(f"systemd reports an unparsable version {raw!r}")
    return int(m.group(1))


def start_dyno(spec: DynoSpec, mode: PidMode | None = None) -> str:
    """StartTransientUnit for the spec; returns the unit name. ``mode`` None detects
    it from systemd's version. Raises InvalidArgument for a bad spec and Unavailable
    when systemd refuses (a unit of that name is loaded already, a bad property).
    Does not wait for the command: Type=exec means started once exec'd."""
    name = unit_name(spec.app, spec.process_type, spec.number, spec.generation)
    if mode is None:
        mode = pid_mode_for(systemd_version())
    props = [(k.encode(), _dbus_value(v)) for k, v in unit_properties(spec, mode)]
    try:
        with _managed() as manager:
            manager.Manager.StartTransientUnit(name.encode(), b"fail", _Props(props))
    except Exception as exc:
        raise _dbus_error(f"dyno {spec.app} {spec.dyno} ({name})", exc) from exc
    return name


def stop_dyno(name: str) -> None:
    """StopUnit (SIGTERM to every process, SIGKILL after 30 s). Returns at once; use
    ``wait_gone``. A unit that is not loaded is not an error (idempotent)."""
    try:
        with _managed() as manager:
            manager.Manager.StopUnit(name.encode(), b"replace")
    except Exception as exc:
        err = _dbus_error(name, exc)
        if not isinstance(err, NotFound):
            raise err from exc


@dataclass(frozen=True)
class DynoUnit:
    name: str
    dyno: DynoName
    active_state: str  # active, activating, deactivating, inactive, failed
    sub_state: str  # running, exited, dead, ...
    job: str = ""  # the pending job's type (start, stop, ...); "" when none

    @property
    def exited(self) -> bool:
        """Its command has ended (or the unit failed). A unit whose start job is still
        queued is inactive too, but has not run yet: StartTransientUnit returns before
        systemd runs the job, later still when it is busy starting other units."""
        if self.active_state == "failed" or self.sub_state == "exited":
            return True
        return self.active_state == "inactive" and self.job != "start"


def list_dynos() -> list[DynoUnit]:
    """Every loaded ``dynod-*`` dyno service, sorted by name."""
    try:
        with _managed() as manager:
            rows = manager.Manager.ListUnitsByPatterns([], [b"dynod-*.service"])
    except Exception as exc:
        raise _dbus_error("listing dyno units", exc) from exc
    units = []
    for row in rows:
        name = row[0].decode() if isinstance(row[0], bytes) else str(row[0])
        dyno = parse_unit_name(name)
        if dyno is None:
            continue
        active, sub = (x.decode() if isinstance(x, bytes) else str(x) for x in row[3:5])
        job = row[8].decode() if isinstance(row[8], bytes) else str(row[8])
        units.append(DynoUnit(name, dyno, active, sub, job if row[7] else ""))
    return sorted(units, key=lambda u: u.name)


def kill_dyno(name: str, signal: int) -> None:
    """KillUnit: ``signal`` to every process of the unit. Not loaded: no error."""
    try:
        with _managed() as manager:
            manager.Manager.KillUnit(name.encode(), b"all", signal)
    except Exception as exc:
        err = _dbus_error(name, exc)
        if not isinstance(err, NotFound):
            raise err from exc


def reset_dyno(name: str) -> None:
    """ResetFailedUnit, so a failed unit is unloaded. Not loaded or not failed: no error."""
    try:
        with _managed() as manager:
            manager.Manager.ResetFailedUnit(name.encode())
    except Exception as exc:
        err = _dbus_error(name, exc)
        if not isinstance(err, NotFound):
            raise err from exc


@dataclass(frozen=True)
class DynoStatus:
    """What systemd knows of one loaded dyno unit."""

    active_state: str
    sub_state: str
    result: str  # success, exit-code, signal, oom-kill, timeout, ...
    exit_status: int | None  # Heroku's "status": the code, or 128+N for signal N
    control_group: str
    memory_bytes: int | None
    cpu_nsec: int | None
    main_started_usec: int  # CLOCK_REALTIME, µs


_NO_VALUE = 2**64 - 1  # systemd's "not set" for uint64 counters
_CLD_EXITED, _CLD_KILLED, _CLD_DUMPED = 1, 2, 3


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def dyno_status(name: str) -> DynoStatus | None:
    """The unit's state, exit status and cgroup counters; None when it is not loaded."""
    props = _properties(name, ["org.freedesktop.systemd1.Unit",
                               "org.freedesktop.systemd1.Service"])
    if props is None or _text(props.get("LoadState", b"")) != "loaded":
        return None
    code, status = int(props["ExecMainCode"]), int(props["ExecMainStatus"])
    memory, cpu = int(props["MemoryCurrent"]), int(props["CPUUsageNSec"])
    return DynoStatus(
        active_state=_text(props["ActiveState"]),
        sub_state=_text(props["SubState"]),
        result=_text(props["Result"]),
        exit_status=(status if code == _CLD_EXITED
                     else 128 + status if code in (_CLD_KILLED, _CLD_DUMPED) else None),
        control_group=_text(props["ControlGroup"]),
        memory_bytes=None if memory == _NO_VALUE else memory,
        cpu_nsec=None if cpu == _NO_VALUE else cpu,
        main_started_usec=int(props["ExecMainStartTimestamp"]),
    )


def unit_state(name: str) -> str | None:
    """ActiveState of a loaded unit, None when it is not loaded (gone)."""
    for unit in list_dynos():
        if unit.name == name:
            return unit.active_state
    return None


def wait_gone(name: str, timeout: float = 40.0) -> bool:
    """Poll until the unit is unloaded (resetting it once it failed); False on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = unit_state(name)
        if state is None:
            return True
        if state == "failed":
            reset_dyno(name)
        time.sleep(0.05)
    return False


# --- build steps ------------------------------------------------------------------

BUILDS_SLICE = "dynod-builds.slice"
# What `systemd-run --wait` exits with when the unit failed without an exit status of
# its own (killed by the OOM killer, by RuntimeMaxSec=, by a signal).
RUN_EXCEPTION = 255


@dataclass(frozen=True)
class BuildStepSpec:
    """One command of a build (a buildpack's detect, compile or release) as a transient
    unit on the build's root filesystem. Paths in ``argv``, ``env`` and ``cwd`` are
    paths inside ``root``; ``binds`` bring host directories in (the build cache)."""

    app: str
    build_id: str
    step: int
    argv: tuple[str, ...]
    root: Path
    uid: int
    cwd: str
    env: tuple[tuple[str, str], ...] = ()
    binds: tuple[Bind, ...] = ()
    netns_path: Path | None = None
    memory_max: int | None = None
    tasks_max: int | None = None
    runtime_max_sec: int = 15 * 60

    @property
    def unit(self) -> str:
        return build_unit_name(self.app, self.build_id, self.step)


def build_unit_name(app: str, build_id: str, step: int) -> str:
    """``dynod-build-<app>-<id8>-<step>.service``: never a dyno unit's name (that has
    exactly two unescaped dashes after the prefix and ends in ``.<n>``)."""
    _check_name("app name", app)
    return f"{UNIT_PREFIX}build-{escape(app)}-{escape(build_id[:8])}-{step}.service"


def build_step_properties(spec: BuildStepSpec) -> list[str]:
    """``NAME=value`` properties of a build step's unit (for ``systemd-run -p``)."""
    props = [
        f"Description=dynod build {spec.build_id[:8]} of {spec.app} (step {spec.step})",
        f"RootDirectory={spec.root}",
        "MountAPIVFS=yes",
        f"WorkingDirectory={spec.cwd}",
        f"User={spec.uid}",
        f"Group={spec.uid}",
        # Unprivileged and no way back up: no capabilities, no setuid, no new privileges.
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=",
        "RestrictSUIDSGID=yes",
        "PrivateDevices=yes",
        "PrivateIPC=yes",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectKernelLogs=yes",
        "ProtectControlGroups=yes",
        "ProtectClock=yes",
        "ProtectHostname=yes",
        "LockPersonality=yes",
        "KeyringMode=private",
        "MemoryAccounting=yes",
        "TasksAccounting=yes",
        "MemorySwapMax=0",
        # Heroku: slug compilation is limited to 15 minutes.
        f"RuntimeMaxSec={spec.runtime_max_sec}",
        "KillMode=control-group",
        f"LogExtraFields=DYNOD_APP={spec.app}",
        "LogExtraFields=DYNOD_DYNO=build",
    ]
    for bind in spec.binds:
        kind = "BindReadOnlyPaths" if bind.read_only else "BindPaths"
        props.append(f"{kind}={bind.source}:{bind.target}")
    if spec.netns_path is not None:
        props += [f"NetworkNamespacePath={spec.netns_path}", "PrivateNetwork=yes"]
    else:
        props.append("PrivateNetwork=yes")
    if spec.memory_max is not None:
        props.append(f"MemoryMax={spec.memory_max}")
    if spec.tasks_max is not None:
        props.append(f"TasksMax={spec.tasks_max}")
    return props


def build_step_argv(spec: BuildStepSpec) -> list[str]:
    """``systemd-run --pipe --wait`` for the step: its output comes back on our pipes
    and its exit status is systemd-run's (255 when it was killed)."""
    argv = ["systemd-run", "--pipe", "--wait", "--quiet", f"--unit={spec.unit}",
            f"--slice={BUILDS_SLICE}"]
    for prop in build_step_properties(spec):
        argv += ["-p", prop]
    for key, value in spec.env:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise InvalidArgument(f"build environment variable {key!r} is not a valid name")
        argv.append(f"--setenv={key}={value}")
    return [*argv, "--", *(literal(a) for a in spec.argv)]


def run_build_step(spec: BuildStepSpec, on_line: Callable[[str], None]) -> tuple[int, str]:
    """Run one build step as its transient unit, passing its output to ``on_line`` line
    by line; return (exit status, systemd's Result: success, exit-code, oom-kill,
    timeout, signal ...). The failed unit is reset so nothing is left loaded."""
    status = processes.stream(build_step_argv(spec), on_line,
                        timeout=spec.runtime_max_sec + 60.0)
    if status == 0:
        return 0, "success"
    try:
        result = processes.output(["systemctl", "show", "--property=Result", "--value",
                             spec.unit], timeout=30).strip()
    except processes.CommandFailed:
        result = "unknown"
    with contextlib.suppress(processes.CommandFailed):
        processes.output(["systemctl", "reset-failed", spec.unit], timeout=30)
    return status, result or "unknown"


def stop_build_steps(app: str, build_id: str) -> None:
    """Stop any unit still running for this build (the daemon is stopping)."""
    # A backslash escapes in a glob: match the escaped app's "\\" with "?".
    unit = build_unit_name(app, build_id, 0).replace("\\", "?")
    pattern = unit.removesuffix("-0.service") + "-*.service"
    with contextlib.suppress(processes.CommandFailed):
        processes.output(["systemctl", "stop", pattern], timeout=60)
