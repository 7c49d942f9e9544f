"""HAProxy's runtime API: one command per connection on its admin (stats) socket, and
the parsers of what it answers (``show servers state``, ``show stat``)."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

from dynod.errors import Unavailable
from dynod.router.haproxy_config import UNIT


class AdminSocket:
    """One command per connection on HAProxy's admin (stats) socket."""

    def __init__(self, path: Path, timeout: float = 5.0) -> None:
        self.path = path
        self.timeout = timeout

    def __call__(self, command: str) -> str:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(self.timeout)
                s.connect(str(self.path))
                s.sendall(command.encode() + b"\n")
                chunks = []
                while chunk := s.recv(65536):
                    chunks.append(chunk)
        except OSError as exc:
            raise Unavailable(f"router: admin socket {self.path}: {exc}; see "
                              f"`systemctl status {UNIT}`") from exc
        return b"".join(chunks).decode("utf-8", "replace")


@dataclass(frozen=True)
class LiveServer:
    name: str
    ip: str
    port: int
    maintenance: bool


def parse_servers_state(text: str) -> dict[str, list[LiveServer]]:
    """``show servers state`` -> servers by backend name."""
    out: dict[str, list[LiveServer]] = {}
    for line in text.splitlines():
        cols = line.split()
        if len(cols) < 19 or not cols[0].isdigit():
            continue
        admin = int(cols[6])
        out.setdefault(cols[1], []).append(
            LiveServer(cols[3], cols[4], int(cols[18]), maintenance=bool(admin & 0x1)))
    return out


def parse_server_stat(text: str, backend: str, server: str) -> tuple[str, int] | None:
    """``show stat`` CSV -> (status, scur + qcur) of one server, None if absent."""
    head: list[str] = []
    for line in text.splitlines():
        if line.startswith("# "):
            head = line[2:].split(",")
            continue
        cols = line.split(",")
        if not head or len(cols) < len(head) or cols[0] != backend or cols[1] != server:
            continue
        row = dict(zip(head, cols, strict=False))
        busy = sum(int(row.get(k) or 0) for k in ("scur", "qcur"))
        return row.get("status", ""), busy
    return None
