"""dynoctl features, features:enable, features:disable, features:info (and labs:*)."""

from __future__ import annotations

import argparse

from dynod.cli import client, output
from dynod.cli.client import call
from dynod.v1 import features_pb2, features_pb2_grpc


def stub() -> features_pb2_grpc.FeaturesStub:
    return features_pb2_grpc.FeaturesStub(client.channel())


def cmd_features(args: argparse.Namespace) -> int:
    """Heroku's listing: ``[+] name  description`` for enabled ones, ``[ ]`` otherwise."""
    app = client.app_of(args)
    reply = call(stub().List, features_pb2.ListFeaturesRequest(app=app))
    if args.json:
        output.print_json(list(reply.features))
        return 0
    output.header(f"App Features {output.app_label(app)}")
    longest = max((len(f.name) for f in reply.features), default=0)
    for f in reply.features:
        print(f"{'[+]' if f.enabled else '[ ]'} {f.name.ljust(longest)}  {f.description}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    app = client.app_of(args)
    f = call(stub().Get, features_pb2.GetFeatureRequest(app=app, name=args.feature)).feature
    if args.json:
        output.print_json(f)
        return 0
    output.header(f.name)
    output.styled_object([("Description", f.description),
                          ("Enabled", "true" if f.enabled else "false"),
                          ("Docs", f.doc_url)])
    return 0


def cmd_set(args: argparse.Namespace) -> int:
    app = client.app_of(args)
    call(stub().Set, features_pb2.SetFeatureRequest(app=app, name=args.feature,
                                                     enabled=args.enabled))
    verb = "Enabling" if args.enabled else "Disabling"
    output.action(f"{verb} {args.feature} for {output.app_label(app)}")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser],
             common: argparse.ArgumentParser) -> None:
    for topic in ("features", "labs"):
        p = sub.add_parser(topic, parents=[common], help="list the app's features")
        p.set_defaults(func=cmd_features)
        p = sub.add_parser(f"{topic}:info", parents=[common], help="show one feature")
        p.add_argument("feature")
        p.set_defaults(func=cmd_info)
        for verb, on in (("enable", True), ("disable", False)):
            p = sub.add_parser(f"{topic}:{verb}", parents=[common],
                               help=f"{verb} a feature for the app")
            p.add_argument("feature")
            p.set_defaults(func=cmd_set, enabled=on)
