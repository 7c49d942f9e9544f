"""The Domains service: custom domains, maintenance mode, certificates."""

from __future__ import annotations

import grpc

from dynod.api.daemon import Daemon, timestamp
from dynod.api.peer import caller_of
from dynod.control import acm, apps, certs, domains
from dynod.model.certs import Cert
from dynod.model.domains import default_hostname
from dynod.v1 import domains_pb2, domains_pb2_grpc


def cert_to_proto(cert: Cert) -> domains_pb2.Cert:
    return domains_pb2.Cert(name=cert.name, hostnames=list(cert.hostnames),
                            expires_at=timestamp(cert.expires_at), type=str(cert.kind))


class DomainsServicer(domains_pb2_grpc.DomainsServicer):
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    def List(
        self, request: domains_pb2.ListDomainsRequest, context: grpc.ServicerContext
    ) -> domains_pb2.ListDomainsResponse:
        caller_of(context)
        custom = domains.list_domains(self.daemon.store, request.app)
        default = default_hostname(request.app, self.daemon.settings.domain)
        return domains_pb2.ListDomainsResponse(domains=[
            domains_pb2.Domain(hostname=default, kind="default"),
            *(domains_pb2.Domain(hostname=d.hostname, kind="custom",
                                 created_at=timestamp(d.created_at)) for d in custom),
        ])

    def Add(
        self, request: domains_pb2.AddDomainRequest, context: grpc.ServicerContext
    ) -> domains_pb2.AddDomainResponse:
        caller_of(context)
        d = domains.add_domain(self.daemon.store, self.daemon.events, request.app,
                               request.hostname, self.daemon.settings.domain)
        return domains_pb2.AddDomainResponse(domain=domains_pb2.Domain(
            hostname=d.hostname, kind="custom", created_at=timestamp(d.created_at)))

    def Remove(
        self, request: domains_pb2.RemoveDomainRequest, context: grpc.ServicerContext
    ) -> domains_pb2.RemoveDomainResponse:
        caller_of(context)
        domains.remove_domain(self.daemon.store, self.daemon.events, request.app,
                              request.hostname)
        return domains_pb2.RemoveDomainResponse()

    def SetMaintenance(
        self, request: domains_pb2.SetMaintenanceRequest, context: grpc.ServicerContext
    ) -> domains_pb2.SetMaintenanceResponse:
        caller_of(context)
        domains.set_maintenance(self.daemon.store, self.daemon.events, request.app,
                                request.on)
        return domains_pb2.SetMaintenanceResponse()

    def GetMaintenance(
        self, request: domains_pb2.GetMaintenanceRequest, context: grpc.ServicerContext
    ) -> domains_pb2.GetMaintenanceResponse:
        caller_of(context)
        apps.get_app(self.daemon.store, request.app)
        return domains_pb2.GetMaintenanceResponse(
            on=domains.maintenance(self.daemon.store, request.app))

    def AddCert(
        self, request: domains_pb2.AddCertRequest, context: grpc.ServicerContext
    ) -> domains_pb2.AddCertResponse:
        caller_of(context)
        cert = certs.add_cert(self.daemon.cert_installer(), self.daemon.events,
                              request.certificate_pem, request.key_pem)
        return domains_pb2.AddCertResponse(cert=cert_to_proto(cert))

    def ListCerts(
        self, request: domains_pb2.ListCertsRequest, context: grpc.ServicerContext
    ) -> domains_pb2.ListCertsResponse:
        caller_of(context)
        return domains_pb2.ListCertsResponse(
            certs=[cert_to_proto(c) for c in certs.list_certs(self.daemon.certs_dir)])

    def RemoveCert(
        self, request: domains_pb2.RemoveCertRequest, context: grpc.ServicerContext
    ) -> domains_pb2.RemoveCertResponse:
        caller_of(context)
        certs.remove_cert(self.daemon.cert_installer(), self.daemon.events, request.name)
        return domains_pb2.RemoveCertResponse()

    def GetCA(
        self, request: domains_pb2.GetCARequest, context: grpc.ServicerContext
    ) -> domains_pb2.GetCAResponse:
        caller_of(context)
        return domains_pb2.GetCAResponse(
            certificate_pem=certs.ca_certificate(self.daemon.settings.state_dir))

    def SetAcm(
        self, request: domains_pb2.SetAcmRequest, context: grpc.ServicerContext
    ) -> domains_pb2.SetAcmResponse:
        caller_of(context)
        acm.set_acm(self.daemon.store, self.daemon.events, request.app, request.on)
        return domains_pb2.SetAcmResponse()

    def GetAcm(
        self, request: domains_pb2.GetAcmRequest, context: grpc.ServicerContext
    ) -> domains_pb2.GetAcmResponse:
        caller_of(context)
        state = acm.acm_state(self.daemon.store, request.app)
        out = domains_pb2.GetAcmResponse(enabled=state.enabled)
        for domain, record in state.domains:
            d = out.domains.add(hostname=domain.hostname)
            if record is not None:
                d.status, d.reason = str(record.status), record.reason
                d.updated_at.CopyFrom(timestamp(record.updated_at))
                if record.not_after is not None:
                    d.expires_at.CopyFrom(timestamp(record.not_after))
        return out

    def RefreshAcm(
        self, request: domains_pb2.RefreshAcmRequest, context: grpc.ServicerContext
    ) -> domains_pb2.RefreshAcmResponse:
        caller_of(context)
        acm.refresh_acm(self.daemon.store, self.daemon.events, request.app)
        return domains_pb2.RefreshAcmResponse()


def register(server: grpc.Server, daemon: Daemon) -> str:
    domains_pb2_grpc.add_DomainsServicer_to_server(DomainsServicer(daemon), server)
    return str(domains_pb2.DESCRIPTOR.services_by_name["Domains"].full_name)
