"""dynoctl login --host, logout, auth:whoami, auth:token, authorizations[:revoke], and
the administrator's users:add and users (heroku/cli's auth and authorizations)."""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

import grpc

from dynod.cli import client, output
from dynod.cli.client import CliError, Credentials, call
from dynod.v1 import auth_pb2, auth_pb2_grpc


def stub() -> auth_pb2_grpc.AuthStub:
    return auth_pb2_grpc.AuthStub(client.channel())


def _ask(prompt: str, *, secret: bool = False) -> str:
    """From the terminal; from stdin when there is none (scripts pipe it)."""
    if sys.stdin.isatty():
        return getpass.getpass(prompt) if secret else input(prompt)
    print(prompt, end="", file=sys.stderr, flush=True)
    line = sys.stdin.readline()
    if not secret:
        print(line.rstrip("\n"), file=sys.stderr)
    else:
        print(file=sys.stderr)
    return line.rstrip("\n")


def cmd_login(args: argparse.Namespace) -> int:
    ca_pem = ""
    if args.ca is not None:
        try:
            ca_pem = Path(args.ca).read_text()
        except OSError as exc:
            raise CliError(f"{args.ca}: {exc.strerror}; give the server's CA certificate "
                           "(PEM, `dynoctl certs:ca` on the server)") from exc
    host = client.with_port(args.host)
    print("dynoctl: Enter your login credentials", file=sys.stderr)
    email = args.email or _ask("Email: ")
    password = _ask("Password: ", secret=True)
    request = auth_pb2.LoginRequest(email=email, password=password,
                                    description=args.description,
                                    expires_in=args.expires_in or 0)
    try:
        reply = auth_pb2_grpc.AuthStub(client.tls_channel(host, ca_pem, None)).Login(
            request, timeout=60)
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.UNAVAILABLE:
            raise client.transport_error(host, str(exc.details())) from exc
        raise CliError(str(exc.details())) from exc
    client.save_credentials(Credentials(host, reply.token.email, reply.secret, ca_pem))
    print(f"Logged in as {reply.token.email}")
    return 0


def cmd_logout(_args: argparse.Namespace) -> int:
    creds = client.load_credentials()
    if creds is None:
        raise CliError("not logged in")
    # Heroku: "clears local login credentials and invalidates API session". A token
    # the server no longer takes is cleared all the same.
    try:
        tokens = client.call(stub().ListTokens, auth_pb2.ListTokensRequest()).tokens
        mine = [t for t in tokens if t.description == "dynoctl" and t.email == creds.email]
        if len(mine) == 1:
            call(stub().RevokeToken, auth_pb2.RevokeTokenRequest(id=mine[0].id))
    except CliError:
        pass
    client.credentials_path().unlink(missing_ok=True)
    output.action("Logging out")
    return 0


def cmd_whoami(_args: argparse.Namespace) -> int:
    if client.remote() is None and not client.DEFAULT_SOCKET.exists():
        raise CliError("not logged in; run `dynoctl login --host HOST`")
    print(call(stub().WhoAmI, auth_pb2.WhoAmIRequest()).name)
    return 0


def cmd_token(_args: argparse.Namespace) -> int:
    creds = client.load_credentials()
    if creds is None:
        raise CliError("not logged in; run `dynoctl login --host HOST`")
    print(creds.token)
    return 0


def cmd_authorizations(args: argparse.Namespace) -> int:
    tokens = call(stub().ListTokens, auth_pb2.ListTokensRequest()).tokens
    if args.json:
        output.print_json([output.to_dict(t) for t in tokens])
        return 0
    if not tokens:
        print("No OAuth authorizations.")
        return 0
    output.table([[t.description, t.id, "global"] for t in tokens])
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    call(stub().RevokeToken, auth_pb2.RevokeTokenRequest(id=args.id))
    output.action(f"Revoking OAuth Authorization {args.id}")
    return 0


def cmd_users_add(args: argparse.Namespace) -> int:
    reply = call(stub().AddUser, auth_pb2.AddUserRequest(email=args.email, reset=args.reset))
    output.action(f"{'Resetting' if args.reset else 'Adding'} {reply.email}")
    print(f"One-time password: {reply.password}")
    print(f"Hand it to {reply.email}; they sign in with `dynoctl login --host HOST`.")
    return 0


def cmd_users(_args: argparse.Namespace) -> int:
    emails = call(stub().ListUsers, auth_pb2.ListUsersRequest()).emails
    if not emails:
        print("There are no users. Add one with `dynoctl users:add EMAIL`.")
        return 0
    output.header("Users")
    for email in emails:
        print(email)
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser],
             common: argparse.ArgumentParser) -> None:
    for name in ("login", "auth:login"):
        p = sub.add_parser(name, help="sign in to a dynod over TLS, keep a token")
        p.add_argument("--host", required=True, help="HOST or HOST:PORT (default port "
                       f"{client.DEFAULT_PORT})")
        p.add_argument("--ca", help="the server's CA certificate (PEM) to trust, if it is "
                       "not in the system's trust store (dynod's own: `dynoctl certs:ca`)")
        p.add_argument("--email", help="skip the prompt")
        p.add_argument("-e", "--expires-in", type=int, metavar="SECONDS",
                       help="the token's lifetime (default a year)")
        p.add_argument("--description", default="dynoctl", help=argparse.SUPPRESS)
        p.set_defaults(func=cmd_login)
    for name in ("logout", "auth:logout"):
        sub.add_parser(name, help="forget and revoke this machine's token").set_defaults(
            func=cmd_logout)
    for name in ("auth:whoami", "whoami"):
        sub.add_parser(name, help="who you are signed in as").set_defaults(func=cmd_whoami)
    sub.add_parser("auth:token", help="print this machine's API token").set_defaults(
        func=cmd_token)
    p = sub.add_parser("authorizations", parents=[common], help="your API tokens")
    p.set_defaults(func=cmd_authorizations)
    p = sub.add_parser("authorizations:revoke", help="revoke a token by id")
    p.add_argument("id")
    p.set_defaults(func=cmd_revoke)
    p = sub.add_parser("users:add", help="add a user (root on the server)")
    p.add_argument("email")
    p.add_argument("--reset", action="store_true", help="a new password for a known user")
    p.set_defaults(func=cmd_users_add)
    sub.add_parser("users", help="users who may sign in").set_defaults(func=cmd_users)
