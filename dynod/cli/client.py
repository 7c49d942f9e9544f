"""The connection from dynoctl to the daemon, and how failures read to a user."""

from __future__ import annotations

import os
from pathlib import Path

import grpc

DEFAULT_SOCKET = Path(os.environ.get("DYNOD_SOCKET", "/run/dynod/dynod.sock"))


class CliError(Exception):
    """Printed as ` !    <message>` on stderr; dynoctl exits 1."""


def channel(socket_path: Path = DEFAULT_SOCKET) -> grpc.Channel:
    if not socket_path.exists():
        raise CliError(
            f"dynod is not running: {socket_path} does not exist; "
            "start it with `systemctl start dynod`"
        )
    if not os.access(socket_path, os.R_OK | os.W_OK):
        raise CliError(
            f"permission denied on {socket_path}; run as root or join group dynod "
            "(`adduser $USER dynod`, then log in again)"
        )
    return grpc.insecure_channel(f"unix:{socket_path}")


def explain(exc: grpc.RpcError) -> CliError:
    """A user-facing error for a failed call."""
    code = exc.code()
    if code == grpc.StatusCode.UNAVAILABLE:
        return CliError(
            f"dynod is not answering on {DEFAULT_SOCKET}; check `systemctl status dynod`"
        )
    return CliError(str(exc.details()))
