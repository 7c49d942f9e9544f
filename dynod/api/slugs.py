"""The Slugs service."""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from dynod.api.daemon import Daemon, timestamp
from dynod.api.peer import caller_of
from dynod.build import stacks
from dynod.control import slugs
from dynod.errors import InvalidArgument
from dynod.model.slugs import Slug
from dynod.v1 import slugs_pb2, slugs_pb2_grpc


def slug_to_proto(slug: Slug) -> slugs_pb2.Slug:
    return slugs_pb2.Slug(
        id=slug.id, app=slug.app, checksum=slug.checksum, size=slug.size,
        process_types=dict(slug.process_types), commit=slug.commit,
        created_at=timestamp(slug.created_at), uploaded=slug.uploaded, stack=slug.stack,
    )


class SlugsServicer(slugs_pb2_grpc.SlugsServicer):
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    def Create(
        self, request: slugs_pb2.CreateSlugRequest, context: grpc.ServicerContext
    ) -> slugs_pb2.CreateSlugResponse:
        caller_of(context)
        stack = stacks.get_stack(request.stack).name if request.stack else None
        slug = slugs.create_slug(self.daemon.store, request.app, checksum=request.checksum,
                                 size=request.size, process_types=dict(request.process_types),
                                 commit=request.commit, stack=stack,
                                 layers=tuple(request.layers))
        return slugs_pb2.CreateSlugResponse(slug=slug_to_proto(slug))

    def Get(
        self, request: slugs_pb2.GetSlugRequest, context: grpc.ServicerContext
    ) -> slugs_pb2.GetSlugResponse:
        caller_of(context)
        return slugs_pb2.GetSlugResponse(
            slug=slug_to_proto(slugs.get_slug(self.daemon.store, request.app, request.id)))

    def Upload(
        self, request_iterator: Iterator[slugs_pb2.UploadSlugRequest],
        context: grpc.ServicerContext,
    ) -> slugs_pb2.UploadSlugResponse:
        caller_of(context)
        first = next(request_iterator, None)
        if first is None or not first.app or not first.id:
            raise InvalidArgument("slug upload: the first message must name the app and slug id")

        def chunks() -> Iterator[bytes]:
            yield first.data
            for message in request_iterator:
                yield message.data

        slug = slugs.upload_slug(self.daemon.store, self.daemon.slugs_dir, first.app, first.id,
                                 chunks())
        return slugs_pb2.UploadSlugResponse(slug=slug_to_proto(slug))


def register(server: grpc.Server, daemon: Daemon) -> str:
    slugs_pb2_grpc.add_SlugsServicer_to_server(SlugsServicer(daemon), server)
    return str(slugs_pb2.DESCRIPTOR.services_by_name["Slugs"].full_name)
