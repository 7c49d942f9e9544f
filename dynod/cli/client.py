"""The connection from dynoctl to the daemon, and how failures read to a user."""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import grpc

from dynod.cli import output
from dynod.system import processes

DEFAULT_SOCKET = Path(os.environ.get("DYNOD_SOCKET", "/run/dynod/dynod.sock"))

T = TypeVar("T")


class CliError(Exception):
    """Printed as ` !    <message>` on stderr (each line); dynoctl exits 1."""


def confirm_app(app: str, given: str | None, warnings: Sequence[str], doing: str,
                to_do: str) -> None:
    """Heroku's confirmation of a destructive command: ``--confirm APP`` (``given``) or,
    on a terminal, APP typed after the ``warnings``. Raises CliError with the fix
    (``doing``: "destroying shop", ``to_do``: "destroy it")."""
    if given is None and sys.stdin.isatty():
        for line in warnings:
            output.warn(line)
        output.warn(f"To proceed, type {app} or re-run this command with --confirm {app}")
        given = input("\n> ").strip()
    if given != app:
        raise CliError(
            f"confirmation did not match {app}; re-run with --confirm {app} to {to_do}"
            if given is not None else
            f"{doing} needs confirmation; re-run with --confirm {app}")


def channel(socket_path: Path | None = None) -> grpc.Channel:
    socket_path = socket_path or Path(os.environ.get("DYNOD_SOCKET", str(DEFAULT_SOCKET)))
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


def from_dynod(exc: grpc.RpcError) -> bool:
    """Raised by dynod itself (it marks its errors), not by the transport."""
    trailing = getattr(exc, "trailing_metadata", None)
    metadata = trailing() if callable(trailing) else None
    return any(key == "dynod-error" for key, _ in metadata or ())


def explain(exc: grpc.RpcError) -> CliError:
    """A user-facing error for a failed call."""
    code = exc.code()
    if code == grpc.StatusCode.UNAVAILABLE and not from_dynod(exc):
        return CliError(
            f"dynod is not answering on {DEFAULT_SOCKET}; check `systemctl status dynod`"
        )
    return CliError(str(exc.details()))


def call(fn: Callable[..., T], request: object, timeout: float = 30.0) -> T:
    """Call one RPC; a failure becomes the CliError to print."""
    try:
        return fn(request, timeout=timeout)
    except grpc.RpcError as exc:
        raise explain(exc) from exc


def app_from_remote(remote: str, cwd: Path | None = None) -> str | None:
    """The app a git remote points at: the last path part of its URL, without ``.git``
    (``dynod@host:shop.git``, ``ssh://dynod@host/shop``, ``/var/lib/dynod/repos/shop.git``).
    None outside a git checkout or without that remote."""
    try:
        url = processes.output(["git", "-C", str(cwd or Path.cwd()), "config", "--get",
                          f"remote.{remote}.url"], timeout=10).strip()
    except processes.CommandFailed:
        return None
    name = re.split(r"[/:]", url.rstrip("/"))[-1].removesuffix(".git")
    return name or None


def app_of(args: argparse.Namespace) -> str:
    """``-a/--app``, else the app of the git remote (``-r``, default ``dynod``)."""
    if args.app:
        return str(args.app)
    app = app_from_remote(args.remote)
    if app is None:
        raise CliError(
            "no app specified; use -a APP, or run this in a git checkout that has a "
            f"remote named {args.remote}"
        )
    return app
