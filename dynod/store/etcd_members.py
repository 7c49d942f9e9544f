"""The cluster's membership in etcd: ``members/`` and ``join-token`` (dynod's keys,
:mod:`dynod.model.cluster`), and etcd's own member list, health and leader.

etcd3gw, the client the store uses, lists members but has no call to add, promote or
remove one; its gateway session posts to etcd's Cluster and Maintenance services all
the same (the same JSON gateway, the same TLS), so these calls go through it
(:meth:`dynod.store.etcd_kv.Kv.post`) rather than through a second client or etcdctl.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from typing import Any

from etcd3gw.client import Etcd3Client

from dynod.errors import FailedPrecondition, InvalidArgument, Unavailable
from dynod.model.cluster import JoinToken, Member, from_json, to_json
from dynod.store.etcd import EtcdSettings
from dynod.store.etcd_kv import Kv


@dataclass(frozen=True)
class EtcdMember:
    """One member as etcd lists it (``name`` is empty until a joiner has started)."""

    id: int
    name: str
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]
    learner: bool = False


@dataclass(frozen=True)
class MemberHealth:
    """What one member answers about itself (``error`` set when it did not)."""

    member: EtcdMember
    healthy: bool
    leader: int = 0
    error: str = ""


def _members(result: dict[str, Any]) -> list[EtcdMember]:
    return [EtcdMember(int(m["ID"]), m.get("name", ""), tuple(m.get("peerURLs", [])),
                       tuple(m.get("clientURLs", [])), bool(m.get("isLearner", False)))
            for m in result.get("members", [])]


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class EtcdMembership:
    """dynod's membership keys (``kv`` rooted at the cluster's keys) and etcd's members.
    ``tls`` is how to reach each member's client URL (its CA and certificate)."""

    def __init__(self, kv: Kv, tls: EtcdSettings) -> None:
        self.kv = kv
        self.tls = tls

    # ---- dynod's keys

    def members(self) -> list[Member]:
        _, pairs = self.kv.range("members/", "members0", None)
        return [from_json(Member, value) for _, value in pairs]

    def join_token(self) -> JoinToken | None:
        _, pairs = self.kv.range("join-token", None, None)
        return from_json(JoinToken, pairs[0][1]) if pairs else None

    def put_join_token(self, token: JoinToken) -> None:
        self.kv.txn([], [self.kv.put_op("join-token", to_json(token))])

    def add(self, member: Member) -> None:
        """Write ``members/<name>`` unless it exists. Raises InvalidArgument if it does."""
        key = f"members/{member.name}"
        absent = {"key": _b64(self.kv.root + key), "target": "CREATE", "result": "EQUAL",
                  "create_revision": 0}
        if not self.kv.txn([absent], [self.kv.put_op(key, to_json(member))]):
            raise InvalidArgument(f"node {member.name} is already a member of this cluster")

    def forget(self, name: str) -> None:
        self.kv.txn([], [self.kv.delete_op(f"members/{name}")])

    # ---- etcd's members

    def etcd_members(self) -> list[EtcdMember]:
        return _members(self.kv.post("/cluster/member/list", {}))

    def add_learner(self, peer_url: str, timeout: float = 30.0
                    ) -> tuple[EtcdMember, list[EtcdMember]]:
        """Add a member as a learner: it gets the data but does not vote, so the
        cluster's quorum is unchanged until it is promoted (a joiner that never starts
        costs nothing but its slot). Returns it and every member.

        etcd refuses a reconfiguration (503) while a member joined moments ago has not
        been connected for long enough (its health interval, 5 s): retried meanwhile."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                result = self.kv.post("/cluster/member/add", {"peerURLs": [peer_url],
                                                              "isLearner": True})
                break
            except Unavailable:
                if time.monotonic() > deadline:
                    raise
            time.sleep(1.0)
        if "member" not in result:
            raise FailedPrecondition(f"etcd refused to add {peer_url}: {result}")
        added = _members({"members": [result["member"]]})[0]
        return added, _members(result)

    def promote(self, member_id: int, timeout: float = 60.0) -> None:
        """Make a learner a voting member, once it has caught up with the leader."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.kv.post("/cluster/member/promote", {"ID": member_id})
                return
            except Unavailable as exc:
                if "not found" in str(exc) or time.monotonic() > deadline:
                    raise
                if "not a learner" in str(exc):
                    return
            time.sleep(1.0)

    def remove(self, member_id: int) -> None:
        self.kv.post("/cluster/member/remove", {"ID": member_id})

    def health(self, member: EtcdMember) -> MemberHealth:
        """Ask the member itself (its first client URL) for its status."""
        if not member.client_urls:
            return MemberHealth(member, False, error="not started")
        url = member.client_urls[0]
        host, _, port = url.split("://", 1)[-1].rpartition(":")
        client = Etcd3Client(
            host=host.strip("[]"), port=int(port), protocol=url.split("://", 1)[0],
            ca_cert=None if self.tls.ca_file is None else str(self.tls.ca_file),
            cert_cert=None if self.tls.cert_file is None else str(self.tls.cert_file),
            cert_key=None if self.tls.key_file is None else str(self.tls.key_file),
            timeout=5)
        try:
            status = Kv(client, "", url).post("/maintenance/status", {})
        except Unavailable as exc:
            return MemberHealth(member, False, error=str(exc.message))
        errors = status.get("errors") or []
        return MemberHealth(member, not errors, int(status.get("leader", 0)),
                            "; ".join(errors))
