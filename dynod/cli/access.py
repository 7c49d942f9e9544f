"""dynoctl access, access:add EMAIL, access:remove EMAIL, apps:transfer EMAIL
(heroku/cli's access and apps:transfer)."""

from __future__ import annotations

import argparse

from dynod.cli import client, output
from dynod.cli.client import app_of, call
from dynod.v1 import auth_pb2, auth_pb2_grpc


def stub() -> auth_pb2_grpc.AccessStub:
    return auth_pb2_grpc.AccessStub(client.channel())


def cmd_access(args: argparse.Namespace) -> int:
    app = app_of(args)
    people = call(stub().List, auth_pb2.ListAccessRequest(app=app)).collaborators
    if args.json:
        output.print_json([output.to_dict(c) for c in people])
        return 0
    output.header(f"{output.app_label(app)} Access List")
    output.table([[c.email, c.role] for c in people])
    return 0


def cmd_add(args: argparse.Namespace) -> int:
    app = app_of(args)
    call(stub().Add, auth_pb2.AddAccessRequest(app=app, email=args.email))
    output.action(f"Adding {args.email} access to the app {app}")
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    app = app_of(args)
    call(stub().Remove, auth_pb2.RemoveAccessRequest(app=app, email=args.email))
    output.action(f"Removing {args.email} access from the app {app}")
    return 0


def cmd_transfer(args: argparse.Namespace) -> int:
    app = app_of(args)
    call(stub().Transfer, auth_pb2.TransferAppRequest(app=app, email=args.email))
    output.action(f"Transferring {output.app_label(app)} to {args.email}")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser],
             common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("access", parents=[common], help="who may use the app")
    p.set_defaults(func=cmd_access)
    for name, func, doc in (("access:add", cmd_add, "let a user use the app"),
                            ("access:remove", cmd_remove, "take a collaborator off the app"),
                            ("apps:transfer", cmd_transfer, "give the app to another user")):
        p = sub.add_parser(name, parents=[common], help=doc)
        p.add_argument("email", metavar="EMAIL")
        p.set_defaults(func=func)
