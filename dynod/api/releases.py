"""The Releases service."""

from __future__ import annotations

import grpc

from dynod.api.daemon import Daemon, timestamp
from dynod.api.peer import caller_of
from dynod.control import releases
from dynod.model.releases import Release, ReleaseStatus
from dynod.v1 import releases_pb2, releases_pb2_grpc


def release_to_proto(
    release: Release, *, current: bool, with_config: bool = True
) -> releases_pb2.Release:
    return releases_pb2.Release(
        app=release.app, version=release.version, description=release.description,
        user=release.user, created_at=timestamp(release.created_at),
        slug_id=release.slug_id or "", config=dict(release.config) if with_config else {},
        status=str(release.status), current=current, failure=release.failure,
    )


class ReleasesServicer(releases_pb2_grpc.ReleasesServicer):
    def __init__(self, daemon: Daemon) -> None:
        self.store = daemon.store
        self.daemon = daemon

    def List(
        self, request: releases_pb2.ListReleasesRequest, context: grpc.ServicerContext
    ) -> releases_pb2.ListReleasesResponse:
        caller_of(context)
        found = releases.list_releases(self.store, request.app, request.limit or None)
        running = releases.get_release(self.store, request.app).version
        return releases_pb2.ListReleasesResponse(releases=[
            release_to_proto(r, current=r.version == running, with_config=False) for r in found
        ])

    def Get(
        self, request: releases_pb2.GetReleaseRequest, context: grpc.ServicerContext
    ) -> releases_pb2.GetReleaseResponse:
        caller_of(context)
        release = releases.get_release(self.store, request.app, request.version or None)
        latest = releases.get_release(self.store, request.app)
        return releases_pb2.GetReleaseResponse(
            release=release_to_proto(release, current=release.version == latest.version))

    def Create(
        self, request: releases_pb2.CreateReleaseRequest, context: grpc.ServicerContext
    ) -> releases_pb2.CreateReleaseResponse:
        user = caller_of(context).name
        release = releases.create_release(self.store, self.daemon.events, request.app,
                                          request.slug_id, user,
                                          description=request.description or None)
        return releases_pb2.CreateReleaseResponse(release=release_to_proto(
            release, current=release.status is ReleaseStatus.SUCCEEDED))

    def Rollback(
        self, request: releases_pb2.RollbackReleaseRequest, context: grpc.ServicerContext
    ) -> releases_pb2.RollbackReleaseResponse:
        user = caller_of(context).name
        release = releases.rollback(self.store, self.daemon.events, request.app,
                                    request.version or None, user)
        return releases_pb2.RollbackReleaseResponse(release=release_to_proto(
            release, current=release.status is ReleaseStatus.SUCCEEDED))


def register(server: grpc.Server, daemon: Daemon) -> str:
    releases_pb2_grpc.add_ReleasesServicer_to_server(ReleasesServicer(daemon), server)
    return str(releases_pb2.DESCRIPTOR.services_by_name["Releases"].full_name)
