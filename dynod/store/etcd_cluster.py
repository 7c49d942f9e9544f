"""The cluster's own keys in etcd (:mod:`dynod.model.cluster` names them), read.

Each read is one range of one prefix, so what it returns is one consistent moment of
that prefix. Writers live beside their owners: the membership commands write
``members/`` and ``join-token``, each node's lease keeper ``nodes/`` and ``dynos/``,
the leader ``placement/``.
"""

from __future__ import annotations

from typing import TypeVar

from dynod.model.cluster import ROOT, Located, Member, Node, Placement, from_json
from dynod.store.etcd import EtcdStore
from dynod.store.etcd_kv import Kv, prefix_end

T = TypeVar("T")


def cluster_kv(store: EtcdStore, root: str = ROOT) -> Kv:
    """The store's etcd client, rooted at the cluster's keys (tests give each their
    own root in a shared etcd)."""
    return Kv(store.kv.client, root, store.kv.where)


class EtcdClusterView:
    """:class:`dynod.model.cluster.ClusterView` on etcd, for node ``me``."""

    def __init__(self, kv: Kv, me: str) -> None:
        self.kv = kv
        self._me = me

    @property
    def me(self) -> str:
        return self._me

    def _all(self, cls: type[T], prefix: str) -> list[T]:
        _, pairs = self.kv.range(prefix, prefix_end(prefix), None)
        return [from_json(cls, value) for _, value in pairs]

    def members(self) -> list[Member]:
        return self._all(Member, "members/")

    def nodes(self) -> list[Node]:
        return self._all(Node, "nodes/")

    def leader(self) -> str | None:
        _, pairs = self.kv.range("leader", None, None)
        return pairs[0][1] if pairs else None

    def placements(self, app: str | None = None) -> list[Placement]:
        return self._all(Placement, "placement/" if app is None else f"placement/{app}/")

    def located(self, app: str | None = None) -> list[Located]:
        found = self._all(Located, "dynos/")
        return found if app is None else [d for d in found if d.app == app]
