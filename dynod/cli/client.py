"""The connection from dynoctl to the daemon, and how failures read to a user."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import grpc

from dynod.cli import output
from dynod.system import processes

DEFAULT_SOCKET = Path(os.environ.get("DYNOD_SOCKET", "/run/dynod/dynod.sock"))
DEFAULT_PORT = 5443  # the API over TLS (api_listen in dynod.toml)

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


def credentials_path() -> Path:
    """Where ``dynoctl login`` keeps the host, the CA it trusts and the token (0600 in
    a 0700 directory): ``$DYNOCTL_CREDENTIALS``, else
    ``$XDG_CONFIG_HOME/dynoctl/credentials.json`` (``~/.config``)."""
    if os.environ.get("DYNOCTL_CREDENTIALS"):
        return Path(os.environ["DYNOCTL_CREDENTIALS"])
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "dynoctl" / "credentials.json"


@dataclass(frozen=True)
class Credentials:
    host: str  # host:port
    email: str
    token: str
    ca_pem: str  # "" for the system's trust store

    def to_json(self) -> str:
        return json.dumps({"host": self.host, "email": self.email, "token": self.token,
                           "ca": self.ca_pem}, indent=1) + "\n"


def load_credentials() -> Credentials | None:
    """None when not logged in. Raises CliError for a file that is not ours."""
    path = credentials_path()
    try:
        raw = json.loads(path.read_text())
        return Credentials(str(raw["host"]), str(raw["email"]), str(raw["token"]),
                           str(raw.get("ca", "")))
    except FileNotFoundError:
        return None
    except PermissionError:
        # Another user's file (HOME left pointing at root's by sudo or systemd-run):
        # not this user's login, so this user talks to the local socket.
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CliError(f"{path}: unreadable ({exc}); remove it and run "
                       "`dynoctl login --host HOST` again") from exc


def save_credentials(creds: Credentials) -> Path:
    """Atomically, 0600 from the start (the token is a password)."""
    path = credentials_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(creds.to_json())
    tmp.replace(path)
    return path


def with_port(host: str) -> str:
    """``HOST`` or ``HOST:PORT`` (``[v6]:PORT``); the default port is 5443."""
    if host.startswith("["):
        return host if "]:" in host else f"{host}:{DEFAULT_PORT}"
    return host if host.count(":") == 1 else (
        f"[{host}]:{DEFAULT_PORT}" if ":" in host else f"{host}:{DEFAULT_PORT}")


def tls_channel(host: str, ca_pem: str, token: str | None) -> grpc.Channel:
    """TLS to ``host`` verified against ``ca_pem`` (the system's roots if empty), with
    the token in every call's metadata (``authorization: Bearer``)."""
    creds = grpc.ssl_channel_credentials(root_certificates=ca_pem.encode() or None)
    if token:
        creds = grpc.composite_channel_credentials(
            creds, grpc.access_token_call_credentials(token))
    return grpc.secure_channel(with_port(host), creds)


def remote() -> Credentials | None:
    """The logged-in host, unless DYNOD_SOCKET says to use a socket."""
    if os.environ.get("DYNOD_SOCKET"):
        return None
    return load_credentials()


def git_url(url: str) -> str:
    """The server's scp-style git URL with the host this machine logged in to (the
    server's own name may not resolve here): ``dynod@HOST:app.git``."""
    creds = remote()
    if creds is None or "@" not in url or ":" not in url:
        return url
    host = creds.host.rsplit(":", 1)[0].strip("[]")
    user, rest = url.split("@", 1)
    return f"{user}@{host}:{rest.split(':', 1)[1]}"


def channel(socket_path: Path | None = None) -> grpc.Channel:
    creds = remote() if socket_path is None else None
    if creds is not None:
        return tls_channel(creds.host, creds.ca_pem, creds.token)
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
        creds = remote()
        if creds is None:
            return CliError(
                f"dynod is not answering on {DEFAULT_SOCKET}; check `systemctl status dynod`"
            )
        return transport_error(creds.host, str(exc.details()))
    return CliError(str(exc.details()))


def transport_error(host: str, details: str) -> CliError:
    """Why a TLS connection to ``host`` failed, and the fix."""
    if "CERTIFICATE_VERIFY_FAILED" in details or "certificate verify failed" in details:
        return CliError(
            f"{host}: the server's certificate is not signed by a CA you trust; log in "
            "again with `dynoctl login --host HOST --ca FILE`, FILE being the server's CA "
            "(`dynoctl certs:ca` on the server prints dynod's own)")
    if "SSL" in details or "handshake" in details.lower():
        return CliError(f"{host}: the TLS handshake failed ({details}); is api_listen on "
                        "this address and port in the server's dynod.toml?")
    return CliError(f"dynod is not answering on {host} ({details}); check the host and "
                    "port, and `systemctl status dynod` on the server")


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
