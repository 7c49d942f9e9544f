"""Heroku's CLI output conventions (heroku/cli: hux.styledHeader, styledObject, ago,
ux.action, config --shell quoting), and ``--json``."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

HEX = "⬢"  # Heroku renders app names as "⬢ <app>"


def app_label(app: str) -> str:
    return f"{HEX} {app}"


def header(text: str) -> None:
    print(f"=== {text}")


def styled_object(pairs: Mapping[str, str] | Iterable[tuple[str, str]]) -> None:
    """``KEY: value`` with values aligned after the longest key."""
    items = list(pairs.items()) if isinstance(pairs, Mapping) else list(pairs)
    if not items:
        return
    width = max(len(k) for k, _ in items) + 1
    for key, value in items:
        print(f"{key + ':':<{width}} {value}".rstrip())


def table(rows: Sequence[Sequence[str]]) -> None:
    """Columns separated by two spaces, no header row (Heroku's releases table)."""
    if not rows:
        return
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def action(message: str, result: str = "") -> None:
    """``Message... done[, result]`` on stderr, like Heroku's ux.action."""
    print(f"{message}... done" + (f", {result}" if result else ""), file=sys.stderr)


def warn(message: str) -> None:
    print(f" !    {message}", file=sys.stderr)


def when(ts: Timestamp) -> datetime:
    return ts.ToDatetime(tzinfo=UTC)


def ago(moment: datetime, now: datetime | None = None) -> str:
    """``2024/05/01 12:00:00 +0000 (~ 5m ago)`` (heroku/cli src/lib/time.ts)."""
    now = now or datetime.now(UTC)
    text = moment.astimezone().strftime("%Y/%m/%d %H:%M:%S %z")
    seconds = int((now - moment).total_seconds())
    if seconds < 60:
        return f"{text} (~ {max(seconds, 0)}s ago)"
    if seconds < 3600:
        return f"{text} (~ {seconds // 60}m ago)"
    if seconds < 25 * 3600:
        return f"{text} (~ {seconds // 3600}h ago)"
    return text


_SHELL_SPECIAL = re.compile(r"""["\s#!$&'()*,:;<=>?@\[\\\]^`{|}]""")


def shell_quote(value: str) -> str:
    """Quote a config value the way ``heroku config --shell`` does."""
    if "'" in value or "\n" in value:
        escaped = re.sub(r'(["\\$`!])', r"\\\1", value).replace("\n", "\\n")
        return f'"{escaped}"'
    if _SHELL_SPECIAL.search(value):
        return f"'{value}'"
    return value


def to_dict(message: Message) -> dict[str, Any]:
    return MessageToDict(message, preserving_proto_field_name=True,
                         always_print_fields_with_no_presence=True)


def print_json(value: Any) -> None:
    if isinstance(value, Message):
        value = to_dict(value)
    elif isinstance(value, list):
        value = [to_dict(v) if isinstance(v, Message) else v for v in value]
    print(json.dumps(value, indent=2, sort_keys=True))
