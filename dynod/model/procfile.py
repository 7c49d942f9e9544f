"""The Procfile: process types and their commands, parsed with Heroku's classic rule.

Heroku's classic parser is "loosely defined based on a regex" (heroku/buildpacks-procfile
SPEC.md)::

    ^[[:space:]]*([a-zA-Z0-9_-]+):?\\s+(.*)[[:space:]]*

Leading whitespace is allowed, the type is ``[A-Za-z0-9_-]+``, the colon is optional,
the rest of the line is the command (run later by bash, so shell syntax works). Lines
that do not match (blank lines, ``#`` comments, anything else) are ignored; we say so
for lines that are neither blank nor comments. A type declared twice keeps its last
command, with a warning (as the CNB Procfile spec does). Pure: parsing never runs
anything.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from dynod.errors import InvalidArgument

FILENAME = "Procfile"
# A Procfile is a few lines; a larger one is a mistake or an attack on the parser.
MAX_BYTES = 256 * 1024

# Heroku's classic regex, translated from POSIX classes to Python.
_LINE = re.compile(r"^\s*([a-zA-Z0-9_-]+)(:?)\s+(.*?)\s*$")

# Heroku's build output for a mis-cased Procfile [observed], one warning per line.
MISCASED_WARNINGS = (
    "Mis-cased procfile detected; ignoring.",
    "Rename it to Procfile to have it honored.",
)


@dataclass(frozen=True)
class ProcessType:
    """One ``<type>: <command>`` entry."""

    name: str
    command: str


@dataclass(frozen=True)
class Procfile:
    """A parsed Procfile. ``present`` is False when the app has none (a mis-cased one
    does not count); ``warnings`` are human-readable lines for the build output."""

    processes: tuple[ProcessType, ...] = ()
    warnings: tuple[str, ...] = ()
    present: bool = False

    @property
    def types(self) -> tuple[str, ...]:
        """The declared type names, sorted (as Heroku's build output lists them)."""
        return tuple(sorted(p.name for p in self.processes))

    def as_dict(self) -> dict[str, str]:
        return {p.name: p.command for p in self.processes}

    def command(self, name: str) -> str | None:
        for p in self.processes:
            if p.name == name:
                return p.command
        return None


def parse_procfile(text: str) -> Procfile:
    """Parse Procfile text with Heroku's classic rule; never raises."""
    found: dict[str, str] = {}
    warnings: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = _LINE.match(line)
        if match is None:
            warnings.append(f"Procfile line {number} is not '<type>: <command>'; ignoring it")
            continue
        name, colon, command = match.groups()
        if not command:
            warnings.append(f'Procfile line {number}: type "{name}" has no command; ignoring it')
            continue
        if not colon:
            warnings.append(
                f'Procfile line {number} has no colon after "{name}"; reading it as type "{name}"'
            )
        if name in found:
            warnings.append(
                f'Procfile line {number}: type "{name}" is declared again; the last one wins'
            )
            del found[name]  # keep the order of the winning declaration
        found[name] = command
    processes = tuple(ProcessType(name, command) for name, command in found.items())
    return Procfile(processes=processes, warnings=tuple(warnings), present=True)


def load_procfile(app_dir: Path) -> Procfile:
    """Read and parse ``app_dir/Procfile``.

    No Procfile gives ``Procfile(present=False)``; a mis-cased one (``procfile``,
    ``PROCFILE``) is ignored with Heroku's warning. The file is opened without following
    a symlink: the app directory is untrusted input and a link could point at any file
    the reader may read. Raises InvalidArgument if the Procfile is a symlink, not a
    regular file, larger than 256 KiB or not UTF-8.
    """
    warnings: tuple[str, ...] = ()
    try:
        names = [entry.name for entry in app_dir.iterdir()]
    except FileNotFoundError:
        names = []
    if FILENAME not in names and any(n.lower() == FILENAME.lower() for n in names):
        warnings = MISCASED_WARNINGS
    if FILENAME not in names:
        return Procfile(warnings=warnings)
    path = app_dir / FILENAME
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InvalidArgument("Procfile is a symbolic link; make it a regular file") from exc
        raise InvalidArgument(f"Procfile cannot be read: {exc.strerror}") from exc
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise InvalidArgument("Procfile is not a regular file")
        data = handle.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise InvalidArgument(f"Procfile is larger than {MAX_BYTES // 1024} KiB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidArgument(f"Procfile is not UTF-8 text (byte {exc.start})") from exc
    return parse_procfile(text)
