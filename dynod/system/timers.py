"""Persistent systemd timers: a ``.timer`` and its oneshot ``.service`` written to
``/etc/systemd/system`` and enabled, so they survive reboots (``Persistent=true`` runs
a run missed while the machine was off at the next boot). Used for scheduled backups;
inspect them with ``systemctl list-timers 'dynod-*'``.

Unit files are written atomically (a temporary file renamed into place); everything
runs through ``systemctl`` (``systemctl.py``) and ``processes``.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dynod.errors import InvalidArgument, Unavailable
from dynod.system import processes
from dynod.system.systemctl import systemctl

UNIT_DIR = Path("/etc/systemd/system")
_SAFE_ARG = re.compile(r"^[A-Za-z0-9_./:=@+-]+$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9.@_-]*$")


@dataclass(frozen=True)
class TimerSpec:
    """Timer ``name`` (``name.timer`` starts ``name.service``), firing at the systemd
    calendar expression ``on_calendar`` and running ``argv``. ``fields`` are written as
    ``X-Dynod-KEY=value`` in the [Unit] section of the timer (systemd ignores ``X-``
    keys), so the file itself says what it is for."""

    name: str
    description: str
    on_calendar: str
    argv: tuple[str, ...]
    environment: tuple[tuple[str, str], ...] = ()
    fields: tuple[tuple[str, str], ...] = ()
    slice: str = "dynod.slice"


def timer_text(spec: TimerSpec) -> str:
    fields = "".join(f"X-Dynod-{key}={value}\n" for key, value in spec.fields)
    return (
        "# Written by dynod; change it with dynoctl, not by hand.\n"
        f"[Unit]\nDescription={spec.description}\n{fields}\n"
        f"[Timer]\nOnCalendar={spec.on_calendar}\nPersistent=true\nAccuracySec=1s\n"
        f"Unit={spec.name}.service\n\n"
        "[Install]\nWantedBy=timers.target\n"
    )


def service_text(spec: TimerSpec) -> str:
    for arg in spec.argv:
        if not _SAFE_ARG.match(arg):
            raise InvalidArgument(f"timer {spec.name}: argument {arg!r} needs quoting")
    env = "".join(f"Environment={key}={value}\n" for key, value in spec.environment)
    return (
        "# Written by dynod; change it with dynoctl, not by hand.\n"
        f"[Unit]\nDescription={spec.description}\nAfter=dynod.service\n\n"
        f"[Service]\nType=oneshot\nSlice={spec.slice}\n{env}"
        f"ExecStart={' '.join(spec.argv)}\n"
    )


def parse_fields(text: str) -> dict[str, str]:
    """The ``X-Dynod-KEY=value`` fields and ``OnCalendar`` of a timer file."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        if key.startswith("X-Dynod-"):
            out[key.removeprefix("X-Dynod-")] = value
        elif key == "OnCalendar":
            out["OnCalendar"] = value
    return out


def normalize_calendar(expression: str) -> str:
    """systemd's own normal form of a calendar expression (``systemd-analyze
    calendar``). Raises InvalidArgument with systemd's reason."""
    try:
        out = processes.output(["systemd-analyze", "calendar", expression], timeout=30)
    except processes.CommandFailed as exc:
        raise InvalidArgument(f"{expression!r} is not a time systemd understands: "
                              f"{exc.stderr.strip() or exc}") from exc
    for line in out.splitlines():
        key, _, value = line.strip().partition(": ")
        if key == "Normalized form":
            return value.strip()
    return expression


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.chmod(0o644)
    tmp.replace(path)


def install_timer(spec: TimerSpec, unit_dir: Path = UNIT_DIR) -> None:
    """Write, load, enable and start the timer (replacing one of the same name).
    Raises Unavailable when systemd refuses it."""
    if not _NAME.match(spec.name):
        raise InvalidArgument(f"timer name {spec.name!r} is not a unit name")
    unit_dir.mkdir(parents=True, exist_ok=True)
    _write(unit_dir / f"{spec.name}.service", service_text(spec))
    _write(unit_dir / f"{spec.name}.timer", timer_text(spec))
    try:
        systemctl(["daemon-reload"])
        systemctl(["enable", "--now", f"{spec.name}.timer"])
        # A timer already running keeps its old schedule until restarted.
        systemctl(["restart", f"{spec.name}.timer"])
    except processes.CommandFailed as exc:
        remove_timer(spec.name, unit_dir)
        raise Unavailable(f"systemd did not take timer {spec.name}: {exc}") from exc


def remove_timer(name: str, unit_dir: Path = UNIT_DIR) -> bool:
    """Stop, disable and delete the timer and its service; False if there was none."""
    timer = unit_dir / f"{name}.timer"
    existed = timer.exists()
    with contextlib.suppress(processes.CommandFailed):
        systemctl(["disable", "--now", f"{name}.timer"])
    for path in (timer, unit_dir / f"{name}.service"):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    with contextlib.suppress(processes.CommandFailed):
        systemctl(["daemon-reload"])
    return existed


def installed_timers(prefix: str, unit_dir: Path = UNIT_DIR) -> list[tuple[str, dict[str, str]]]:
    """(name, fields) of every timer file whose name starts with ``prefix``, by name."""
    out = []
    for path in sorted(unit_dir.glob(f"{prefix}*.timer")):
        with contextlib.suppress(OSError):
            out.append((path.name.removesuffix(".timer"), parse_fields(path.read_text())))
    return out


def next_elapse(names: Sequence[str]) -> dict[str, str]:
    """When each timer fires next, as ``systemctl list-timers`` says it."""
    out: dict[str, str] = {}
    for name in names:
        with contextlib.suppress(processes.CommandFailed):
            value = systemctl(["show", "--property=NextElapseUSecRealtime", "--value",
                               f"{name}.timer"], timeout=30).strip()
            if value:
                out[name] = value
    return out
