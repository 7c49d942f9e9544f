"""dynoctl apps, apps:create, apps:info, apps:destroy."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from dynod.cli import client, output
from dynod.cli.client import CliError, call
from dynod.v1 import apps_pb2, apps_pb2_grpc


def stub() -> apps_pb2_grpc.AppsStub:
    return apps_pb2_grpc.AppsStub(client.channel())


def cmd_apps(args: argparse.Namespace) -> int:
    reply = call(stub().List, apps_pb2.ListAppsRequest())
    if args.json:
        output.print_json(list(reply.apps))
        return 0
    if not reply.apps:
        print("You have no apps.")
        return 0
    output.header(f"{getpass.getuser()} Apps")
    for app in reply.apps:
        print(app.name)
    return 0


def cmd_create(args: argparse.Namespace) -> int:
    name = args.name or args.app or ""
    reply = call(stub().Create, apps_pb2.CreateAppRequest(name=name))
    if args.json:
        output.print_json(reply.app)
        return 0
    if name:
        output.action(f"Creating {output.app_label(name)}")
    else:
        output.action("Creating app", output.app_label(reply.app.name))
    print(reply.app.web_url)
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    reply = call(stub().Get, apps_pb2.GetAppRequest(name=client.app_of(args)))
    if args.json:
        output.print_json(reply)
        return 0
    app = reply.app
    dynos = ", ".join(f"{t}: {n}" for t, n in sorted(reply.dynos.items()))
    fields: list[tuple[str, Any]] = [
        ("Created", output.ago(output.when(app.created_at))),
        ("Dynos", dynos),
        ("Owner", app.owner),
        ("Release", f"v{app.current_release}"),
        ("Web URL", app.web_url),
    ]
    if args.shell:
        for key, value in fields:
            print(f"{key.lower().replace(' ', '_')}={value}")
        return 0
    output.header(output.app_label(app.name))
    output.styled_object([(k, str(v)) for k, v in fields])
    return 0


def cmd_destroy(args: argparse.Namespace) -> int:
    app = args.name or client.app_of(args)
    confirm = args.confirm
    if confirm is None and sys.stdin.isatty():
        output.warn(f"WARNING: This will delete {output.app_label(app)} and all its "
                    "releases, config vars and slugs.")
        output.warn(f"To proceed, type {app} or re-run this command with --confirm {app}")
        confirm = input("\n> ").strip()
    if confirm != app:
        raise CliError(
            f"confirmation did not match {app}; re-run with --confirm {app} to destroy it"
            if confirm is not None else
            f"destroying {app} needs confirmation; re-run with --confirm {app}"
        )
    call(stub().Delete, apps_pb2.DeleteAppRequest(name=app))
    if args.json:
        output.print_json({"name": app, "destroyed": True})
        return 0
    output.action(f"Destroying {output.app_label(app)}")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser],
             common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("apps", parents=[common], help="list your apps")
    p.set_defaults(func=cmd_apps)
    p = sub.add_parser("apps:create", aliases=["create"], parents=[common],
                       help="create an app (a random name if none is given)")
    p.add_argument("name", nargs="?", help="the app's name")
    p.set_defaults(func=cmd_create)
    p = sub.add_parser("apps:info", aliases=["info"], parents=[common], help="show an app")
    p.add_argument("-s", "--shell", action="store_true", help="print as KEY=value lines")
    p.set_defaults(func=cmd_info)
    p = sub.add_parser("apps:destroy", aliases=["destroy"], parents=[common],
                       help="delete an app and everything it owns")
    p.add_argument("name", nargs="?", help="the app (or use -a)")
    p.add_argument("--confirm", metavar="NAME", help="the app's name, to skip the prompt")
    p.set_defaults(func=cmd_destroy)
