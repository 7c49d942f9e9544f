"""Log drains: where an app's log stream is also sent (Heroku's ``drains:add``).

A drain is a URL and a token (``d.<uuid>``, Heroku's form). ``syslog://`` and
``syslog+tls://`` drains get RFC 5424 messages over TCP, octet-counted (RFC 6587);
``https://`` drains get POSTs of several such frames, ``application/logplex-1``.
This module holds the pure parts: the URL's rules and the frames.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from urllib.parse import urlsplit

from dynod.errors import InvalidArgument

# Heroku: up to 5 drains per app (devcenter limits).
MAX_DRAINS = 5
MAX_URL = 2048


class Scheme(StrEnum):
    SYSLOG = "syslog"
    SYSLOG_TLS = "syslog+tls"
    HTTPS = "https"


@dataclass(frozen=True)
class Drain:
    app: str
    token: str  # d.<uuid>, immutable
    url: str
    created_at: datetime


@dataclass(frozen=True)
class Target:
    """Where a drain's bytes go: parsed from its URL by :func:`parse_url`."""

    scheme: Scheme
    host: str
    port: int
    path: str = "/"  # https: the request target, with its query

    @property
    def tls(self) -> bool:
        return self.scheme is not Scheme.SYSLOG


def make_token() -> str:
    return f"d.{uuid.uuid4()}"


def is_token(text: str) -> bool:
    if not text.startswith("d."):
        return False
    try:
        uuid.UUID(text[2:])
    except ValueError:
        return False
    return True


def parse_url(url: str) -> Target:
    """Raises InvalidArgument naming what is wrong with the URL and how to write it."""
    example = "use syslog://HOST:PORT, syslog+tls://HOST:PORT or https://HOST/PATH"
    if not url or len(url) > MAX_URL or any(c.isspace() for c in url):
        raise InvalidArgument(f"drain URL {url!r} is not a URL; {example}")
    if "://" not in url:
        raise InvalidArgument(f"drain URL {url!r} has no scheme; {example}")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidArgument(f"drain URL {url!r}: {exc}; {example}") from None
    try:
        scheme = Scheme(parts.scheme.lower())
    except ValueError:
        raise InvalidArgument(f"drain URL {url!r}: unknown scheme {parts.scheme!r}; "
                              f"{example}") from None
    host = parts.hostname or ""
    if not host:
        raise InvalidArgument(f"drain URL {url!r} has no host; {example}")
    if scheme is Scheme.HTTPS:
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        return Target(scheme, host, port or 443, path)
    if port is None:
        raise InvalidArgument(f"drain URL {url!r} has no port; syslog drains need one, "
                              f"e.g. {scheme}://{host}:6514")
    if parts.path not in ("", "/") or parts.query:
        raise InvalidArgument(f"drain URL {url!r}: a syslog drain has no path; "
                              f"use {scheme}://{host}:{port}")
    return Target(scheme, host, port)


# Heroku's PRI values as its drains show them: app output local7.info, platform and API
# events syslog.notice, router lines local3.info, Logplex's own L10 local5.warning.
def priority(app_name: str, process: str) -> int:
    if app_name == "heroku" and process == "router":
        return 158
    if app_name == "heroku" and process == "logplex":
        return 172
    if app_name == "heroku" or process == "api":
        return 45
    return 190


def frame(when: datetime, token: str, app_name: str, process: str, message: str) -> bytes:
    """One octet-counted RFC 5424 message as Logplex writes it:
    ``LEN <PRI>1 TIMESTAMP HOST APP PROC - - MSG\n``, HOST being the drain's token, APP
    ``app`` or ``heroku``, PROC ``web.1``, ``router``, ``api``. LEN counts the message
    with its newline, as in Heroku's HTTPS drain example (``83 <40>1 2012-11-30T...``),
    so frames simply follow each other in a TCP stream or a POST body."""
    stamp = when.astimezone(UTC).isoformat(timespec="microseconds")
    body = (f"<{priority(app_name, process)}>1 {stamp} {token} {app_name} "
            f"{process or '-'} - - {message}\n").encode("utf-8", "replace")
    return str(len(body)).encode() + b" " + body


def overflow_message(dropped: int, since: datetime) -> str:
    """Heroku's L10, sent as ``heroku[logplex]`` to the drain that lost the lines."""
    stamp = since.astimezone(UTC).isoformat(timespec="seconds")
    return f"Error L10 (output buffer overflow): {dropped} messages dropped since {stamp}."
