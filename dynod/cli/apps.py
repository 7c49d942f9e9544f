"""dynoctl apps, apps:create, apps:info, apps:destroy."""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path
from typing import Any

import dynod
from dynod.cli import client, output
from dynod.cli.client import call
from dynod.system import processes
from dynod.v1 import addons_pb2, addons_pb2_grpc, apps_pb2, apps_pb2_grpc


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


SOURCE_TREE = Path(dynod.__file__).resolve().parents[1]


def git(*argv: str) -> str | None:
    """git's output in the current directory, or None when it fails (not a repository,
    no git installed)."""
    try:
        return processes.output(["git", *argv]).strip()
    except processes.CommandFailed:
        return None


def add_remote(remote: str, url: str) -> None:
    """Heroku's apps:create: in a git work tree, add the remote (a remote of that name
    with another URL is left alone, with a warning)."""
    top = git("rev-parse", "--show-toplevel")
    if not top or Path(top).resolve() == SOURCE_TREE:
        # Not in a work tree; or in dynod's own checkout (development: the sandbox runs
        # commands there), which is never an app to deploy.
        return
    existing = git("remote", "get-url", remote)
    if existing == url:
        return
    if existing is not None:
        output.warn(f"git remote {remote} already points at {existing}; left it alone "
                    f"(to push to the new app: git remote set-url {remote} {url})")
        return
    if git("remote", "add", remote, url) is None:
        output.warn(f"could not add git remote {remote}; add it with: "
                    f"git remote add {remote} {url}")
        return
    print(f"Git remote {remote} added", file=sys.stderr)


def cmd_create(args: argparse.Namespace) -> int:
    name = args.name or args.app or ""
    reply = call(stub().Create, apps_pb2.CreateAppRequest(name=name, stack=args.stack or ""))
    app = reply.app
    if args.json:
        output.print_json(app)
        if not args.no_remote:
            add_remote(args.remote, client.git_url(app.git_url))
        return 0
    stack = f"stack is {app.stack}" if args.stack else ""
    if name:
        output.action(f"Creating {output.app_label(name)}", stack)
    else:
        output.action("Creating app", ", ".join(
            p for p in (output.app_label(app.name), stack) if p))
    print(f"{app.web_url} | {client.git_url(app.git_url)}", flush=True)
    if not args.no_remote:
        add_remote(args.remote, client.git_url(app.git_url))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    reply = call(stub().Get, apps_pb2.GetAppRequest(name=client.app_of(args)))
    if args.json:
        output.print_json(reply)
        return 0
    app = reply.app
    dynos = ", ".join(f"{t}: {n}" for t, n in sorted(reply.dynos.items()))
    # heroku apps:info: the plans of the add-ons the app owns.
    owned = call(addons_pb2_grpc.AddonsStub(client.channel()).List,
                 addons_pb2.ListAddonsRequest(app=app.name)).addons
    fields: list[tuple[str, Any]] = [
        ("Addons", ", ".join(a.plan.name for a in owned if a.app == app.name)),
        ("Created", output.ago(output.when(app.created_at))),
        ("Disk Use", human_bytes(reply.disk_bytes)),
        ("Dynos", dynos),
        ("Git URL", client.git_url(app.git_url)),
        ("Owner", app.owner),
        ("Release", f"v{app.current_release}"),
        ("Router Lines Dropped", _dropped(reply)),
        ("Stack", app.stack),
        ("Web URL", app.web_url),
    ]
    if args.shell:
        for key, value in fields:
            print(f"{key.lower().replace(' ', '_')}={value}")
        return 0
    output.header(output.app_label(app.name))
    output.styled_object([(k, str(v)) for k, v in fields])
    return 0


def _dropped(reply: apps_pb2.GetAppResponse) -> str:
    """Router lines lost (L10), of all apps: ``0``, or ``12 since <time>``."""
    if not reply.router_lines_dropped:
        return "0"
    since = output.when(reply.router_lines_dropped_since)
    return f"{reply.router_lines_dropped} since {since.isoformat(timespec='seconds')}"


def human_bytes(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    value = float(size)
    for unit in ("KB", "MB", "GB"):
        value /= 1024
        if value < 1024 or unit == "GB":
            break
    return f"{value:.1f} {unit}"


def cmd_gc(args: argparse.Namespace) -> int:
    """Remove slugs and slug trees no kept release needs (dynod also does it hourly)."""
    reply = call(stub().Gc, apps_pb2.GcRequest(keep=args.keep or 0), timeout=600)
    if args.json:
        output.print_json(reply)
        return 0
    print(f"Removed {reply.slugs} slugs, {reply.trees} unpacked slug trees and "
          f"{reply.caches} build caches: {human_bytes(reply.bytes)} freed")
    return 0


def cmd_destroy(args: argparse.Namespace) -> int:
    app = args.name or client.app_of(args)
    client.confirm_app(app, args.confirm, [
        f"WARNING: This will delete {output.app_label(app)} including all add-ons, and all "
        "its releases, config vars and slugs."], f"destroying {app}", "destroy it")
    # Confirmed: the add-ons the app owns go with it (Heroku: "including all add-ons").
    call(stub().Delete, apps_pb2.DeleteAppRequest(name=app, destroy_addons=True), timeout=600)
    if args.json:
        output.print_json({"name": app, "destroyed": True})
        return 0
    output.action(f"Destroying {output.app_label(app)} (including all add-ons)")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser],
             common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("apps", parents=[common], help="list your apps")
    p.set_defaults(func=cmd_apps)
    p = sub.add_parser("gc", parents=[common],
                       help="remove slugs past the retention (the last 10 deploys of each app)")
    p.add_argument("--keep", type=int, metavar="N",
                   help="deploys (distinct slugs) to keep per app (10)")
    p.set_defaults(func=cmd_gc)
    p = sub.add_parser("apps:create", aliases=["create"], parents=[common],
                       help="create an app (a random name if none is given)")
    p.add_argument("name", nargs="?", help="the app's name")
    p.add_argument("--stack", help="the stack to build and run on (see dynoctl stacks)")
    p.add_argument("--no-remote", action="store_true", help="do not add a git remote")
    p.set_defaults(func=cmd_create)
    p = sub.add_parser("apps:info", aliases=["info"], parents=[common], help="show an app")
    p.add_argument("-s", "--shell", action="store_true", help="print as KEY=value lines")
    p.set_defaults(func=cmd_info)
    p = sub.add_parser("apps:destroy", aliases=["destroy"], parents=[common],
                       help="delete an app and everything it owns")
    p.add_argument("name", nargs="?", help="the app (or use -a)")
    p.add_argument("--confirm", metavar="NAME", help="the app's name, to skip the prompt")
    p.set_defaults(func=cmd_destroy)
