"""dynoctl ps:scale and ps:type."""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence

from dynod.cli import client, output
from dynod.cli.client import CliError, call
from dynod.v1 import dynos_pb2, dynos_pb2_grpc, formation_pb2, formation_pb2_grpc

# heroku/cli ps/scale.ts: ^([\w-]+)([=+-]\d+)(?::([\w-]+))?$ ; "=-1" is let through so
# the daemon refuses a negative count with its own message.
SCALE_RE = re.compile(r"^([\w-]+)(=-?\d+|[+-]\d+)?(?::([\w-]+))?$")

_LABELS = {"eco": "Eco", "basic": "Basic", "standard-1x": "Standard-1X",
           "standard-2x": "Standard-2X", "performance-m": "Performance-M",
           "performance-l": "Performance-L"}


# One-off dynos (dynoctl run, the release phase), listed first and each with its command.
ONE_OFF_TYPES = ("run", "release")


def label(size: str) -> str:
    return _LABELS.get(size, size)


def stub() -> formation_pb2_grpc.FormationStub:
    return formation_pb2_grpc.FormationStub(client.channel())


def parse_scale(arg: str) -> formation_pb2.ScaleUpdate:
    """``web=3``, ``worker+1``, ``web-1``, ``web=2:standard-2x``, ``web:basic``."""
    m = SCALE_RE.match(arg)
    if not m or (m.group(2) is None and m.group(3) is None):
        raise CliError(f"{arg} is invalid. Use TYPE=N, TYPE+N or TYPE-N, optionally with "
                       ":SIZE, e.g. web=2:standard-2x")
    name, change, size = m.group(1), m.group(2), m.group(3) or ""
    update = formation_pb2.ScaleUpdate(type=name, size=size)
    if change is not None:
        if change.startswith("="):
            update.quantity = int(change[1:])
        else:
            update.delta = int(change)
    return update


def no_types(app: str) -> CliError:
    return CliError(f"No process types on {output.app_label(app)}.\n"
                    "Upload a Procfile to add process types (dynoctl slugs:deploy, or git push).")


def formation_line(processes: Sequence[formation_pb2.Process]) -> str:
    return " ".join(f"{p.type}={p.quantity}:{label(p.size)}" for p in processes)


def cmd_scale(args: argparse.Namespace) -> int:
    app = client.app_of(args)
    if not args.changes:
        reply = call(stub().Get, formation_pb2.GetFormationRequest(app=app))
        if args.json:
            output.print_json(list(reply.processes))
        elif not reply.processes:
            raise no_types(app)
        else:
            print(formation_line(reply.processes))
        return 0
    updates = [parse_scale(a) for a in args.changes]
    scaled = call(stub().Scale, formation_pb2.ScaleFormationRequest(app=app, updates=updates))
    if args.json:
        output.print_json(list(scaled.processes))
        return 0
    changed = {u.type for u in updates}
    now = ", ".join(f"{p.type} at {p.quantity}:{label(p.size)}"
                    for p in scaled.processes if p.type in changed)
    output.action("Scaling dynos", f"now running {now}")
    return 0


def print_types(processes: Sequence[formation_pb2.Process]) -> None:
    output.header("Process Types")
    output.table([["Type", "Size", "Qty", "Memory"]] + [
        [p.type, label(p.size), str(p.quantity), f"{p.memory_mb} MB"] for p in processes
    ])


def cmd_type(args: argparse.Namespace) -> int:
    app = client.app_of(args)
    if not args.sizes:
        current = call(stub().Get, formation_pb2.GetFormationRequest(app=app))
        processes = current.processes
    else:
        updates = []
        for arg in args.sizes:
            name, sep, size = arg.partition("=")
            if sep:
                updates.append(formation_pb2.ResizeUpdate(type=name, size=size))
                continue
            # `ps:type standard-2x`: every process type gets that size (Heroku does this).
            current = call(stub().Get, formation_pb2.GetFormationRequest(app=app))
            updates += [formation_pb2.ResizeUpdate(type=p.type, size=arg)
                        for p in current.processes]
        if not updates:
            raise no_types(app)
        resized = call(stub().Resize, formation_pb2.ResizeFormationRequest(
            app=app, updates=updates))
        processes = resized.processes
        if not args.json:
            output.action(f"Scaling dynos on {output.app_label(app)}")
    if args.json:
        output.print_json(list(processes))
    elif not processes:
        raise no_types(app)
    else:
        print_types(processes)
    return 0


def dynos_stub() -> dynos_pb2_grpc.DynosStub:
    return dynos_pb2_grpc.DynosStub(client.channel())


def usage(d: dynos_pb2.Dyno) -> str:
    """dynod's addition to Heroku's line: memory (and % of quota) and CPU time."""
    parts = []
    if d.HasField("memory_bytes"):
        mem = f"mem={d.memory_bytes / (1024 * 1024):.1f}M"
        if d.memory_quota_bytes:
            mem += f"({100 * d.memory_bytes / d.memory_quota_bytes:.1f}%)"
        parts.append(mem)
    if d.HasField("cpu_nsec"):
        parts.append(f"cpu={d.cpu_nsec / 1e9:.2f}s")
    return ("  " + " ".join(parts)) if parts else ""


def cmd_ps(args: argparse.Namespace) -> int:
    """Heroku's `ps` (heroku/cli ps/index.ts): one group per type, sorted by name."""
    app = client.app_of(args)
    reply = call(dynos_stub().List, dynos_pb2.ListDynosRequest(app=app))
    dynos = [d for d in reply.dynos if not args.types or d.type in args.types]
    if args.json:
        output.print_json(dynos)
        return 0
    if not dynos:
        if args.types:
            raise CliError(f"No {' '.join(args.types)} dynos on {output.app_label(app)}")
        raise CliError(f"No dynos on {output.app_label(app)}")
    groups: dict[str, list[dynos_pb2.Dyno]] = {}
    for d in dynos:
        groups.setdefault(d.type, []).append(d)
    first = True
    for ptype in sorted(groups, key=lambda t: (t not in ONE_OFF_TYPES, t)):
        members = groups[ptype]
        if not first:
            print()
        first = False
        if ptype in ONE_OFF_TYPES:
            # heroku/cli ps/index.ts: "=== run: one-off processes (1)", then
            # "run.4520 (Basic): up 2024/05/01 12:00:00 +0000 (~ 1m ago): bash".
            print(f"=== {ptype}: one-off processes ({len(members)})")
            for d in members:
                print(f"{d.name} ({label(d.size)}): {d.state} "
                      f"{output.ago(output.when(d.since))}: {d.command}{usage(d)}")
            continue
        command = next((d.command for d in members if d.command), "")
        size = next((label(d.size) for d in members if d.size), "")
        print(f"=== {ptype} ({size}): {command} ({len(members)})")
        for d in members:
            # In a cluster, after Heroku's line: where it runs ("... (~ 1m ago) on node-b").
            where = f" on {d.node}" if d.node else ""
            print(f"{d.name}: {d.state} {output.ago(output.when(d.since))}{where}{usage(d)}")
    return 0


def cmd_restart(args: argparse.Namespace) -> int:
    app = client.app_of(args)
    target = args.target or ""
    if not target:
        what = "all dynos"
    elif "." in target:
        what = f"dyno {target}"
    else:
        what = f"all {target} dynos"
    call(dynos_stub().Restart, dynos_pb2.RestartDynosRequest(app=app, target=target))
    output.action(f"Restarting {what} on {output.app_label(app)}")
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    app = client.app_of(args)
    call(dynos_stub().Stop, dynos_pb2.StopDynoRequest(app=app, dyno=args.dyno))
    output.action(f"Stopping {args.dyno} dyno on {output.app_label(app)}")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser],
             common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("ps", parents=[common], help="list the app's dynos")
    p.add_argument("types", nargs="*", metavar="TYPE")
    p.set_defaults(func=cmd_ps)
    p = sub.add_parser("ps:restart", aliases=["restart"], parents=[common],
                       help="restart every dyno, a process type (web) or one dyno (web.1)")
    p.add_argument("target", nargs="?", metavar="DYNO|TYPE")
    p.set_defaults(func=cmd_restart)
    p = sub.add_parser("ps:stop", aliases=["ps:kill"], parents=[common],
                       help="stop one dyno (it starts again as part of the formation)")
    p.add_argument("dyno", metavar="DYNO")
    p.set_defaults(func=cmd_stop)
    p = sub.add_parser("ps:scale", aliases=["scale"], parents=[common],
                       help="scale process types: web=3 worker+1 web-1 web=2:standard-2x")
    p.add_argument("changes", nargs="*", metavar="TYPE=N")
    p.set_defaults(func=cmd_scale)
    p = sub.add_parser("ps:type", aliases=["ps:resize"], parents=[common],
                       help="show or change dyno sizes: web=standard-2x, or one size for all")
    p.add_argument("sizes", nargs="*", metavar="TYPE=SIZE")
    p.set_defaults(func=cmd_type)
