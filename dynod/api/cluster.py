"""The Cluster service: thin, over dynod.control.cluster."""

from __future__ import annotations

import grpc

from dynod.api.daemon import Daemon
from dynod.control.cluster import Admission, Membership
from dynod.errors import FailedPrecondition
from dynod.model.cluster import Member
from dynod.v1 import cluster_pb2, cluster_pb2_grpc


def member_to_proto(m: Member) -> cluster_pb2.ClusterMember:
    return cluster_pb2.ClusterMember(name=m.name, address=m.address, api=m.api, pool=m.pool,
                                     joined_at=m.joined_at)


def admission_to_proto(a: Admission) -> cluster_pb2.AdmitResponse:
    return cluster_pb2.AdmitResponse(
        ca_cert=a.ca_cert, ca_key=a.ca_key, cert=a.cert, key=a.key, member_id=a.member_id,
        members=[cluster_pb2.EtcdPeer(name=n, address=ad) for n, ad in a.members],
        pool=a.pool)


def admission_of(p: cluster_pb2.AdmitResponse) -> Admission:
    return Admission(p.ca_cert, p.ca_key, p.cert, p.key, p.member_id,
                     tuple((m.name, m.address) for m in p.members), p.pool)


class ClusterServicer(cluster_pb2_grpc.ClusterServicer):
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    def _membership(self) -> Membership:
        if self.daemon.membership is None:
            raise FailedPrecondition("this dynod manages no cluster membership")
        return self.daemon.membership

    def Init(self, request: cluster_pb2.InitClusterRequest, context: grpc.ServicerContext
             ) -> cluster_pb2.InitClusterResponse:
        done = self._membership().init(request.name, request.address)
        return cluster_pb2.InitClusterResponse(
            member=member_to_proto(done.node), join_command=done.join_command,
            backup=str(done.backup), apps=done.apps, releases=done.releases)

    def CheckJoin(self, request: cluster_pb2.CheckJoinRequest, context: grpc.ServicerContext
                  ) -> cluster_pb2.CheckJoinResponse:
        return cluster_pb2.CheckJoinResponse(default_name=self._membership().check_joinable())

    def Admit(self, request: cluster_pb2.AdmitRequest, context: grpc.ServicerContext
              ) -> cluster_pb2.AdmitResponse:
        return admission_to_proto(
            self._membership().admit(request.name, request.address, request.token))

    def Join(self, request: cluster_pb2.JoinClusterRequest, context: grpc.ServicerContext
             ) -> cluster_pb2.JoinClusterResponse:
        member = self._membership().join(request.name, request.address,
                                         admission_of(request.admission))
        return cluster_pb2.JoinClusterResponse(member=member_to_proto(member))

    def Status(self, request: cluster_pb2.ClusterStatusRequest,
               context: grpc.ServicerContext) -> cluster_pb2.ClusterStatusResponse:
        status = self._membership().status()
        nodes = {n.name: n for n in status.nodes}
        health = {h.member.name: h for h in status.etcd}
        out = []
        for m in sorted(status.members, key=lambda m: m.name):
            h = health.get(m.name)
            node = nodes.get(m.name)
            out.append(cluster_pb2.ClusterNode(
                member=member_to_proto(m), alive=node is not None,
                memory_mb=0 if node is None else node.memory_mb,
                etcd_healthy=h is not None and h.healthy,
                etcd_error="not an etcd member" if h is None else h.error,
                etcd_learner=h is not None and h.member.learner))
        known = {m.name for m in status.members}
        strangers = [cluster_pb2.EtcdPeer(name=h.member.name or "(not started)",
                                          address=",".join(h.member.peer_urls))
                     for h in status.etcd if h.member.name not in known]
        return cluster_pb2.ClusterStatusResponse(nodes=out, etcd_leader=status.etcd_leader,
                                                 leader=status.leader or "", me=status.me,
                                                 strangers=strangers)

    def Remove(self, request: cluster_pb2.RemoveNodeRequest, context: grpc.ServicerContext
               ) -> cluster_pb2.RemoveNodeResponse:
        member = self._membership().remove(request.name, request.force)
        return cluster_pb2.RemoveNodeResponse(member=member_to_proto(member))


def register(server: grpc.Server, daemon: Daemon) -> str:
    cluster_pb2_grpc.add_ClusterServicer_to_server(ClusterServicer(daemon), server)
    return str(cluster_pb2.DESCRIPTOR.services_by_name["Cluster"].full_name)
