"""dynoctl healthcheck, healthcheck:set PATH, healthcheck:clear (issue 7).

An app's optional HTTP health check, like Dokku's checks: during a rollout a new web
dyno joins the router only once it answers ``GET PATH`` with 2xx or 3xx (not merely
once it listens on $PORT), and a release whose web dynos never do is not rolled out.
Stored as the config var DYNO_HEALTHCHECK_PATH, so a change is a release of its own and
rolls out (and is checked) like any other.
"""

from __future__ import annotations

import argparse

from dynod.cli import client, output
from dynod.cli.client import CliError, call
from dynod.cli.rollout import wait_rollout
from dynod.v1 import config_pb2, config_pb2_grpc

VAR = "DYNO_HEALTHCHECK_PATH"  # dynod.runtime.plan.HEALTHCHECK_VAR


def stub() -> config_pb2_grpc.ConfigStub:
    return config_pb2_grpc.ConfigStub(client.channel())


def cmd_show(args: argparse.Namespace) -> int:
    app = client.app_of(args)
    path = call(stub().Get, config_pb2.GetConfigRequest(app=app)).vars.get(VAR, "")
    if args.json:
        output.print_json({"path": path})
    elif path:
        print(f"{output.app_label(app)}: web dynos are up once GET {path} answers 2xx or 3xx")
    else:
        print(f"{output.app_label(app)} has no health check: web dynos are up once they "
              "listen on $PORT")
    return 0


def cmd_set(args: argparse.Namespace) -> int:
    app = client.app_of(args)
    path: str = args.path
    if not path.startswith("/") or any(c.isspace() for c in path):
        raise CliError(f'"{path}" is not an HTTP path; give one like /health')
    reply = call(stub().Set, config_pb2.SetConfigRequest(app=app, vars={VAR: path}))
    if args.json:
        output.print_json(reply.release)
        return 0
    output.action(f"Setting health check GET {path} and restarting {output.app_label(app)}",
                  f"v{reply.release.version}")
    wait_rollout(app, reply.release.version)
    return 0


def cmd_clear(args: argparse.Namespace) -> int:
    app = client.app_of(args)
    reply = call(stub().Unset, config_pb2.UnsetConfigRequest(app=app, keys=[VAR]))
    if args.json:
        output.print_json(reply.release)
        return 0
    output.action(f"Clearing the health check and restarting {output.app_label(app)}",
                  f"v{reply.release.version}")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser],
             common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("healthcheck", parents=[common],
                       help="show the HTTP path new web dynos must answer before routing")
    p.set_defaults(func=cmd_show)
    p = sub.add_parser("healthcheck:set", parents=[common],
                       help="new web dynos join the router once GET PATH answers 2xx/3xx")
    p.add_argument("path", metavar="PATH", help="an HTTP path, e.g. /health")
    p.set_defaults(func=cmd_set)
    p = sub.add_parser("healthcheck:clear", parents=[common],
                       help="no health check: web dynos are up once they listen on $PORT")
    p.set_defaults(func=cmd_clear)
