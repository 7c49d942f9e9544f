"""The System service: Version."""

from __future__ import annotations

import grpc

from dynod import __version__
from dynod.api.daemon import Daemon
from dynod.errors import Unavailable
from dynod.system import hostinfo
from dynod.v1 import system_pb2, system_pb2_grpc


class SystemServicer(system_pb2_grpc.SystemServicer):
    def __init__(self) -> None:
        try:
            self._systemd = str(hostinfo.systemd_version())
        except Unavailable:  # as before the split: the version is information only
            self._systemd = "unknown"
        self._layout = hostinfo.cgroup_layout()

    def Version(
        self, request: system_pb2.VersionRequest, context: grpc.ServicerContext
    ) -> system_pb2.VersionResponse:
        return system_pb2.VersionResponse(
            version=__version__,
            api_version="v1",
            systemd_version=self._systemd,
            cgroup_layout=self._layout,
        )


def register(server: grpc.Server, daemon: Daemon) -> str:
    system_pb2_grpc.add_SystemServicer_to_server(SystemServicer(), server)
    return str(system_pb2.DESCRIPTOR.services_by_name["System"].full_name)
