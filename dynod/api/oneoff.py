"""The OneOff service: attached and detached one-off dynos, and release-phase output."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import grpc

from dynod.api.daemon import Daemon
from dynod.api.peer import caller_of
from dynod.errors import InvalidArgument, Unavailable
from dynod.model.releases import ReleaseStatus
from dynod.runtime.dynos import unit_of
from dynod.runtime.oneoff import OneOffDyno, OneOffs, Stdio, Terminal
from dynod.runtime.release_phase import ReleasePhase
from dynod.v1 import oneoff_pb2, oneoff_pb2_grpc

log = logging.getLogger(__name__)


def started(d: OneOffDyno) -> oneoff_pb2.Started:
    return oneoff_pb2.Started(dyno=d.name, size=d.meta.size, release=d.meta.release,
                              command=d.meta.command)


class OneOffServicer(oneoff_pb2_grpc.OneOffServicer):
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    def _oneoffs(self) -> OneOffs:
        if self.daemon.oneoffs is None:
            raise Unavailable("this dynod runs no dynos")
        return self.daemon.oneoffs

    def _phase(self) -> ReleasePhase:
        if self.daemon.release_phase is None:
            raise Unavailable("this dynod runs no release phase")
        return self.daemon.release_phase

    def Run(
        self, request_iterator: Iterator[oneoff_pb2.RunRequest], context: grpc.ServicerContext
    ) -> Iterator[oneoff_pb2.RunResponse]:
        user = caller_of(context).name
        oneoffs = self._oneoffs()
        first = next(request_iterator, None)
        if first is None or first.WhichOneof("what") != "start":
            raise InvalidArgument("the first message of Run must be start")
        s = first.start
        d = oneoffs.start(
            s.app, s.command, user=user, size=s.size, env=dict(s.env),
            stdio=Stdio.TTY if s.tty else Stdio.PIPES,
            terminal=Terminal(s.term, s.columns or 80, s.lines or 24))

        def on_done() -> None:
            # The call ended: normally (the dyno exited) or the client went away.
            if not d.finished.is_set():
                threading.Thread(target=oneoffs.hang_up, args=(d,), daemon=True,
                                 name=f"hangup {unit_of(d.ref)}").start()

        context.add_callback(on_done)

        def pump() -> None:
            try:
                for req in request_iterator:
                    what = req.WhichOneof("what")
                    if what == "stdin":
                        oneoffs.write_stdin(d, req.stdin)
                    elif what == "resize":
                        oneoffs.resize(d, req.resize.columns, req.resize.lines)
                    elif what == "stdin_eof":
                        oneoffs.close_stdin(d)
            except Exception as exc:  # the client went away: on_done hangs up
                log.debug("run %s: requests ended: %s", d.name, exc)

        threading.Thread(target=pump, daemon=True, name=f"stdin {unit_of(d.ref)}").start()
        yield oneoff_pb2.RunResponse(started=started(d))
        for name, data in oneoffs.output(d):
            if not context.is_active():
                break
            if name == "stderr":
                yield oneoff_pb2.RunResponse(stderr=data)
            else:
                yield oneoff_pb2.RunResponse(stdout=data)
        if d.finished.is_set() and d.exit_status is not None:
            yield oneoff_pb2.RunResponse(exit=d.exit_status)

    def RunDetached(
        self, request: oneoff_pb2.RunDetachedRequest, context: grpc.ServicerContext
    ) -> oneoff_pb2.RunDetachedResponse:
        user = caller_of(context).name
        d = self._oneoffs().start(request.app, request.command, user=user, size=request.size,
                                  env=dict(request.env), stdio=Stdio.JOURNAL)
        return oneoff_pb2.RunDetachedResponse(started=started(d))

    def ReleaseOutput(
        self, request: oneoff_pb2.ReleaseOutputRequest, context: grpc.ServicerContext
    ) -> Iterator[oneoff_pb2.ReleaseOutputResponse]:
        caller_of(context)
        for version, item in self._phase().follow(request.app, request.version or None,
                                                  follow=request.follow):
            if not context.is_active():
                return
            if isinstance(item, ReleaseStatus):
                yield oneoff_pb2.ReleaseOutputResponse(status=str(item), version=version)
            else:
                yield oneoff_pb2.ReleaseOutputResponse(line=item, version=version)


def register(server: grpc.Server, daemon: Daemon) -> str:
    oneoff_pb2_grpc.add_OneOffServicer_to_server(OneOffServicer(daemon), server)
    return str(oneoff_pb2.DESCRIPTOR.services_by_name["OneOff"].full_name)
