"""The Drains service: an app's log drains."""

from __future__ import annotations

import grpc

from dynod.api.daemon import Daemon, timestamp
from dynod.api.peer import caller_of
from dynod.control import drains
from dynod.model.drains import Drain
from dynod.v1 import drains_pb2, drains_pb2_grpc


def drain_to_proto(d: Drain) -> drains_pb2.Drain:
    return drains_pb2.Drain(token=d.token, url=d.url, created_at=timestamp(d.created_at),
                            app=d.app)


class DrainsServicer(drains_pb2_grpc.DrainsServicer):
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    def List(
        self, request: drains_pb2.ListDrainsRequest, context: grpc.ServicerContext
    ) -> drains_pb2.ListDrainsResponse:
        caller_of(context)
        return drains_pb2.ListDrainsResponse(drains=[
            drain_to_proto(d) for d in drains.list_drains(self.daemon.store, request.app)])

    def Add(
        self, request: drains_pb2.AddDrainRequest, context: grpc.ServicerContext
    ) -> drains_pb2.AddDrainResponse:
        caller_of(context)
        return drains_pb2.AddDrainResponse(drain=drain_to_proto(drains.add_drain(
            self.daemon.store, self.daemon.events, request.app, request.url,
            self.daemon.drain_probe)))

    def Remove(
        self, request: drains_pb2.RemoveDrainRequest, context: grpc.ServicerContext
    ) -> drains_pb2.RemoveDrainResponse:
        caller_of(context)
        return drains_pb2.RemoveDrainResponse(drain=drain_to_proto(drains.remove_drain(
            self.daemon.store, self.daemon.events, request.app, request.url_or_token)))


def register(server: grpc.Server, daemon: Daemon) -> str:
    drains_pb2_grpc.add_DrainsServicer_to_server(DrainsServicer(daemon), server)
    return str(drains_pb2.DESCRIPTOR.services_by_name["Drains"].full_name)
