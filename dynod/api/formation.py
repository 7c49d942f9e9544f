"""The Formation service."""

from __future__ import annotations

import grpc

from dynod.api.daemon import Daemon
from dynod.api.peer import caller_of
from dynod.control import formation
from dynod.model import sizes
from dynod.model.formation import Process, ScaleChange
from dynod.v1 import formation_pb2, formation_pb2_grpc


def process_to_proto(p: Process) -> formation_pb2.Process:
    return formation_pb2.Process(type=p.type, quantity=p.quantity, size=p.size,
                                 command=p.command, memory_mb=sizes.SIZES[p.size].memory_mb)


def change_of(update: formation_pb2.ScaleUpdate) -> ScaleChange:
    which = update.WhichOneof("change")
    return ScaleChange(
        type=update.type,
        quantity=update.quantity if which == "quantity" else None,
        delta=update.delta if which == "delta" else None,
        size=update.size or None,
    )


class FormationServicer(formation_pb2_grpc.FormationServicer):
    def __init__(self, daemon: Daemon) -> None:
        self.store = daemon.store
        self.daemon = daemon

    def Get(
        self, request: formation_pb2.GetFormationRequest, context: grpc.ServicerContext
    ) -> formation_pb2.GetFormationResponse:
        caller_of(context)
        found = formation.get_formation(self.store, request.app)
        return formation_pb2.GetFormationResponse(processes=[process_to_proto(p) for p in found])

    def Scale(
        self, request: formation_pb2.ScaleFormationRequest, context: grpc.ServicerContext
    ) -> formation_pb2.ScaleFormationResponse:
        user = caller_of(context).name
        found = formation.scale(self.store, self.daemon.events, request.app,
                                [change_of(u) for u in request.updates], user,
                                cluster=self.daemon.cluster)
        return formation_pb2.ScaleFormationResponse(processes=[process_to_proto(p) for p in found])

    def Resize(
        self, request: formation_pb2.ResizeFormationRequest, context: grpc.ServicerContext
    ) -> formation_pb2.ResizeFormationResponse:
        user = caller_of(context).name
        found = formation.resize(self.store, self.daemon.events, request.app,
                                 {u.type: u.size for u in request.updates}, user,
                                 cluster=self.daemon.cluster)
        return formation_pb2.ResizeFormationResponse(processes=[process_to_proto(p) for p in found])


def register(server: grpc.Server, daemon: Daemon) -> str:
    formation_pb2_grpc.add_FormationServicer_to_server(FormationServicer(daemon), server)
    return str(formation_pb2.DESCRIPTOR.services_by_name["Formation"].full_name)
