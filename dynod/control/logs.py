"""An app's log stream, read back from journald the Heroku way.

Every entry of the stream carries ``DYNOD_APP`` and ``DYNOD_SOURCE`` (``app`` for dyno
output and API events, ``dynod`` for platform and router events) and ``DYNOD_DYNO``
(``web.1``, ``api``, ``router``); see :mod:`dynod.system.journal`. Build output is tagged with
the app but no source, so it stays out of the stream (it is in ``builds:output``).

Heroku: ``heroku logs`` prints 100 lines by default, at most 1500, ``-t`` follows,
``-s app|heroku`` and ``-d web`` / ``-d web.1`` filter (logging article, cli logs.ts).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from dynod.errors import InvalidArgument
from dynod.system import journal

DEFAULT_LINES = 100
MAX_LINES = 1500
SOURCES = ("app", "dynod")
_DYNO_RE = re.compile(r"^[A-Za-z0-9_-]{1,30}(\.\d{1,5})?$")


@dataclass(frozen=True)
class Query:
    app: str
    lines: int = DEFAULT_LINES
    follow: bool = False
    dyno: str = ""
    source: str = ""


@dataclass(frozen=True)
class LogLine:
    time: datetime
    source: str
    dyno: str
    message: str


def make_query(app: str, lines: int = 0, follow: bool = False, dyno: str = "",
               source: str = "") -> Query:
    """Raises InvalidArgument for a count over 1500, an unknown source or a bad dyno."""
    if lines < 0 or lines > MAX_LINES:
        raise InvalidArgument(f"--num {lines}: give 1 to {MAX_LINES} lines")
    if source == "heroku":  # Heroku's name for the platform source
        source = "dynod"
    if source and source not in SOURCES:
        raise InvalidArgument(f"--source {source!r}: use app or dynod")
    if dyno and not _DYNO_RE.match(dyno):
        raise InvalidArgument(f"--dyno {dyno!r}: use a process type (web) or a dyno (web.1)")
    return Query(app, lines or DEFAULT_LINES, follow, dyno, source)


def journalctl_argv(q: Query) -> list[str]:
    """Field matches of the same field are ORed, of different fields ANDed."""
    argv = ["journalctl", "--output=json", "--no-pager", "--all",
            f"{journal.APP}={q.app}"]
    sources = [q.source] if q.source else list(SOURCES)
    argv += [f"{journal.SOURCE}={s}" for s in sources]
    if (q.dyno and "." in q.dyno) or q.dyno in ("api", "router"):
        argv.append(f"{journal.DYNO}={q.dyno}")
        argv.append(f"--lines={q.lines}")
    else:
        # A process type: no prefix match in journalctl; filter here, from more lines.
        argv.append(f"--lines={q.lines * 20 if q.dyno else q.lines}")
    if q.follow:
        argv.append("--follow")
    return argv


def _text(value: object) -> str:
    if isinstance(value, list):  # journald gives non-UTF-8 values as byte arrays
        return bytes(int(b) for b in value).decode("utf-8", "replace")
    return str(value) if value is not None else ""


def parse_entry(raw: str) -> list[LogLine]:
    """One ``journalctl -o json`` line: its stream lines (several for a batched router
    entry, whose ``DYNOD_TIMES`` field holds each line's time), none if it is not a
    stream entry."""
    entry = decode_entry(raw)
    return [] if entry is None else entry_lines(entry)


def decode_entry(raw: str) -> dict[str, object] | None:
    """One ``journalctl -o json`` line as its fields, None if it is not one."""
    try:
        entry = json.loads(raw)
    except ValueError:
        return None
    return entry if isinstance(entry, dict) else None


def entry_lines(entry: dict[str, object]) -> list[LogLine]:
    """The stream lines of one decoded entry (see :func:`parse_entry`)."""
    source = _text(entry.get(journal.SOURCE))
    if source not in SOURCES:
        return []
    try:
        usec = int(str(entry["__REALTIME_TIMESTAMP"]))
    except (KeyError, ValueError):
        return []
    dyno = _text(entry.get(journal.DYNO))
    message = _text(entry.get("MESSAGE")).rstrip("\n")
    times = _text(entry.get(journal.TIMES)).split()
    if not times:
        return [LogLine(datetime.fromtimestamp(usec / 1_000_000, UTC), source, dyno, message)]
    texts = message.split("\n")
    stamps = [int(x) if x.isdigit() else usec for x in times]
    stamps += [usec] * (len(texts) - len(stamps))
    return [LogLine(datetime.fromtimestamp(s / 1_000_000, UTC), source, dyno, text)
            for s, text in zip(stamps, texts, strict=False)]


def matches(q: Query, line: LogLine) -> bool:
    if not q.dyno:
        return True
    if "." in q.dyno:
        return line.dyno == q.dyno
    return line.dyno == q.dyno or line.dyno.split(".", 1)[0] == q.dyno


def select(q: Query, raw_lines: Iterable[str]) -> Iterator[LogLine]:
    """Parsed, filtered lines: as they come when following (a process-type filter may
    then show more than ``q.lines`` of backlog), else the last ``q.lines``."""
    lines = (line for raw in raw_lines for line in parse_entry(raw) if matches(q, line))
    if q.follow:
        yield from lines
    else:
        yield from list(lines)[-q.lines:]


def format_line(line: LogLine) -> str:
    """Heroku's ``2010-09-16T15:13:46.677020+00:00 app[web.1]: message``."""
    when = line.time.astimezone(UTC).isoformat(timespec="microseconds")
    process = f"[{line.dyno}]" if line.dyno else ""
    return f"{when} {line.source}{process}: {line.message}"
