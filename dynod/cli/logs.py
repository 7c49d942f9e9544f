"""dynoctl logs: an app's log stream in Heroku's format."""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC

import grpc

from dynod.cli import client, output
from dynod.v1 import logs_pb2, logs_pb2_grpc


def format_line(line: logs_pb2.LogLine) -> str:
    """``2010-09-16T15:13:46.677020+00:00 app[web.1]: message`` (Logplex's format)."""
    when = output.when(line.time).astimezone(UTC).isoformat(timespec="microseconds")
    process = f"[{line.dyno}]" if line.dyno else ""
    return f"{when} {line.source}{process}: {line.message}"


# A tail outlives dynod restarts: these end a stream without it being the caller's
# fault, so it connects again and resumes after the last line it printed.
_RECONNECT = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED,
              grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}
_RETRY_SECONDS = 0.5


def cmd_logs(args: argparse.Namespace) -> int:
    app = client.app_of(args)
    position = ""
    connected = False  # a stream reached dynod: from then on, failures are retried
    while True:
        request = logs_pb2.TailLogsRequest(app=app, lines=args.num or 0, follow=args.tail,
                                           dyno=args.dyno or "", source=args.source or "",
                                           after=position)
        try:
            stub = logs_pb2_grpc.LogsStub(client.channel())
            for line in stub.Tail(request, timeout=None if args.tail else 60):
                if args.json:
                    print(json.dumps(output.to_dict(line)), flush=True)
                else:
                    print(format_line(line), flush=True)
                position = line.position or position
                connected = True
            connected = True
        except grpc.RpcError as exc:
            if not args.tail or exc.code() not in _RECONNECT:
                raise client.explain(exc) from exc
            if (not connected and exc.code() == grpc.StatusCode.UNAVAILABLE
                    and not client.from_dynod(exc)):
                raise client.explain(exc) from exc  # dynod was not running at the start
            connected = True
        except client.CliError:
            if not args.tail or not connected:
                raise  # dynod was not running when the tail started
        if not args.tail:
            return 0
        # The stream of a tail ended (dynod stopped): connect again, from `position`.
        time.sleep(_RETRY_SECONDS)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser],
             common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("logs", parents=[common],
                       help="display recent log output (app, dynod, router, api)")
    p.add_argument("-n", "--num", type=int, help="number of lines (default 100, max 1500)")
    p.add_argument("-t", "--tail", action="store_true",
                   help="keep streaming new lines until interrupted")
    p.add_argument("-d", "--dyno", "--dyno-name", "-p", "--ps", dest="dyno",
                   help="only this dyno (web.1) or process type (web)")
    p.add_argument("-s", "--source",
                   help="only this source: app, or dynod (Heroku's heroku)")
    p.set_defaults(func=cmd_logs)
