"""dynoctl stacks, stacks:build [NAME] [--layer L], stacks:set NAME; and Heroku's
spelling of the app's side: stack (apps:stacks), stack:set NAME (apps:stacks:set)."""

from __future__ import annotations

import argparse

import grpc

from dynod.cli import client, output
from dynod.cli.client import call
from dynod.v1 import apps_pb2, apps_pb2_grpc, stacks_pb2, stacks_pb2_grpc


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


def cmd_app_stacks(args: argparse.Namespace) -> int:
    """Heroku's `heroku stack`: the stacks, the app's marked."""
    app = client.app_of(args)
    current = call(apps_pb2_grpc.AppsStub(client.channel()).Get,
                   apps_pb2.GetAppRequest(name=app)).app.stack
    reply = call(stub().List, stacks_pb2.ListStacksRequest())
    if args.json:
        output.print_json([{**output.to_dict(s), "current": s.name == current}
                           for s in reply.stacks])
        return 0
    output.header(f"{output.app_label(app)} Available Stacks")
    for s in reply.stacks:
        python = f"  (Python {s.python})" if s.built else ""
        print(f"{'*' if s.name == current else ' '} {s.name}{python}")
    return 0


def cmd_app_stack_set(args: argparse.Namespace) -> int:
    """Heroku's `heroku stack:set NAME`: the next build uses it; the running release
    keeps its own stack until then."""
    app = client.app_of(args)
    reply = call(stub().SetAppStack, stacks_pb2.SetAppStackRequest(app=app, stack=args.name))
    output.action(f"Setting stack to {reply.stack}")
    label = output.app_label(app)
    print(f"You will need to redeploy {label} for the change to take effect.")
    print(f"Run git push dynod main to trigger a new build on {label}.")
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
    p = sub.add_parser("stack", aliases=["apps:stacks"], parents=[common],
                       help="the stacks, the app's marked with *")
    p.set_defaults(func=cmd_app_stacks)
    p = sub.add_parser("stack:set", aliases=["apps:stacks:set"], parents=[common],
                       help="build the app's next release on another stack")
    p.add_argument("name", metavar="STACK")
    p.set_defaults(func=cmd_app_stack_set)
