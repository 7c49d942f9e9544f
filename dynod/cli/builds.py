"""dynoctl builds, builds:info, builds:output, builds:cache:purge, buildpacks*."""

from __future__ import annotations

import argparse

from dynod.cli import client, output
from dynod.cli.client import CliError, call
from dynod.v1 import builds_pb2, builds_pb2_grpc


def stub() -> builds_pb2_grpc.BuildsStub:
    return builds_pb2_grpc.BuildsStub(client.channel())


def cmd_builds(args: argparse.Namespace) -> int:
    app = client.app_of(args)
    reply = call(stub().List, builds_pb2.ListBuildsRequest(app=app, limit=args.num))
    if args.json:
        output.print_json([output.to_dict(b) for b in reply.builds])
        return 0
    output.header(f"{output.app_label(app)} Builds")
    rows = [[b.id[:8], b.status, b.commit[:8] or "-", b.user,
             output.when(b.created_at).strftime("%Y/%m/%d %H:%M:%S %z")]
            for b in reply.builds]
    output.table(rows)
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    app = client.app_of(args)
    b = call(stub().Get, builds_pb2.GetBuildRequest(app=app, id=args.id or "")).build
    if args.json:
        output.print_json(b)
        return 0
    output.header(f"Build {b.id}")
    output.styled_object([("Status", b.status), ("By", b.user), ("Commit", b.commit or "-"),
                          ("Stack", b.stack), ("Buildpacks", ", ".join(b.buildpacks) or "-"),
                          ("Release", f"v{b.release}" if b.release else "-"),
                          ("Error", b.error or "-"),
                          ("When", output.ago(output.when(b.created_at)))])
    return 0


def cmd_output(args: argparse.Namespace) -> int:
    app = client.app_of(args)
    reply = call(stub().Output, builds_pb2.GetBuildRequest(app=app, id=args.id or ""))
    for line in reply.lines:
        print(line)
    return 0


def cmd_purge(args: argparse.Namespace) -> int:
    app = client.app_of(args)
    reply = call(stub().PurgeCache, builds_pb2.PurgeCacheRequest(app=app))
    output.action(f"Purging build cache of {output.app_label(app)}",
                  f"done, {reply.bytes // 1024} KB freed")
    return 0


def _show(app: str, reply: builds_pb2.BuildpacksResponse) -> None:
    if not reply.buildpacks:
        print(f"{app} has no Buildpack URL set.")  # Heroku's words
        return
    output.header(f"{app} Buildpack URL{'s' if len(reply.buildpacks) > 1 else ''}")
    for i, url in enumerate(reply.buildpacks, 1):
        print(f"{i}. {url}")


def cmd_buildpacks(args: argparse.Namespace) -> int:
    app = client.app_of(args)
    reply = call(stub().GetBuildpacks, builds_pb2.GetBuildpacksRequest(app=app))
    if args.json:
        output.print_json({"buildpacks": list(reply.buildpacks),
                           "builtin": [{"name": b.name, "detects": b.detects}
                                       for b in reply.builtin]})
        return 0
    _show(app, reply)
    print()
    output.header("Built-in buildpacks, in detection order (buildpacks:set NAME)")
    width = max((len(b.name) for b in reply.builtin), default=0) + len("heroku/")
    for b in reply.builtin:
        # Heroku's own buildpacks are heroku/NAME; apt is the community's, procfile dynod's.
        name = b.name if b.name in ("procfile", "apt") else f"heroku/{b.name}"
        print(f"{name:<{width}}  {b.detects}")
    return 0


def _set(app: str, urls: list[str]) -> None:
    reply = call(stub().SetBuildpacks, builds_pb2.SetBuildpacksRequest(app=app, buildpacks=urls))
    print("Buildpacks set. Next release on " + app + " will use:" if urls else
          "Buildpacks cleared. Next release on " + app + " will detect buildpacks normally.")
    if urls:
        for i, url in enumerate(reply.buildpacks, 1):
            print(f"  {i}. {url}")


def cmd_set(args: argparse.Namespace) -> int:
    _set(client.app_of(args), [args.url])
    return 0


def cmd_add(args: argparse.Namespace) -> int:
    app = client.app_of(args)
    current = list(call(stub().GetBuildpacks, builds_pb2.GetBuildpacksRequest(app=app)).buildpacks)
    if args.url in current:
        raise CliError(f"buildpack {args.url} is already set on {app}")
    index = len(current) if args.index is None else max(0, args.index - 1)
    current.insert(index, args.url)
    _set(app, current)
    return 0


def cmd_clear(args: argparse.Namespace) -> int:
    _set(client.app_of(args), [])
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser],
             common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("builds", parents=[common], help="the app's builds, newest first")
    p.add_argument("-n", "--num", type=int, default=15)
    p.set_defaults(func=cmd_builds)
    for name, func, help_ in (("builds:info", cmd_info, "one build (default: the latest)"),
                              ("builds:output", cmd_output, "a build's output")):
        p = sub.add_parser(name, parents=[common], help=help_)
        p.add_argument("id", nargs="?", help="build id (or its first 8 characters)")
        p.set_defaults(func=func)
    p = sub.add_parser("builds:cache:purge", parents=[common], help="delete the build cache")
    p.set_defaults(func=cmd_purge)
    p = sub.add_parser("buildpacks", parents=[common], help="the app's buildpacks")
    p.set_defaults(func=cmd_buildpacks)
    p = sub.add_parser("buildpacks:set", parents=[common], help="use only this buildpack")
    p.add_argument("url", help="nodejs, python, php, go, procfile, a git URL or an absolute path")
    p.set_defaults(func=cmd_set)
    p = sub.add_parser("buildpacks:add", parents=[common], help="add a buildpack")
    p.add_argument("url")
    p.add_argument("-i", "--index", type=int, help="1-based position (default: last)")
    p.set_defaults(func=cmd_add)
    p = sub.add_parser("buildpacks:clear", parents=[common], help="back to detection")
    p.set_defaults(func=cmd_clear)
