"""The Dynos service: ps, ps:restart, ps:stop over the supervisor."""

from __future__ import annotations

from datetime import UTC, datetime

import grpc

from dynod.api.daemon import Daemon, timestamp
from dynod.api.peer import caller_of
from dynod.control import formation
from dynod.errors import Unavailable
from dynod.model.dynos import DynoInfo
from dynod.runtime.cluster_ps import cluster_dynos
from dynod.runtime.supervisor import Supervisor
from dynod.v1 import dynos_pb2, dynos_pb2_grpc


def dyno_to_proto(d: DynoInfo) -> dynos_pb2.Dyno:
    out = dynos_pb2.Dyno(
        name=d.name, type=d.process_type, state=str(d.state),
        since=timestamp(datetime.fromtimestamp(d.since, UTC)), command=d.command,
        size=d.size, release=d.release, unit=d.unit, address=d.address, port=d.port,
        memory_quota_bytes=d.memory_quota, node=d.node,
    )
    if d.memory_bytes is not None:
        out.memory_bytes = d.memory_bytes
    if d.cpu_nsec is not None:
        out.cpu_nsec = d.cpu_nsec
    return out


class DynosServicer(dynos_pb2_grpc.DynosServicer):
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    def _supervisor(self) -> Supervisor:
        if self.daemon.supervisor is None:
            raise Unavailable("this dynod runs no dynos")
        return self.daemon.supervisor

    def List(
        self, request: dynos_pb2.ListDynosRequest, context: grpc.ServicerContext
    ) -> dynos_pb2.ListDynosResponse:
        caller_of(context)
        found = self._supervisor().dynos(request.app)
        cluster = self.daemon.cluster
        if cluster is not None:
            commands = {p.type: p.command
                        for p in formation.get_formation(self.daemon.store, request.app)}
            found = cluster_dynos(cluster.me, found, cluster.located(request.app), commands)
        if self.daemon.oneoffs is not None:  # one-offs first, as Heroku's ps lists them
            found = self.daemon.oneoffs.dynos(request.app) + found
        return dynos_pb2.ListDynosResponse(dynos=[
            dyno_to_proto(d) for d in found if not request.type or d.process_type == request.type
        ])

    def Restart(
        self, request: dynos_pb2.RestartDynosRequest, context: grpc.ServicerContext
    ) -> dynos_pb2.RestartDynosResponse:
        caller_of(context)
        names = self._supervisor().restart(request.app, request.target)
        return dynos_pb2.RestartDynosResponse(dynos=names)

    def Stop(
        self, request: dynos_pb2.StopDynoRequest, context: grpc.ServicerContext
    ) -> dynos_pb2.StopDynoResponse:
        caller_of(context)
        if self.daemon.oneoffs is not None and self.daemon.oneoffs.stop(request.app,
                                                                       request.dyno):
            return dynos_pb2.StopDynoResponse(dynos=[request.dyno])
        names = self._supervisor().stop_dyno(request.app, request.dyno)
        return dynos_pb2.StopDynoResponse(dynos=names)


def register(server: grpc.Server, daemon: Daemon) -> str:
    dynos_pb2_grpc.add_DynosServicer_to_server(DynosServicer(daemon), server)
    return str(dynos_pb2.DESCRIPTOR.services_by_name["Dynos"].full_name)
