"""dynoctl logs: an app's log stream in Heroku's format."""

from __future__ import annotations

import argparse
import json
from datetime import UTC

import grpc

from dynod.cli import client, output
from dynod.v1 import logs_pb2, logs_pb2_grpc


def format_line(line: logs_pb2.LogLine) -> str:
    """``2010-09-16T15:13:46.677020+00:00 app[web.1]: message`` (Logplex's format)."""
    when = output.when(line.time).astimezone(UTC).isoformat(timespec="microseconds")
    process = f"[{line.dyno}]" if line.dyno else ""
    return f"{when} {line.source}{process}: {line.message}"


def cmd_logs(args: argparse.Namespace) -> int:
    app = client.app_of(args)
    stub = logs_pb2_grpc.LogsStub(client.channel())
    request = logs_pb2.TailLogsRequest(app=app, lines=args.num or 0, follow=args.tail,
                                       dyno=args.dyno or "", source=args.source or "")
    try:
        for line in stub.Tail(request, timeout=None if args.tail else 60):
            if args.json:
                print(json.dumps(output.to_dict(line)), flush=True)
            else:
                print(format_line(line), flush=True)
    except grpc.RpcError as exc:
        raise client.explain(exc) from exc
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser],
             common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("logs", parents=[common],
                       help="display recent log output (app, dynod, router, api)")
    p.add_argument("-n", "--num", type=int, help="number of lines (default 100, max 1500)")
    p.add_argument("-t", "--tail", action="store_true",
                   help="keep streaming new lines until interrupted")
    p.add_argument("-d", "--dyno", "--dyno-name", "-p", "--ps", dest="dyno",
                   help="only this dyno (web.1) or process type (web)")
    p.add_argument("-s", "--source", help="only this source: app or dynod")
    p.set_defaults(func=cmd_logs)
