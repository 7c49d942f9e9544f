"""Dynos as transient systemd units, over D-Bus: start, stop, kill, list, status.

The only module that imports pystemd. ``start_dyno`` sends a ``DynoSpec``'s properties
(``unit_properties``) with ``StartTransientUnit`` (never unit files plus daemon-reload);
the unit's name is ``unit_names.unit_name``. Dynos are not children of
``dynod.service``: restarting dynod restarts no dyno. Bytes and D-Bus signatures stay
in here; callers get ``DynoUnit`` and ``DynoStatus``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from dynod.errors import NotFound, Unavailable
from dynod.system import hostinfo
from dynod.system.unit_names import DynoName, parse_unit_name, unit_name
from dynod.system.unit_properties import DynoSpec, PidMode, pid_mode_for, unit_properties

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
    b"ProtectControlGroupsEx": b"s",  # systemd >= 257
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


# How long the system bus may take to answer a new connection's handshake.
BUS_ANSWER_TIMEOUT = 2.0


def _bus_socket() -> str:
    address = os.environ.get("DBUS_SYSTEM_BUS_ADDRESS", "")
    if address.startswith("unix:path="):
        return address.removeprefix("unix:path=").split(",", 1)[0]
    return "/run/dbus/system_bus_socket"


def check_bus(timeout: float = BUS_ANSWER_TIMEOUT) -> None:
    """Raise Unavailable unless the system bus answers a connection's authentication
    within ``timeout``. Every pystemd call opens a connection, and sd-bus waits up to
    90 s for its handshake holding Python's GIL (pystemd does not release it): with the
    bus stalled, all of dynod froze (API, router, watchdog pings) until the watchdog
    killed it. Python's socket waits without the GIL, so the same handshake here costs a
    stalled bus ``timeout`` and a clear error, and a live one well under a millisecond."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(_bus_socket())
            uid = str(os.getuid()).encode().hex().encode()
            sock.sendall(b"\0AUTH EXTERNAL " + uid + b"\r\n")
            reply = sock.recv(512)
    except TimeoutError as exc:
        raise _bus_stalled(f"no answer in {timeout:g} s") from exc
    except OSError as exc:
        raise _bus_stalled(exc.strerror or repr(exc)) from exc
    if not reply.startswith(b"OK"):
        raise _bus_stalled(f"it answered {reply[:60]!r}")


def _bus_stalled(why: str) -> Unavailable:
    return Unavailable(f"systemd's D-Bus did not answer in time ({why}): it is busy or "
                       "stalled; retry in a moment, and see `systemctl status dbus` if it "
                       "lasts")


def _manager() -> Any:
    """One loaded Manager for the process: loading introspects systemd and builds the
    interface classes (~40 ms); calls on a loaded one open their own bus, so it is
    shared safely by threads. Raises Unavailable when the bus does not answer."""
    check_bus()
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
    if isinstance(exc, Unavailable | NotFound):
        return exc  # ours already (check_bus)
    text = str(exc)
    if "NoSuchUnit" in text or "not loaded" in text:
        return NotFound(f"{what}: no such unit")
    if "ETIMEDOUT" in text or "ENOTCONN" in text:
        # sd-bus gave up waiting ($SYSTEMD_BUS_TIMEOUT, dynod.service) and dropped the
        # connection: systemd or the bus is busy or stalled.
        return Unavailable(f"{what}: {_bus_stalled(text.split(chr(10), maxsplit=1)[0]).message}")
    return Unavailable(f"{what}: systemd said: {text}")


def start_dyno(spec: DynoSpec, mode: PidMode | None = None) -> str:
    """StartTransientUnit for the spec; returns the unit name. ``mode`` None detects
    it from systemd's version. Raises InvalidArgument for a bad spec and Unavailable
    when systemd refuses (a unit of that name is loaded already, a bad property).
    Does not wait for the command: Type=exec means started once exec'd."""
    name = unit_name(spec.app, spec.process_type, spec.number, spec.generation)
    if mode is None:
        mode = pid_mode_for(hostinfo.systemd_version())
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
    # CLOCK_MONOTONIC, µs (0: not started): what a timer since the start is measured on,
    # since the wall clock can be stepped (NTP, `date -s`) while the unit runs.
    main_started_monotonic_usec: int = 0


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
        main_started_monotonic_usec=int(props["ExecMainStartTimestampMonotonic"]),
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


