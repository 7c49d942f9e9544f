"""The Apps service."""

from __future__ import annotations

import functools
import socket

import grpc

from dynod.api.daemon import Daemon, timestamp
from dynod.api.peer import caller_of
from dynod.build import gitrepos, stacks
from dynod.control import access, apps, builds, formation, releases
from dynod.model.apps import App
from dynod.runtime import gc
from dynod.v1 import apps_pb2, apps_pb2_grpc


@functools.cache
def git_host() -> str:
    """The host in git URLs: this machine's name where it resolves, else localhost (a
    machine whose name is in no hosts file or DNS is reached from itself)."""
    name = socket.gethostname()
    try:
        socket.getaddrinfo(name, 22)
    except (OSError, UnicodeError):
        return "localhost"
    return name


def git_url(app: str) -> str:
    """scp-style, as ``git remote add`` takes it; the git user's forced command
    (gitpush.py) accepts ``<app>.git``."""
    return f"{gitrepos.GIT_USER}@{git_host()}:{app}.git"


def app_to_proto(daemon: Daemon, app: App) -> apps_pb2.App:
    current = releases.get_release(daemon.store, app.name)
    stack = builds.get_settings(daemon.store, app.name).stack
    return apps_pb2.App(name=app.name, owner=app.owner, created_at=timestamp(app.created_at),
                        current_release=current.version, web_url=daemon.web_url(app.name),
                        git_url=git_url(app.name), stack=stack)


class AppsServicer(apps_pb2_grpc.AppsServicer):
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    def Create(
        self, request: apps_pb2.CreateAppRequest, context: grpc.ServicerContext
    ) -> apps_pb2.CreateAppResponse:
        user = caller_of(context).name
        if request.stack:
            stacks.get_stack(request.stack)  # NotFound before anything is created
        app = apps.create_app(self.daemon.store, self.daemon.events, request.name or None,
                              user, stack=request.stack or None)
        return apps_pb2.CreateAppResponse(app=app_to_proto(self.daemon, app))

    def Get(
        self, request: apps_pb2.GetAppRequest, context: grpc.ServicerContext
    ) -> apps_pb2.GetAppResponse:
        caller_of(context)
        app = apps.get_app(self.daemon.store, request.name)
        dynos = {p.type: p.quantity for p in formation.get_formation(self.daemon.store, app.name)}
        disk = gc.disk_use(self.daemon.store, self.daemon.settings, app.name)
        reply = apps_pb2.GetAppResponse(app=app_to_proto(self.daemon, app), dynos=dynos,
                                        disk_bytes=disk)
        if self.daemon.router_log_drops is not None:
            dropped, since = self.daemon.router_log_drops()
            reply.router_lines_dropped = dropped
            if since is not None:
                reply.router_lines_dropped_since.CopyFrom(timestamp(since))
        return reply

    def Gc(
        self, request: apps_pb2.GcRequest, context: grpc.ServicerContext
    ) -> apps_pb2.GcResponse:
        caller_of(context)
        done = gc.collect(self.daemon.store, self.daemon.settings,
                          keep=request.keep or gc.KEEP)
        return apps_pb2.GcResponse(slugs=done.slugs, trees=done.trees, caches=done.caches,
                                   bytes=done.bytes)

    def List(
        self, request: apps_pb2.ListAppsRequest, context: grpc.ServicerContext
    ) -> apps_pb2.ListAppsResponse:
        caller = caller_of(context)
        mine = None if caller.user is None else access.visible_apps(self.daemon.store,
                                                                     caller.user)
        return apps_pb2.ListAppsResponse(
            apps=[app_to_proto(self.daemon, a) for a in apps.list_apps(self.daemon.store)
                  if mine is None or a.name in mine])

    def Delete(
        self, request: apps_pb2.DeleteAppRequest, context: grpc.ServicerContext
    ) -> apps_pb2.DeleteAppResponse:
        user = caller_of(context).name
        apps.delete_app(self.daemon.store, self.daemon.events, self.daemon.slugs_dir,
                        request.name, services=self.daemon.addons,
                        destroy_addons=request.destroy_addons, user=user)
        return apps_pb2.DeleteAppResponse()


def register(server: grpc.Server, daemon: Daemon) -> str:
    apps_pb2_grpc.add_AppsServicer_to_server(AppsServicer(daemon), server)
    return str(apps_pb2.DESCRIPTOR.services_by_name["Apps"].full_name)
