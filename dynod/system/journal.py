"""Write structured entries to journald: the app's log stream and dynod's own events.

journald is the only log store. Every entry that belongs to an app's stream carries
``DYNOD_APP``, ``DYNOD_SOURCE`` (``app`` or ``dynod``) and ``DYNOD_DYNO`` (``web.1``,
``api``, ``router``), so ``dynoctl logs`` can find and print it the Heroku way:
``app[web.1]``, ``dynod[web.1]``, ``app[api]``, ``dynod[router]``.

Uses journald's native datagram protocol (systemd.journal-native(7)); no libsystemd.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import threading
from collections.abc import Mapping
from pathlib import Path

log = logging.getLogger(__name__)

JOURNAL_SOCKET = "/run/systemd/journal/socket"
# journald's stream socket (StandardOutput=journal, sd_journal_stream_fd(3)).
STDOUT_SOCKET = Path("/run/systemd/journal/stdout")
SYSLOG_IDENTIFIER = "dynod"

# Field names of an app's stream (also set by dyno units through LogExtraFields=).
APP = "DYNOD_APP"
SOURCE = "DYNOD_SOURCE"
DYNO = "DYNOD_DYNO"
RELEASE = "DYNOD_RELEASE"
# Router lines come several to an entry (MESSAGE holds them, one a line); this field
# holds their times, one per line, in µs since the epoch.
TIMES = "DYNOD_TIMES"


def encode(fields: Mapping[str, str]) -> bytes:
    """One entry in the native protocol: ``KEY=value\\n``, or length-prefixed if binary."""
    out = bytearray()
    for key, value in fields.items():
        raw = value.encode()
        if b"\n" in raw:
            out += key.encode() + b"\n" + struct.pack("<Q", len(raw)) + raw + b"\n"
        else:
            out += key.encode() + b"=" + raw + b"\n"
    return bytes(out)


def send(message: str, *, priority: int = 6, socket_path: str = JOURNAL_SOCKET,
         **fields: str) -> None:
    """Send one entry. Never raises: losing a log line must not fail an operation."""
    entry = {"MESSAGE": message, "PRIORITY": str(priority),
             "SYSLOG_IDENTIFIER": SYSLOG_IDENTIFIER, **fields}
    data = encode(entry)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(data, socket_path)
    except OSError as exc:
        log.debug("journal unavailable (%s): %s", exc, message)


def app_event(app: str, dyno: str, message: str, *, source: str = "dynod",
              priority: int = 6, **fields: str) -> None:
    """An entry of ``app``'s stream, e.g. ``app_event("shop", "web.1", "State changed
    from starting to up")`` -> ``dynod[web.1]: State changed from starting to up``."""
    send(message, priority=priority, **{APP: app, SOURCE: source, DYNO: dyno}, **fields)


def api_event(app: str, message: str) -> None:
    """``app[api]: Release v5 created by user jane`` (Heroku prints API events as app)."""
    app_event(app, "api", message, source="app")



def link_stdout_socket(directory: Path, socket_path: Path = STDOUT_SOCKET) -> None:
    """Make ``directory/stdout`` a hard link of journald's stream socket, and nothing
    else in ``directory``: dynos get that directory as their /run/systemd/journal, so
    dyno-init can open a new stream when journald dropped its own, and no dyno reaches
    the native socket (whose entries may carry any field, another app's DYNOD_APP too).
    A socket re-made by ``systemd-journald.socket`` is a new inode: its drop-in
    (systemd/systemd-journald.socket.d/dynod.conf) links it again; this covers a link
    made before that drop-in was installed. Never raises: without the link, a dyno's
    output still reaches journald, only not across a stop of journald."""
    link = directory / "stdout"
    try:
        directory.mkdir(mode=0o755, parents=True, exist_ok=True)
        want = socket_path.stat()
        try:
            have = link.stat()
            if (have.st_dev, have.st_ino) == (want.st_dev, want.st_ino):
                return
        except FileNotFoundError:
            pass
        tmp = directory / f".stdout.{os.getpid()}.{threading.get_ident()}"
        tmp.unlink(missing_ok=True)
        os.link(socket_path, tmp)
        tmp.replace(link)
    except OSError as exc:
        log.warning("dynos cannot reconnect to journald after it stops: linking %s to "
                    "%s: %s", socket_path, link, exc)
