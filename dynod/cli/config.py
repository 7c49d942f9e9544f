"""dynoctl config, config:get, config:set, config:unset."""

from __future__ import annotations

import argparse

from dynod.cli import client, output
from dynod.cli.client import CliError, call
from dynod.v1 import config_pb2, config_pb2_grpc


def stub() -> config_pb2_grpc.ConfigStub:
    return config_pb2_grpc.ConfigStub(client.channel())


def cmd_config(args: argparse.Namespace) -> int:
    app = client.app_of(args)
    reply = call(stub().Get, config_pb2.GetConfigRequest(app=app))
    vars_ = dict(sorted(reply.vars.items()))
    if args.json:
        output.print_json(vars_)
    elif args.shell:
        for key, value in vars_.items():
            print(f"{key}={output.shell_quote(value)}")
    else:
        output.header(f"{output.app_label(app)} Config Vars")
        output.styled_object(vars_)
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    reply = call(stub().Get, config_pb2.GetConfigRequest(app=client.app_of(args)))
    if args.json:
        found = [{"key": k, "value": reply.vars.get(k)} for k in args.keys]
        output.print_json(found[0] if len(found) == 1 else found)
        return 0
    for key in args.keys:
        value = reply.vars.get(key, "")
        print(f"{key}={output.shell_quote(value)}" if args.shell else value)
    return 0


def parse_pairs(pairs: list[str]) -> dict[str, str]:
    """``K=V`` arguments, split at the first ``=`` (heroku config:set)."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CliError(f"{pair} is invalid. Must be in the format FOO=bar.")
        out[key] = value
    return out


def cmd_set(args: argparse.Namespace) -> int:
    if not args.pairs:
        raise CliError("Usage: dynoctl config:set KEY1=VALUE1 [KEY2=VALUE2 ...]\n"
                       "Must specify KEY and VALUE to set.")
    changes = parse_pairs(args.pairs)
    app = client.app_of(args)
    reply = call(stub().Set, config_pb2.SetConfigRequest(app=app, vars=changes))
    if args.json:
        output.print_json(reply.release)
        return 0
    output.action(f"Setting {', '.join(changes)} and restarting {output.app_label(app)}",
                  f"v{reply.release.version}")
    output.styled_object(changes)
    return 0


def cmd_unset(args: argparse.Namespace) -> int:
    if not args.keys:
        raise CliError("Usage: dynoctl config:unset KEY1 [KEY2 ...]\n"
                       "Must specify KEY to unset.")
    app = client.app_of(args)
    reply = call(stub().Unset, config_pb2.UnsetConfigRequest(app=app, keys=args.keys))
    if args.json:
        output.print_json(reply.release)
        return 0
    output.action(f"Unsetting {', '.join(args.keys)} and restarting {output.app_label(app)}",
                  f"v{reply.release.version}")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser],
             common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("config", parents=[common], help="show the config vars")
    p.add_argument("-s", "--shell", action="store_true", help="print as KEY=value lines")
    p.set_defaults(func=cmd_config)
    p = sub.add_parser("config:get", parents=[common], help="print config var values")
    p.add_argument("keys", nargs="+", metavar="KEY")
    p.add_argument("-s", "--shell", action="store_true", help="print as KEY=value lines")
    p.set_defaults(func=cmd_get)
    p = sub.add_parser("config:set", aliases=["config:add"], parents=[common],
                       help="set config vars (makes a release)")
    p.add_argument("pairs", nargs="*", metavar="KEY=VALUE")
    p.set_defaults(func=cmd_set)
    p = sub.add_parser("config:unset", aliases=["config:remove"], parents=[common],
                       help="remove config vars (makes a release)")
    p.add_argument("keys", nargs="*", metavar="KEY")
    p.set_defaults(func=cmd_unset)
