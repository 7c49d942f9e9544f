"""dynoctl stacks, stacks:build [NAME] [--layer L], stacks:set NAME."""

from __future__ import annotations

import argparse

import grpc

from dynod.cli import client, output
from dynod.cli.client import call
from dynod.v1 import stacks_pb2, stacks_pb2_grpc


def stub() -> stacks_pb2_grpc.StacksStub:
    return stacks_pb2_grpc.StacksStub(client.channel())


def cmd_stacks(args: argparse.Namespace) -> int:
    reply = call(stub().List, stacks_pb2.ListStacksRequest())
    if args.json:
        output.print_json([output.to_dict(s) for s in reply.stacks])
        return 0
    output.header("Stacks")
    for s in reply.stacks:
        mark = "*" if s.default else " "
        state = f"built, Python {s.python}" if s.built else "not built"
        print(f"{mark} {s.name}  ({s.suite}, {state})")
        for layer in s.layers:
            made = "built" if layer.built else "made on first use"
            print(f"    +{layer.name:<5} {layer.runtimes} (for {', '.join(layer.buildpacks)}; "
                  f"{made})")
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    try:
        request = stacks_pb2.BuildStackRequest(name=args.name or "", layers=args.layer)
        for reply in stub().Build(request, timeout=3600):
            if reply.HasField("stack"):
                print(f"Stack {reply.stack.name} is built.", flush=True)
            else:
                print(reply.line, flush=True)
    except grpc.RpcError as exc:
        raise client.explain(exc) from exc
    return 0


def cmd_set(args: argparse.Namespace) -> int:
    app = client.app_of(args)
    reply = call(stub().SetAppStack, stacks_pb2.SetAppStackRequest(app=app, stack=args.name))
    print(f"Stack set. Next release on {output.app_label(app)} will use {reply.stack}.")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser],
             common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("stacks", parents=[common], help="the stacks and which are built")
    p.set_defaults(func=cmd_stacks)
    p = sub.add_parser("stacks:build", parents=[common], help="build a stack (debootstrap)")
    p.add_argument("name", nargs="?", help="default: the default stack")
    p.add_argument("--layer", action="append", default=[],
                   help="also build this language layer (ruby, jvm, php, go); repeatable")
    p.set_defaults(func=cmd_build)
    p = sub.add_parser("stacks:set", parents=[common], help="set the app's stack")
    p.add_argument("name")
    p.set_defaults(func=cmd_set)
