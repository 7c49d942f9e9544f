"""The Builds service: a build streams its output while it runs."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

import grpc

from dynod.api.daemon import Daemon, timestamp
from dynod.api.peer import caller_of
from dynod.build import pipeline
from dynod.control import builds, keys
from dynod.errors import DynodError, InvalidArgument
from dynod.model.builds import BUILTIN_BUILDPACKS, BUILTIN_DETECTS, Build, BuildSettings
from dynod.v1 import builds_pb2, builds_pb2_grpc

# Callers that may say which ssh key pushed: dynod's git user (the hook) and root.
KEY_TRUSTED = frozenset({"dynod", "root"})


def build_to_proto(build: Build) -> builds_pb2.Build:
    msg = builds_pb2.Build(
        id=build.id, app=build.app, status=str(build.status), user=build.user,
        created_at=timestamp(build.created_at), stack=build.stack, commit=build.commit,
        buildpacks=list(build.buildpacks), slug_id=build.slug_id, release=build.release,
        error=build.error)
    if build.finished_at is not None:
        msg.finished_at.CopyFrom(timestamp(build.finished_at))
    return msg


class BuildsServicer(builds_pb2_grpc.BuildsServicer):
    def __init__(self, daemon: Daemon, builder: pipeline.Builder) -> None:
        self.daemon = daemon
        self.builder = builder

    def Create(
        self, request_iterator: Iterator[builds_pb2.CreateBuildRequest],
        context: grpc.ServicerContext,
    ) -> Iterator[builds_pb2.CreateBuildResponse]:
        caller = caller_of(context).name
        first = next(request_iterator, None)
        if first is None or not first.app:
            raise InvalidArgument("build: the first message must name the app")
        user = caller
        if first.key_id:
            if caller not in KEY_TRUSTED:
                raise InvalidArgument("key_id is only for dynod's git user; leave it empty")
            key = keys.get_key(self.daemon.store, first.key_id)
            keys.require_push(self.daemon.store, key, first.app)
            user = key.owner

        def chunks() -> Iterator[bytes]:
            yield first.data
            for message in request_iterator:
                yield message.data

        lines: queue.Queue[str | Build | DynodError | BaseException] = queue.Queue()

        def work() -> None:
            try:
                lines.put(self.builder.run_build(
                    first.app, user=user, source=chunks(), commit=first.commit,
                    on_line=lines.put))
            except BaseException as exc:  # handed to the RPC thread
                lines.put(exc)

        threading.Thread(target=work, name=f"build-{first.app}", daemon=True).start()
        while True:
            item = lines.get()
            if isinstance(item, str):
                yield builds_pb2.CreateBuildResponse(line=item)
            elif isinstance(item, Build):
                yield builds_pb2.CreateBuildResponse(build=build_to_proto(item))
                return
            else:
                raise item

    def List(
        self, request: builds_pb2.ListBuildsRequest, context: grpc.ServicerContext
    ) -> builds_pb2.ListBuildsResponse:
        caller_of(context)
        found = builds.list_builds(self.daemon.store, request.app, request.limit or None)
        return builds_pb2.ListBuildsResponse(builds=[build_to_proto(b) for b in found])

    def Get(
        self, request: builds_pb2.GetBuildRequest, context: grpc.ServicerContext
    ) -> builds_pb2.GetBuildResponse:
        caller_of(context)
        build = builds.get_build(self.daemon.store, request.app, request.id or None)
        return builds_pb2.GetBuildResponse(build=build_to_proto(build))

    def Output(
        self, request: builds_pb2.GetBuildRequest, context: grpc.ServicerContext
    ) -> builds_pb2.BuildOutputResponse:
        caller_of(context)
        build = builds.get_build(self.daemon.store, request.app, request.id or None)
        return builds_pb2.BuildOutputResponse(
            build=build_to_proto(build), lines=pipeline.read_output(self.daemon.settings, build))

    def PurgeCache(
        self, request: builds_pb2.PurgeCacheRequest, context: grpc.ServicerContext
    ) -> builds_pb2.PurgeCacheResponse:
        caller_of(context)
        size = pipeline.purge_cache(self.daemon.store, self.daemon.settings, request.app)
        return builds_pb2.PurgeCacheResponse(bytes=size)

    def GetBuildpacks(
        self, request: builds_pb2.GetBuildpacksRequest, context: grpc.ServicerContext
    ) -> builds_pb2.BuildpacksResponse:
        caller_of(context)
        got = builds.get_settings(self.daemon.store, request.app)
        return _buildpacks(got)

    def SetBuildpacks(
        self, request: builds_pb2.SetBuildpacksRequest, context: grpc.ServicerContext
    ) -> builds_pb2.BuildpacksResponse:
        caller_of(context)
        got = builds.set_buildpacks(self.daemon.store, request.app, list(request.buildpacks))
        return _buildpacks(got)


def _buildpacks(got: BuildSettings) -> builds_pb2.BuildpacksResponse:
    return builds_pb2.BuildpacksResponse(
        buildpacks=list(got.buildpacks), stack=got.stack,
        builtin=[builds_pb2.BuiltinBuildpack(name=name, detects=BUILTIN_DETECTS[name])
                 for name in BUILTIN_BUILDPACKS])


def register(server: grpc.Server, daemon: Daemon, builder: pipeline.Builder) -> str:
    builds_pb2_grpc.add_BuildsServicer_to_server(BuildsServicer(daemon, builder), server)
    return str(builds_pb2.DESCRIPTOR.services_by_name["Builds"].full_name)
