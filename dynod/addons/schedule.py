"""Scheduled backups as persistent systemd timers.

Heroku: ``pg:backups:schedule DATABASE_URL --at '02:00 America/New_York'`` takes one
backup a day at that time (``a001``...). Here each schedule is a timer
``dynod-backup-<app>.<addon>.timer`` in ``/etc/systemd/system`` with
``OnCalendar=*-*-* 02:00:00 America/New_York`` and ``Persistent=true`` (a run missed
while the machine was off happens at boot); its service asks the daemon over its socket
to capture a scheduled backup (``dynoctl pg:backups:capture --scheduled``), which is
verified like every other. The timer file is the schedule's record (``X-Dynod-*``
fields say whose it is): ``systemctl list-timers 'dynod-backup-*'`` shows them all.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dynod.errors import InvalidArgument
from dynod.system import timers

TIMER_PREFIX = "dynod-backup-"
_AT = re.compile(r"^(\d{1,2}):(\d{2})(?:\s+(\S+))?$")


@dataclass(frozen=True)
class BackupSchedule:
    app: str
    addon: str
    attachment: str  # the name the user scheduled it by, e.g. DATABASE
    at: str  # "02:00 Europe/Paris", as Heroku prints it
    next_run: str = ""  # systemd's next elapse, "" when not known


def parse_at(text: str) -> tuple[int, int, str]:
    """``'02:00 Europe/Paris'`` -> (2, 0, 'Europe/Paris'); the zone defaults to UTC
    (Heroku's). Raises InvalidArgument naming the expected form."""
    m = _AT.match(text.strip())
    if m is None:
        raise InvalidArgument(
            f'--at "{text}" is not a time of day; use HH:MM and a time zone, e.g. '
            "--at '02:00 Europe/Paris'")
    hour, minute, zone = int(m.group(1)), int(m.group(2)), m.group(3) or "UTC"
    if hour > 23 or minute > 59:
        raise InvalidArgument(f'--at "{text}": {hour:02d}:{minute:02d} is not a time of '
                              "day (00:00 to 23:59)")
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidArgument(
            f'--at "{text}": unknown time zone "{zone}"; use a tz database name such as '
            "UTC, Europe/Paris or America/New_York") from None
    return hour, minute, zone


def on_calendar(hour: int, minute: int, zone: str) -> str:
    return f"*-*-* {hour:02d}:{minute:02d}:00 {zone}"


def timer_name(app: str, addon: str) -> str:
    return f"{TIMER_PREFIX}{app}.{addon}"


def capture_argv(app: str, addon: str, python: str = sys.executable) -> tuple[str, ...]:
    """What the timer's service runs: dynoctl (this interpreter's) asking the daemon for
    a scheduled backup."""
    return (python, "-m", "dynod.cli.main", "pg:backups:capture", "--scheduled", addon,
            "-a", app)


def timer_spec(app: str, addon: str, attachment: str, at: str, *, socket_path: Path,
               python: str = sys.executable) -> timers.TimerSpec:
    """The timer of a schedule. Raises InvalidArgument (``at``)."""
    hour, minute, zone = parse_at(at)
    return timers.TimerSpec(
        name=timer_name(app, addon),
        description=f"dynod scheduled backup of {addon} ({attachment}) of app {app}",
        on_calendar=on_calendar(hour, minute, zone),
        argv=capture_argv(app, addon, python),
        environment=(("DYNOD_SOCKET", str(socket_path)),),
        fields=(("App", app), ("Addon", addon), ("Attachment", attachment),
                ("At", f"{hour:02d}:{minute:02d} {zone}")),
    )


class Scheduler:
    """Installs, lists and removes backup timers (``unit_dir`` is systemd's
    /etc/systemd/system in the daemon)."""

    def __init__(self, socket_path: Path, unit_dir: Path = timers.UNIT_DIR,
                 python: str = sys.executable) -> None:
        self.socket_path = socket_path
        self.unit_dir = unit_dir
        self.python = python

    def schedule(self, app: str, addon: str, attachment: str, at: str) -> BackupSchedule:
        """Make (or replace) the add-on's daily backup timer. Raises InvalidArgument,
        Unavailable (systemd)."""
        spec = timer_spec(app, addon, attachment, at, socket_path=self.socket_path,
                          python=self.python)
        timers.install_timer(spec, self.unit_dir)
        return self._one(app, addon) or BackupSchedule(app, addon, attachment, at)

    def unschedule(self, app: str, addon: str) -> bool:
        """False when the add-on had no schedule."""
        return timers.remove_timer(timer_name(app, addon), self.unit_dir)

    def schedules(self, app: str | None = None) -> list[BackupSchedule]:
        """``app``'s schedules (every app's if None), by add-on."""
        found = [(name, f) for name, f in timers.installed_timers(TIMER_PREFIX, self.unit_dir)
                 if "App" in f and "Addon" in f and (app is None or f["App"] == app)]
        nexts = timers.next_elapse([name for name, _ in found])
        return [BackupSchedule(f["App"], f["Addon"], f.get("Attachment", ""),
                               f.get("At", f.get("OnCalendar", "")), nexts.get(name, ""))
                for name, f in found]

    def _one(self, app: str, addon: str) -> BackupSchedule | None:
        return next((s for s in self.schedules(app) if s.addon == addon), None)

    def remove_app(self, app: str, addons: Sequence[str] | None = None) -> None:
        """Remove ``app``'s schedules (only those of ``addons`` when given)."""
        for s in self.schedules(app):
            if addons is None or s.addon in addons:
                self.unschedule(app, s.addon)
