"""dynoctl run, run:detached, releases:output (heroku/cli src/commands/run, lib/run/dyno.ts).

``run`` attaches like ssh: with a terminal on both ends the local one goes to raw mode
(Ctrl-C, Ctrl-D, Ctrl-Z reach the dyno's terminal), its size follows SIGWINCH; without
one, stdin is sent until EOF and the dyno's stdin is closed then.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import queue
import shlex
import signal
import sys
import termios
import threading
import tty
from collections.abc import Iterator
from types import FrameType

import grpc

from dynod.cli import client, output
from dynod.cli.client import CliError, call
from dynod.cli.ps import label
from dynod.cli.releases import parse_version
from dynod.v1 import oneoff_pb2, oneoff_pb2_grpc


def stub() -> oneoff_pb2_grpc.OneOffStub:
    return oneoff_pb2_grpc.OneOffStub(client.channel())


def command_line(argv: list[str]) -> str:
    """Heroku's buildCommand: one argument is a shell command as is (``'echo $DYNO'``),
    several are quoted and joined."""
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        raise CliError("no command given; usage: dynoctl run COMMAND, e.g. dynoctl run bash")
    return argv[0] if len(argv) == 1 else shlex.join(argv)


def parse_env(text: str | None) -> dict[str, str]:
    """``-e "K=V;K2=V2"``."""
    out: dict[str, str] = {}
    for part in (text or "").split(";"):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise CliError(f'-e: "{part}" is not KEY=VALUE; use -e "K=V;K2=V2"')
        out[key.strip()] = value
    return out


def _size() -> tuple[int, int]:
    try:
        size = os.get_terminal_size(sys.stdout.fileno())
    except OSError:
        return 80, 24
    return size.columns, size.lines


class _Requests:
    """The request stream: start, then whatever the stdin thread and SIGWINCH put."""

    def __init__(self, start: oneoff_pb2.StartRun) -> None:
        self.q: queue.Queue[oneoff_pb2.RunRequest | None] = queue.Queue()
        self.q.put(oneoff_pb2.RunRequest(start=start))

    def __iter__(self) -> Iterator[oneoff_pb2.RunRequest]:
        while True:
            item = self.q.get()
            if item is None:
                return
            yield item

    def close(self) -> None:
        self.q.put(None)


def _pump_stdin(requests: _Requests) -> None:
    fd = sys.stdin.fileno()
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:
            data = b""
        if not data:
            requests.q.put(oneoff_pb2.RunRequest(stdin_eof=True))
            return
        requests.q.put(oneoff_pb2.RunRequest(stdin=data))


def cmd_run(args: argparse.Namespace) -> int:
    app = client.app_of(args)
    command = command_line(args.command)
    env = parse_env(args.env)
    use_tty = not args.no_tty and os.isatty(sys.stdin.fileno()) and os.isatty(
        sys.stdout.fileno())
    columns, lines = _size() if use_tty else (0, 0)
    requests = _Requests(oneoff_pb2.StartRun(
        app=app, command=command, size=args.size or "", env=env, tty=use_tty,
        term=os.environ.get("TERM", "xterm") if use_tty else "", columns=columns, lines=lines))
    print(f"Running {command} on {output.app_label(app)}... ", end="", file=sys.stderr,
          flush=True)
    saved: list[object] | None = None
    code: int | None = None
    call_ = stub().Run(iter(requests))
    try:
        for reply in call_:
            what = reply.WhichOneof("what")
            if what == "started":
                print(f"up, {reply.started.dyno} ({label(reply.started.size)})",
                      file=sys.stderr, flush=True)
                if use_tty:
                    saved = termios.tcgetattr(sys.stdin.fileno())
                    tty.setraw(sys.stdin.fileno())

                    def on_winch(_sig: int, _frame: FrameType | None) -> None:
                        cols, rows = _size()
                        requests.q.put(oneoff_pb2.RunRequest(
                            resize=oneoff_pb2.Resize(columns=cols, lines=rows)))

                    signal.signal(signal.SIGWINCH, on_winch)
                threading.Thread(target=_pump_stdin, args=(requests,), daemon=True).start()
            elif what == "stdout":
                os.write(sys.stdout.fileno(), reply.stdout)
            elif what == "stderr":
                os.write(sys.stderr.fileno(), reply.stderr)
            elif what == "exit":
                code = reply.exit
    except grpc.RpcError as exc:
        if code is None:
            if saved is None:
                print("failed", file=sys.stderr)
            raise client.explain(exc) from exc
    finally:
        if saved is not None:
            with contextlib.suppress(termios.error):
                termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, saved)  # type: ignore[arg-type]
        requests.close()
        call_.cancel()
    if code is None:
        raise CliError("the connection to the dyno ended without an exit status")
    if code != 0 and args.exit_code:
        output.warn(f"Process exited with code {code}")
    # ssh's habit, and Heroku's with -x: the dyno's exit status is ours.
    return code


def cmd_detached(args: argparse.Namespace) -> int:
    app = client.app_of(args)
    command = command_line(args.command)
    reply = call(stub().RunDetached, oneoff_pb2.RunDetachedRequest(
        app=app, command=command, size=args.size or "", env=parse_env(args.env)), timeout=120)
    s = reply.started
    if args.json:
        output.print_json(s)
        return 0
    output.action(f"Running {command} on {output.app_label(app)}",
                  f"{s.dyno} ({label(s.size)})")
    print(f"Run dynoctl logs --app {app} --dyno {s.dyno} to view the output.",
          file=sys.stderr)
    return 0


def cmd_release_output(args: argparse.Namespace) -> int:
    app = client.app_of(args)
    status = stream_release_output(app, parse_version(args.version or None), "")
    return 1 if status == "failed" else 0


def stream_release_output(app: str, version: int, status: str) -> str:
    """Print a release phase's output as it comes; return its final status (``status``
    when the stream ends without one)."""
    try:
        for reply in stub().ReleaseOutput(oneoff_pb2.ReleaseOutputRequest(
                app=app, version=version, follow=True), timeout=3700):
            if reply.WhichOneof("what") == "line":
                print(reply.line, flush=True)
            else:
                status = reply.status
    except grpc.RpcError as exc:
        raise client.explain(exc) from exc
    return status


def follow_release(app: str, version: int) -> str:
    """Heroku's deploy output while a release phase runs: ``Running release command...``,
    its output, ``Waiting for release.... done.`` (or ``failed.``). Returns the status."""
    print("Running release command...", file=sys.stderr, flush=True)
    status = stream_release_output(app, version, "pending")
    word = "done." if status == "succeeded" else "failed."
    print(f"Waiting for release.... {word}", file=sys.stderr, flush=True)
    return status


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser],
             common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("run", parents=[common],
                       help="run a command in a one-off dyno, attached to this terminal")
    p.add_argument("-s", "--size", help="dyno size (default: standard-1x)")
    p.add_argument("-e", "--env", help='extra environment: "K=V;K2=V2"')
    p.add_argument("--no-tty", action="store_true", help="no pseudo-terminal, even with one")
    p.add_argument("-x", "--exit-code", action="store_true",
                   help="say the dyno's exit status when it is not 0 (dynoctl exits with it "
                        "anyway)")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="COMMAND")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("run:detached", parents=[common],
                       help="run a command in a one-off dyno; output goes to the app's logs")
    p.add_argument("-s", "--size", help="dyno size (default: standard-1x)")
    p.add_argument("-e", "--env", help='extra environment: "K=V;K2=V2"')
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="COMMAND")
    p.set_defaults(func=cmd_detached)
    p = sub.add_parser("releases:output", parents=[common],
                       help="the output of a release's release command (default: the latest)")
    p.add_argument("version", nargs="?", metavar="vN")
    p.set_defaults(func=cmd_release_output)
