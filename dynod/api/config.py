"""The Config service."""

from __future__ import annotations

import grpc

from dynod.api.daemon import Daemon
from dynod.api.peer import caller_of
from dynod.api.releases import release_to_proto
from dynod.control import config_vars
from dynod.v1 import config_pb2, config_pb2_grpc


class ConfigServicer(config_pb2_grpc.ConfigServicer):
    def __init__(self, daemon: Daemon) -> None:
        self.store = daemon.store
        self.daemon = daemon

    def Get(
        self, request: config_pb2.GetConfigRequest, context: grpc.ServicerContext
    ) -> config_pb2.GetConfigResponse:
        caller_of(context)
        release = config_vars.get_config(self.store, request.app)
        return config_pb2.GetConfigResponse(vars=dict(release.config), version=release.version)

    def Set(
        self, request: config_pb2.SetConfigRequest, context: grpc.ServicerContext
    ) -> config_pb2.SetConfigResponse:
        user = caller_of(context).name
        release = config_vars.set_config(self.store, self.daemon.events, request.app,
                                         dict(request.vars), user)
        return config_pb2.SetConfigResponse(release=release_to_proto(release, current=True))

    def Unset(
        self, request: config_pb2.UnsetConfigRequest, context: grpc.ServicerContext
    ) -> config_pb2.UnsetConfigResponse:
        user = caller_of(context).name
        release = config_vars.unset_config(self.store, self.daemon.events, request.app,
                                           list(request.keys), user)
        return config_pb2.UnsetConfigResponse(release=release_to_proto(release, current=True))


def register(server: grpc.Server, daemon: Daemon) -> str:
    config_pb2_grpc.add_ConfigServicer_to_server(ConfigServicer(daemon), server)
    return str(config_pb2.DESCRIPTOR.services_by_name["Config"].full_name)
