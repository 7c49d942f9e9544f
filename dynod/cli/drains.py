"""dynoctl drains, drains:add URL, drains:remove URL|TOKEN (Heroku's log drains)."""

from __future__ import annotations

import argparse
import json
from datetime import UTC
from typing import Any

from dynod.cli import client, output
from dynod.cli.client import call
from dynod.v1 import drains_pb2, drains_pb2_grpc


def stub() -> drains_pb2_grpc.DrainsStub:
    return drains_pb2_grpc.DrainsStub(client.channel())


def drain_json(d: drains_pb2.Drain) -> dict[str, Any]:
    """Heroku's log-drain object (Platform API), with dynod's own ``app``."""
    created = output.when(d.created_at).astimezone(UTC).isoformat(timespec="seconds")
    created = created.replace("+00:00", "Z")
    return {"addon": None, "app": {"name": d.app}, "created_at": created,
            "id": d.token.removeprefix("d."), "token": d.token, "updated_at": created,
            "url": d.url}


def cmd_drains(args: argparse.Namespace) -> int:
    """Heroku: ``=== Drains`` then ``URL (TOKEN)`` a line; nothing when there are none."""
    app = client.app_of(args)
    reply = call(stub().List, drains_pb2.ListDrainsRequest(app=app))
    if args.json:
        print(json.dumps([drain_json(d) for d in reply.drains], indent=2))
        return 0
    if reply.drains:
        output.header("Drains")
        for d in reply.drains:
            print(f"{d.url} ({d.token})")
    return 0


def cmd_add(args: argparse.Namespace) -> int:
    app = client.app_of(args)
    d = call(stub().Add, drains_pb2.AddDrainRequest(app=app, url=args.url)).drain
    if args.json:
        print(json.dumps(drain_json(d), indent=2))
        return 0
    print(f"Successfully added drain {d.url}")
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    app = client.app_of(args)
    d = call(stub().Remove, drains_pb2.RemoveDrainRequest(app=app,
                                                          url_or_token=args.url)).drain
    if args.json:
        print(json.dumps(drain_json(d), indent=2))
        return 0
    print(f"Successfully removed drain {d.url}")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser],
             common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("drains", parents=[common], help="display the log drains of an app")
    p.set_defaults(func=cmd_drains)
    p = sub.add_parser("drains:add", parents=[common], help="adds a log drain to an app")
    p.add_argument("url", help="syslog://HOST:PORT, syslog+tls://HOST:PORT or "
                               "https://HOST/PATH")
    p.set_defaults(func=cmd_add)
    p = sub.add_parser("drains:remove", parents=[common],
                       help="removes a log drain from an app")
    p.add_argument("url", metavar="URL|TOKEN", help="the drain's URL or token")
    p.set_defaults(func=cmd_remove)
