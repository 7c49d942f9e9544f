"""dynoctl releases, releases:info, rollback."""

from __future__ import annotations

import argparse
import re

from dynod.cli import client, output
from dynod.cli.client import CliError, call
from dynod.v1 import addons_pb2, addons_pb2_grpc, releases_pb2, releases_pb2_grpc

# Heroku's default page: 15 releases (releases/index.ts).
DEFAULT_NUM = 15


def stub() -> releases_pb2_grpc.ReleasesStub:
    return releases_pb2_grpc.ReleasesStub(client.channel())


def parse_version(text: str | None) -> int:
    """``v12`` or ``12`` -> 12; None -> 0 (the server's default)."""
    if text is None:
        return 0
    m = re.fullmatch(r"v?(\d+)", text.strip())
    if not m or int(m.group(1)) < 1:
        raise CliError(f"{text} is not a release version; use vN, e.g. v3")
    return int(m.group(1))


def status_suffix(status: str) -> str:
    # heroku/cli src/lib/releases/status-helper.ts
    return {"failed": " release command failed",
            "pending": " release command executing"}.get(status, "")


def cmd_releases(args: argparse.Namespace) -> int:
    app = client.app_of(args)
    reply = call(stub().List, releases_pb2.ListReleasesRequest(app=app, limit=args.num))
    if args.json:
        output.print_json(list(reply.releases))
        return 0
    if not reply.releases:
        print(f"{app} has no releases.")
        return 0
    current = next((r.version for r in reply.releases if r.current), None)
    title = f"{output.app_label(app)} Releases"
    output.header(title + (f" - Current: v{current}" if current else ""))
    output.table([
        [f"v{r.version}", r.description + status_suffix(r.status), r.user,
         output.ago(output.when(r.created_at))]
        for r in reply.releases
    ])
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    app = client.app_of(args)
    reply = call(stub().Get, releases_pb2.GetReleaseRequest(
        app=app, version=parse_version(args.version)))
    r = reply.release
    if args.json:
        output.print_json(r)
        return 0
    output.header(f"Release v{r.version}")
    output.styled_object([
        ("By", r.user),
        ("Change", r.description + status_suffix(r.status)),
        ("Current", "Yes" if r.current else "No"),
        ("Slug", r.slug_id or "(none)"),
        ("When", output.ago(output.when(r.created_at))),
    ])
    print()
    output.header(f"v{r.version} Config vars")
    config = dict(sorted(r.config.items()))
    if args.shell:
        for key, value in config.items():
            print(f"{key}={output.shell_quote(value)}")
    else:
        output.styled_object(config)
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    app = client.app_of(args)
    reply = call(stub().Rollback, releases_pb2.RollbackReleaseRequest(
        app=app, version=parse_version(args.version)))
    r = reply.release
    if args.json:
        output.print_json(r)
        return 0
    target = r.description.removeprefix("Rollback to ")
    output.action(f"Rolling back {output.app_label(app)} to {target}", f"v{r.version}")
    output.warn("Rollback affects code and config vars; it doesn't add or remove addons.")
    attached = call(addons_pb2_grpc.AddonsStub(client.channel()).List,
                    addons_pb2.ListAddonsRequest(app=app)).addons
    kept = sorted({a.config_var for addon in attached for a in addon.attachments
                   if a.app == app})
    if kept:
        output.warn(f"Add-on config vars kept: {', '.join(kept)}")
    output.warn(f"To undo, run: dynoctl rollback v{r.version - 1}")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser],
             common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("releases", parents=[common], help="list releases, newest first")
    p.add_argument("-n", "--num", type=int, default=DEFAULT_NUM,
                   help=f"how many (default {DEFAULT_NUM})")
    p.set_defaults(func=cmd_releases)
    p = sub.add_parser("releases:info", parents=[common],
                       help="show a release and its config vars")
    p.add_argument("version", nargs="?", metavar="vN", help="default: the current release")
    p.add_argument("-s", "--shell", action="store_true", help="config vars as KEY=value")
    p.set_defaults(func=cmd_info)
    p = sub.add_parser("rollback", aliases=["releases:rollback"], parents=[common],
                       help="make a new release copying vN's slug and config vars")
    p.add_argument("version", nargs="?", metavar="vN",
                   help="default: the release before the current one")
    p.set_defaults(func=cmd_rollback)
