"""``dynoctl``: Heroku's CLI habits over dynod's gRPC API."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

import grpc

from dynod import __version__
from dynod.cli import access as access_cli
from dynod.cli import acm as acm_cli
from dynod.cli import addons as addons_cli
from dynod.cli import apps, auth, client, config, ps, releases, slugs
from dynod.cli import builds as builds_cli
from dynod.cli import cluster as cluster_cli
from dynod.cli import deploy as deploy_cli
from dynod.cli import domains as domains_cli
from dynod.cli import drains as drains_cli
from dynod.cli import features as features_cli
from dynod.cli import healthcheck as healthcheck_cli
from dynod.cli import keys as keys_cli
from dynod.cli import logs as logs_cli
from dynod.cli import pg as pg_cli
from dynod.cli import run as run_cli
from dynod.cli import stacks as stacks_cli
from dynod.cli.client import CliError
from dynod.v1 import system_pb2, system_pb2_grpc

Command = Callable[[argparse.Namespace], int]


def cmd_version(_args: argparse.Namespace) -> int:
    print(f"dynoctl {__version__}")
    try:
        stub = system_pb2_grpc.SystemStub(client.channel())
        reply = stub.Version(system_pb2.VersionRequest(client_version=__version__), timeout=10)
    except CliError as exc:
        raise CliError(f"daemon: unreachable: {exc}") from exc
    except grpc.RpcError as exc:
        raise CliError(f"daemon: unreachable: {client.explain(exc)}") from exc
    print(f"dynod {reply.version} (API {reply.api_version}, systemd {reply.systemd_version}, "
          f"cgroup {reply.cgroup_layout})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dynoctl", description="drive dynod")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    version = sub.add_parser("version", help="client and daemon versions")
    version.set_defaults(func=cmd_version)
    # Options every app command takes (heroku/cli: -a/--app, -r/--remote, --json).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-a", "--app", help="the app (default: from the git remote)")
    common.add_argument("-r", "--remote", default="dynod",
                        help="git remote to take the app from (default dynod)")
    common.add_argument("--json", action="store_true", help="print JSON for scripts")
    for noun in (apps, config, releases, ps, slugs, logs_cli, domains_cli,
                 builds_cli, deploy_cli, keys_cli, stacks_cli, run_cli, healthcheck_cli,
                 addons_cli, pg_cli, acm_cli, features_cli, auth, access_cli,
                 drains_cli, cluster_cli):
        noun.register(sub, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Command = args.func
    try:
        return func(args)
    except CliError as exc:
        for line in str(exc).splitlines() or [""]:
            print(f" !    {line}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
