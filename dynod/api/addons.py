"""The Addons service: add-ons and their attachments (``dynod.control.addons``)."""

from __future__ import annotations

import grpc

from dynod.api.daemon import Daemon, timestamp
from dynod.api.peer import caller_of
from dynod.api.releases import release_to_proto
from dynod.control import addons
from dynod.errors import FailedPrecondition
from dynod.model.addons import Addon, AddonServices, Attachment
from dynod.model.releases import Release
from dynod.v1 import addons_pb2, addons_pb2_grpc, releases_pb2


def attachment_to_proto(att: Attachment) -> addons_pb2.Attachment:
    return addons_pb2.Attachment(addon=att.addon, app=att.app, name=att.name,
                                 config_var=att.config_var,
                                 created_at=timestamp(att.created_at))


def addon_to_proto(addon: Addon, attachments: tuple[Attachment, ...] = ()
                   ) -> addons_pb2.Addon:
    plan = addon.plan_info
    return addons_pb2.Addon(
        name=addon.name, service=addon.service, app=addon.app, state=str(addon.state),
        created_at=timestamp(addon.created_at),
        plan=addons_pb2.Plan(name=plan.full_name, connections=plan.connections,
                             memory_mb=plan.memory_mb or 0,
                             storage_gb=plan.storage_gb or 0.0,
                             storage_enforced=plan.storage_enforced, price=plan.price),
        attachments=[attachment_to_proto(a) for a in attachments])


def _release(release: Release) -> releases_pb2.Release:
    # Without its config: the URLs carry passwords, and `--json` output gets pasted.
    return release_to_proto(release, current=True, with_config=False)


class AddonsServicer(addons_pb2_grpc.AddonsServicer):
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.store = daemon.store

    def _services(self) -> AddonServices:
        if self.daemon.addons is None:
            raise FailedPrecondition("this dynod runs no add-on servers; start dynod as "
                                     "its systemd service (systemctl start dynod)")
        return self.daemon.addons

    def List(self, request: addons_pb2.ListAddonsRequest, context: grpc.ServicerContext
             ) -> addons_pb2.ListAddonsResponse:
        caller_of(context)
        views = addons.list_addons(self.store, request.app or None)
        return addons_pb2.ListAddonsResponse(
            addons=[addon_to_proto(v.addon, v.attachments) for v in views])

    def Create(self, request: addons_pb2.CreateAddonRequest, context: grpc.ServicerContext
               ) -> addons_pb2.CreateAddonResponse:
        user = caller_of(context).name
        change = addons.create_addon(
            self.store, self.daemon.events, self._services(), request.app,
            request.service_plan, user=user, as_name=request.as_name or None,
            name=request.name or None)
        assert change.attachment is not None
        return addons_pb2.CreateAddonResponse(
            addon=addon_to_proto(change.addon, (change.attachment,)),
            attachment=attachment_to_proto(change.attachment),
            release=_release(change.releases[request.app]))

    def Info(self, request: addons_pb2.GetAddonRequest, context: grpc.ServicerContext
             ) -> addons_pb2.GetAddonResponse:
        caller_of(context)
        view = addons.get_addon(self.store, request.name, request.app or None)
        return addons_pb2.GetAddonResponse(addon=addon_to_proto(view.addon, view.attachments))

    def Destroy(self, request: addons_pb2.DestroyAddonRequest,
                context: grpc.ServicerContext) -> addons_pb2.DestroyAddonResponse:
        user = caller_of(context).name
        change = addons.destroy_addon(
            self.store, self.daemon.events, self._services(), request.name,
            confirm=request.confirm or None, user=user, app=request.app or None)
        return addons_pb2.DestroyAddonResponse(
            addon=addon_to_proto(change.addon),
            releases=[_release(r) for r in change.releases.values()])

    def Attach(self, request: addons_pb2.AttachAddonRequest, context: grpc.ServicerContext
               ) -> addons_pb2.AttachAddonResponse:
        user = caller_of(context).name
        change = addons.attach_addon(self.store, self.daemon.events, request.name,
                                     request.app, as_name=request.as_name or None, user=user)
        assert change.attachment is not None
        return addons_pb2.AttachAddonResponse(
            addon=addon_to_proto(change.addon), attachment=attachment_to_proto(change.attachment),
            release=_release(change.releases[request.app]))

    def Detach(self, request: addons_pb2.DetachAddonRequest, context: grpc.ServicerContext
               ) -> addons_pb2.DetachAddonResponse:
        user = caller_of(context).name
        change = addons.detach_addon(self.store, self.daemon.events, request.attachment,
                                     request.app, user)
        assert change.attachment is not None
        return addons_pb2.DetachAddonResponse(
            addon=addon_to_proto(change.addon), attachment=attachment_to_proto(change.attachment),
            release=_release(change.releases[request.app]))

    def Promote(self, request: addons_pb2.PromoteAddonRequest,
                context: grpc.ServicerContext) -> addons_pb2.PromoteAddonResponse:
        user = caller_of(context).name
        done = addons.promote(self.store, self.daemon.events, request.name, request.app, user)
        reply = addons_pb2.PromoteAddonResponse(
            addon=addon_to_proto(done.addon), attachment=attachment_to_proto(done.attachment),
            release=_release(done.release))
        if done.demoted is not None:
            reply.demoted.CopyFrom(attachment_to_proto(done.demoted))
        return reply


def register(server: grpc.Server, daemon: Daemon) -> str:
    addons_pb2_grpc.add_AddonsServicer_to_server(AddonsServicer(daemon), server)
    return str(addons_pb2.DESCRIPTOR.services_by_name["Addons"].full_name)
