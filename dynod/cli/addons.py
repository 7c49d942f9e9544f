"""dynoctl addons, addons:create, addons:info, addons:destroy, addons:attach,
addons:detach, pg:promote: heroku/cli's add-on commands and their output."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC

from dynod.cli import client, output
from dynod.cli.client import CliError, call
from dynod.v1 import addons_pb2, addons_pb2_grpc

# Provisioning may create the Postgres cluster on first use (initdb): minutes, not seconds.
PROVISION_TIMEOUT = 600.0


def stub() -> addons_pb2_grpc.AddonsStub:
    return addons_pb2_grpc.AddonsStub(client.channel())


def _stop(message: str, result: str) -> None:
    """heroku/cli ux.action with a stop text of its own (``... free``)."""
    print(f"{message}... {result}", file=sys.stderr)


def _plan_short(addon: addons_pb2.Addon) -> str:
    return addon.plan.name.partition(":")[2] or addon.plan.name


def _state(state: str) -> str:
    # heroku/cli formatState: provisioning -> creating, deprovisioned -> errored.
    return {"provisioning": "creating", "deprovisioned": "errored"}.get(state, state)


def _table(header: list[str], rows: list[list[str]]) -> None:
    """heroku/cli hux.table: a header, a rule under it, then the rows; a cell may hold
    several lines (an add-on and its attachments)."""
    cells = [[c.split("\n") for c in row] for row in rows]
    widths = [max([len(h)] + [len(line) for row in cells for line in row[i]])
              for i, h in enumerate(header)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip())
    print("  ".join("─" * w for w in widths))
    for row in cells:
        height = max(len(c) for c in row)
        for n in range(height):
            print("  ".join((c[n] if n < len(c) else "").ljust(w)
                            for c, w in zip(row, widths, strict=True)).rstrip())


def _attachment_lines(addon: addons_pb2.Addon, app: str) -> list[str]:
    atts = sorted(addon.attachments, key=lambda a: (a.app != app, a.app, a.name))
    lines = []
    for n, att in enumerate(atts):
        branch = "└─" if n == len(atts) - 1 else "├─"
        where = "" if att.app == app else f" on {output.app_label(att.app)} app"
        lines.append(f" {branch} as {att.name}{where}")
    return lines


def print_for_app(app: str, addons: list[addons_pb2.Addon]) -> None:
    if not addons:
        print(f"No add-ons for app {app}.")
        return
    rows = []
    for addon in addons:
        owned = addon.app == app
        billed = f"(billed to {output.app_label(addon.app)} app)"
        price = addon.plan.price if owned else billed
        rows.append(["\n".join([f"{addon.service} ({addon.name})",
                                *_attachment_lines(addon, app)]),
                     _plan_short(addon), price, price, _state(addon.state)])
    print()
    _table(["Add-on", "Plan", "Price", "Max Price", "State"], rows)
    print()
    print("The table above shows add-ons and the attachments to the current app "
          f"({app}) or other apps.")


def print_all(addons: list[addons_pb2.Addon]) -> None:
    if not addons:
        print("No add-ons.")
        return
    _table(["Owning App", "Add-on", "Plan", "Price", "Max Price", "State"],
           [[output.app_label(a.app), a.name, a.plan.name, a.plan.price, a.plan.price,
             _state(a.state)] for a in addons])


def cmd_addons(args: argparse.Namespace) -> int:
    app = None
    if not args.all:
        app = args.app or client.app_from_remote(args.remote)
    reply = call(stub().List, addons_pb2.ListAddonsRequest(app=app or ""))
    addons = list(reply.addons)
    if args.json:
        output.print_json(addons)
    elif app:
        print_for_app(app, addons)
    else:
        print_all(addons)
    return 0


def cmd_create(args: argparse.Namespace) -> int:
    app = client.app_of(args)
    spec = args.service_plan
    message = f"Creating {spec} on {output.app_label(app)}"
    try:
        reply = call(stub().Create, addons_pb2.CreateAddonRequest(
            app=app, service_plan=spec, as_name=args.as_name or "", name=args.name or ""),
            timeout=PROVISION_TIMEOUT)
    except CliError:
        _stop(message, "!")
        raise
    if args.json:
        output.print_json(reply)
        return 0
    _stop(f"Creating {reply.addon.plan.name} on {output.app_label(app)}", reply.addon.plan.price)
    print(f"Created {reply.addon.name} as {reply.attachment.config_var}")
    print(f"Run dynoctl addons:info {reply.addon.name} to see its plan's limits.")
    return 0


def limits(addon: addons_pb2.Addon) -> list[tuple[str, str]]:
    """What the plan enforces, and a plain statement of what it does not."""
    plan = addon.plan
    if addon.service == "heroku-redis":
        pairs = [("Connections", f"{plan.connections} (maxclients)"),
                 ("Memory", f"{plan.memory_mb} MB (maxmemory, then eviction)")]
        pairs.append(("Storage", "not limited on disk (the RDB file is the memory's size)"))
        return pairs
    pairs = [("Connections", f"{plan.connections} (CONNECTION LIMIT of its role)")]
    if plan.storage_gb:
        enforced = "enforced" if plan.storage_enforced else (
            "not enforced: PostgreSQL has no per-database quota; pg:info shows the size")
        pairs.append(("Storage", f"{plan.storage_gb:g} GB ({enforced})"))
    else:
        pairs.append(("Storage", "not limited"))
    return pairs


def print_info(addon: addons_pb2.Addon) -> None:
    output.header(addon.name)
    atts = sorted(f"{output.app_label(a.app)}::{a.name}" for a in addon.attachments)
    installed = output.when(addon.created_at).astimezone(UTC)
    pairs = [("Plan", addon.plan.name), ("Price", addon.plan.price),
             ("Max Price", addon.plan.price),
             ("Attachments", atts[0] if atts else ""),
             *[("", more) for more in atts[1:]],
             ("Owning app", output.app_label(addon.app)),
             ("Installed at", installed.strftime("%a %b %d %Y %H:%M:%S GMT+0000")),
             ("State", _state(addon.state)),
             *limits(addon)]
    width = max(len(k) for k, _ in pairs) + 1
    for key, value in pairs:
        label = f"{key}:" if key else ""
        print(f"{label:<{width}} {value}".rstrip())


def cmd_info(args: argparse.Namespace) -> int:
    reply = call(stub().Info, addons_pb2.GetAddonRequest(name=args.addon, app=args.app or ""))
    if args.json:
        output.print_json(reply.addon)
    else:
        print_info(reply.addon)
    return 0


def cmd_destroy(args: argparse.Namespace) -> int:
    confirm = args.confirm
    s = stub()
    found = call(s.Info, addons_pb2.GetAddonRequest(name=args.addon, app=args.app or "")).addon
    if confirm is None and sys.stdin.isatty():
        output.warn("WARNING: Destructive Action")
        output.warn(f"This command will affect the app {found.app}")
        output.warn(f"To proceed, type {found.app} or re-run this command with "
                    f"--confirm {found.app}")
        confirm = input("\n> ").strip()
    message = f"Destroying {found.name} on {output.app_label(found.app)}"
    try:
        reply = call(s.Destroy, addons_pb2.DestroyAddonRequest(
            name=found.name, confirm=confirm or "", app=args.app or ""),
            timeout=PROVISION_TIMEOUT)
    except CliError:
        _stop(message, "!")
        raise
    if args.json:
        output.print_json(reply)
        return 0
    output.action(message)
    return 0


def cmd_attach(args: argparse.Namespace) -> int:
    app = client.app_of(args)
    named = f" as {args.as_name.upper()}" if args.as_name else ""
    message = f"Attaching {args.addon}{named} to {output.app_label(app)}"
    try:
        reply = call(stub().Attach, addons_pb2.AttachAddonRequest(
            name=args.addon, app=app, as_name=args.as_name or ""))
    except CliError:
        _stop(message, "!")
        raise
    if args.json:
        output.print_json(reply)
        return 0
    named = f" as {reply.attachment.name}" if args.as_name else ""
    output.action(f"Attaching {reply.addon.name}{named} to {output.app_label(app)}")
    output.action(f"Setting {reply.attachment.name} config vars and restarting "
                  f"{output.app_label(app)}", f"v{reply.release.version}")
    return 0


def cmd_detach(args: argparse.Namespace) -> int:
    app = client.app_of(args)
    reply = call(stub().Detach, addons_pb2.DetachAddonRequest(attachment=args.attachment,
                                                              app=app))
    if args.json:
        output.print_json(reply)
        return 0
    output.action(f"Detaching {reply.attachment.name} to {reply.addon.name} from "
                  f"{output.app_label(app)}")
    output.action(f"Unsetting {reply.attachment.name} config vars and restarting "
                  f"{output.app_label(app)}", f"v{reply.release.version}")
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    app = client.app_of(args)
    reply = call(stub().Promote, addons_pb2.PromoteAddonRequest(name=args.database, app=app))
    if args.json:
        output.print_json(reply)
        return 0
    if reply.HasField("demoted"):
        _stop("Ensuring an alternate alias for existing DATABASE_URL",
              reply.demoted.config_var)
    output.action(f"Promoting {reply.addon.name} to DATABASE_URL on {output.app_label(app)}")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser],
             common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("addons", parents=[common],
                       help="list add-ons and attachments (an app's, or --all)")
    p.add_argument("-A", "--all", action="store_true", help="every app's add-ons")
    p.set_defaults(func=cmd_addons)
    p = sub.add_parser("addons:create", aliases=["addons:add"], parents=[common],
                       help="provision heroku-postgresql[:PLAN] or heroku-redis[:PLAN]")
    p.add_argument("service_plan", metavar="SERVICE[:PLAN]")
    p.add_argument("--as", dest="as_name", metavar="NAME",
                   help="name of the attachment (its config var is NAME_URL)")
    p.add_argument("--name", help="name of the add-on (default: generated)")
    p.set_defaults(func=cmd_create)
    p = sub.add_parser("addons:info", parents=[common],
                       help="an add-on's plan, limits and attachments")
    p.add_argument("addon", metavar="ADDON")
    p.set_defaults(func=cmd_info)
    p = sub.add_parser("addons:destroy", aliases=["addons:remove"], parents=[common],
                       help="destroy an add-on and its data")
    p.add_argument("addon", metavar="ADDON")
    p.add_argument("-c", "--confirm", metavar="APP", help="the owning app, to skip the prompt")
    p.set_defaults(func=cmd_destroy)
    p = sub.add_parser("addons:attach", parents=[common],
                       help="attach an existing add-on to an app")
    p.add_argument("addon", metavar="ADDON")
    p.add_argument("--as", dest="as_name", metavar="NAME", help="name of the attachment")
    p.set_defaults(func=cmd_attach)
    p = sub.add_parser("addons:detach", parents=[common],
                       help="detach an add-on from an app")
    p.add_argument("attachment", metavar="ATTACHMENT")
    p.set_defaults(func=cmd_detach)
    p = sub.add_parser("pg:promote", parents=[common],
                       help="make a Postgres add-on the app's DATABASE_URL")
    p.add_argument("database", metavar="DATABASE")
    p.set_defaults(func=cmd_promote)
