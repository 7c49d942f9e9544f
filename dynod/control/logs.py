"""An app's log stream, read back from journald the Heroku way.

Every entry of the stream carries ``DYNOD_APP`` and ``DYNOD_SOURCE`` (``app`` for dyno
output and API events, ``dynod`` for platform and router events) and ``DYNOD_DYNO``
(``web.1``, ``api``, ``router``); see :mod:`dynod.system.journal`. Build output is tagged with
the app but no source, so it stays out of the stream (it is in ``builds:output``).

Heroku: ``heroku logs`` prints 100 lines by default, at most 1500, ``-t`` follows,
``-s app|heroku`` and ``-d web`` / ``-d web.1`` filter (logging article, cli logs.ts).

Every line has a position: journald's cursor of its entry and its index within the
entry (a batched router entry holds many lines), so a tail that lost its connection
(dynod restarted) resumes after the last line it showed, none lost or repeated.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from dynod.errors import InvalidArgument, Unavailable
from dynod.system import journal

DEFAULT_LINES = 100
MAX_LINES = 1500
SOURCES = ("app", "dynod")
_DYNO_RE = re.compile(r"^[A-Za-z0-9_-]{1,30}(\.\d{1,5})?$")
# A position: ``<journald cursor>#<index of the line in its entry>``; cursors are
# ``key=hex;...`` and never hold "#".
_POSITION_RE = re.compile(r"^([A-Za-z0-9=;_-]{1,400})#(\d{1,5})$")


@dataclass(frozen=True)
class Query:
    app: str
    lines: int = DEFAULT_LINES
    follow: bool = False
    dyno: str = ""
    source: str = ""
    # Resume after this position (no backlog).
    after: str = ""


@dataclass(frozen=True)
class LogLine:
    time: datetime
    source: str
    dyno: str
    message: str
    position: str = ""


def make_query(app: str, lines: int = 0, follow: bool = False, dyno: str = "",
               source: str = "", *, after: str = "") -> Query:
    """Raises InvalidArgument for a count over 1500, an unknown source, a bad dyno or
    a position that is not one of :class:`LogLine`'s."""
    if lines < 0 or lines > MAX_LINES:
        raise InvalidArgument(f"--num {lines}: give 1 to {MAX_LINES} lines")
    if source == "heroku":  # Heroku's name for the platform source
        source = "dynod"
    if source and source not in SOURCES:
        raise InvalidArgument(f"--source {source!r}: use app or dynod")
    if dyno and not _DYNO_RE.match(dyno):
        raise InvalidArgument(f"--dyno {dyno!r}: use a process type (web) or a dyno (web.1)")
    if after and not _POSITION_RE.match(after):
        raise InvalidArgument(f"after {after[:60]!r}: not a log position; give the "
                              "position of a line this stream sent, or none")
    return Query(app, lines or DEFAULT_LINES, follow, dyno, source, after)


def _exact_dyno(q: Query) -> bool:
    return (bool(q.dyno) and "." in q.dyno) or q.dyno in ("api", "router")


def _matches_argv(q: Query) -> list[str]:
    """Field matches of the same field are ORed, of different fields ANDed."""
    argv = ["journalctl", "--output=json", "--no-pager", "--all",
            f"{journal.APP}={q.app}"]
    sources = [q.source] if q.source else list(SOURCES)
    argv += [f"{journal.SOURCE}={s}" for s in sources]
    if _exact_dyno(q):
        argv.append(f"{journal.DYNO}={q.dyno}")
    return argv


def backlog_argv(q: Query) -> list[str]:
    """The newest entries first. journald counts entries, a batched router entry holds
    many lines, and a process type is filtered here: the reader stops at ``q.lines``
    lines, so a process type reads as far back as it must (no limit)."""
    argv = [*_matches_argv(q), "--reverse"]
    if q.dyno and not _exact_dyno(q):
        return argv
    return [*argv, f"--lines={q.lines}"]


def follow_argv(q: Query, *, cursor: str = "", after_cursor: str = "") -> list[str]:
    """Entries from ``cursor`` on (inclusive), or after ``after_cursor``, or every new
    one; with ``q.follow`` until closed."""
    argv = _matches_argv(q)
    if cursor:
        argv.append(f"--cursor={cursor}")
    elif after_cursor:
        argv.append(f"--after-cursor={after_cursor}")
    else:
        argv.append("--lines=all" if q.follow else "--lines=0")
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
    cursor = _text(entry.get("__CURSOR"))
    times = _text(entry.get(journal.TIMES)).split()
    if not times:
        return [LogLine(datetime.fromtimestamp(usec / 1_000_000, UTC), source, dyno, message,
                        f"{cursor}#0" if cursor else "")]
    texts = message.split("\n")
    stamps = [int(x) if x.isdigit() else usec for x in times]
    stamps += [usec] * (len(texts) - len(stamps))
    return [LogLine(datetime.fromtimestamp(s / 1_000_000, UTC), source, dyno, text,
                    f"{cursor}#{i}" if cursor else "")
            for i, (s, text) in enumerate(zip(stamps, texts, strict=False))]


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


class Source(Protocol):
    """journalctl's output, line by line (:class:`dynod.system.processes.Lines`)."""

    def __iter__(self) -> Iterator[str]: ...
    def close(self) -> int | None: ...
    def stderr(self) -> str: ...


def _drain(source: Source) -> Iterator[dict[str, object]]:
    """Its entries; Unavailable if journalctl failed (not when it was closed)."""
    try:
        for raw in source:
            entry = decode_entry(raw)
            if entry is not None:
                yield entry
    finally:
        status = source.close()
    if status not in (None, 0):
        raise Unavailable(f"journal: journalctl failed: {source.stderr().strip()}")


def stream(q: Query, open_source: Callable[[list[str]], Source]) -> Iterator[LogLine]:
    """The query's lines in time order: the last ``q.lines`` (or, with ``q.after``,
    every line after that position), then with ``q.follow`` each new one until the
    source is closed. ``open_source`` starts a journalctl (it may raise Unavailable).
    Raises Unavailable when journalctl fails."""
    if q.after:
        m = _POSITION_RE.match(q.after)
        assert m is not None  # make_query checked it
        cursor, index = m.group(1), int(m.group(2))
        first = True
        for entry in _drain(open_source(follow_argv(q, cursor=cursor))):
            lines = entry_lines(entry)
            if first and _text(entry.get("__CURSOR")) == cursor:
                lines = lines[index + 1:]  # the rest of a batched entry
            first = False
            yield from (x for x in lines if matches(q, x))
        return
    newest = ""
    found: list[LogLine] = []
    source = open_source(backlog_argv(q))
    for entry in _drain(source):
        newest = newest or _text(entry.get("__CURSOR"))
        found += [x for x in reversed(entry_lines(entry)) if matches(q, x)]
        if len(found) >= q.lines:
            source.close()  # enough: the rest is older
            break
    yield from reversed(found[:q.lines])
    if q.follow:
        # From right after the newest entry the backlog saw: nothing in between is lost.
        argv = follow_argv(q, after_cursor=newest)
        for entry in _drain(open_source(argv)):
            yield from (x for x in entry_lines(entry) if matches(q, x))


def format_line(line: LogLine) -> str:
    """Heroku's ``2010-09-16T15:13:46.677020+00:00 app[web.1]: message``."""
    when = line.time.astimezone(UTC).isoformat(timespec="microseconds")
    process = f"[{line.dyno}]" if line.dyno else ""
    return f"{when} {line.source}{process}: {line.message}"
