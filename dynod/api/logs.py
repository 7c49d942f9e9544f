"""The Logs service: journalctl behind a server stream."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import grpc

from dynod.api.daemon import Daemon, timestamp
from dynod.api.peer import caller_of
from dynod.control import apps, logs
from dynod.errors import Unavailable
from dynod.system import processes
from dynod.v1 import logs_pb2, logs_pb2_grpc


def journal_opener(opened: list[processes.Lines], cancelled: threading.Event | None = None,
                   ) -> Callable[[list[str]], processes.Lines]:
    """Starts journalctl for :func:`dynod.control.logs.stream`, keeping each in
    ``opened`` for the caller to close; none once ``cancelled``. Raises Unavailable."""
    def open_source(argv: list[str]) -> processes.Lines:
        if cancelled is not None and cancelled.is_set():
            raise Unavailable("journal: the stream was cancelled")
        try:
            source = processes.Lines(argv)
        except processes.CommandFailed as exc:
            raise Unavailable(f"journal: {exc}") from exc
        opened.append(source)
        return source
    return open_source


class LogsServicer(logs_pb2_grpc.LogsServicer):
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    def Tail(
        self, request: logs_pb2.TailLogsRequest, context: grpc.ServicerContext
    ) -> Iterator[logs_pb2.LogLine]:
        caller_of(context)
        apps.get_app(self.daemon.store, request.app)
        query = logs.make_query(request.app, request.lines, request.follow, request.dyno,
                                request.source, after=request.after)
        opened: list[processes.Lines] = []
        cancelled = threading.Event()
        open_source = journal_opener(opened, cancelled)

        # A cancelled stream (Ctrl-C in dynoctl logs --tail) ends journalctl --follow.
        def stop() -> None:
            cancelled.set()
            for source in opened:
                source.close()

        context.add_callback(stop)
        try:
            for line in logs.stream(query, open_source):
                yield logs_pb2.LogLine(time=timestamp(line.time), source=line.source,
                                       dyno=line.dyno, message=line.message,
                                       position=line.position)
        finally:
            for source in opened:
                source.close()

def register(server: grpc.Server, daemon: Daemon) -> str:
    logs_pb2_grpc.add_LogsServicer_to_server(LogsServicer(daemon), server)
    return str(logs_pb2.DESCRIPTOR.services_by_name["Logs"].full_name)
