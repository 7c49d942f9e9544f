"""The cluster's keys read back through the view, against a real etcd: values round
trip, a prefix is read whole, and what lives on a lease is gone with the lease."""

from __future__ import annotations

import uuid

import pytest

from dynod.errors import InvalidArgument
from dynod.model.cluster import Located, Member, Node, Placement, from_json, to_json
from dynod.store.etcd_cluster import EtcdClusterView, cluster_kv
from tests.etcd.server import Etcd
from tests.unit.conftest import etcd_store


def view(etcd: Etcd) -> EtcdClusterView:
    return EtcdClusterView(cluster_kv(etcd_store(etcd), f"/c-{uuid.uuid4().hex}/"), "node-a")


def test_values_round_trip_and_ignore_fields_they_do_not_know() -> None:
    node = Node("node-a", "10.216.0.2", "10.216.0.2:5443", "10.213.16.0/20", 8192)
    assert from_json(Node, to_json(node)) == node
    assert from_json(Placement, '{"app": "shop", "dyno": "web.1", "node": "node-b", '
                                '"from_a_newer_dynod": 1}') == Placement("shop", "web.1", "node-b")


def test_a_node_name_must_be_a_host_name() -> None:
    with pytest.raises(InvalidArgument, match=r"node name 'Node_B'.*e\.g\. node-b"):
        Member("Node_B", "10.216.0.3", "10.216.0.3:5443", "10.213.32.0/20")


def test_the_view_reads_each_prefix_and_leased_keys_go_with_their_lease(
        etcd_server: Etcd) -> None:
    v = view(etcd_server)
    assert (v.members(), v.nodes(), v.leader(), v.placements(), v.located()) == \
        ([], [], None, [], [])
    kv = v.kv
    a = Member("node-a", "10.216.0.2", "10.216.0.2:5443", "10.213.16.0/20")
    b = Node("node-b", "10.216.0.3", "10.216.0.3:5443", "10.213.32.0/20", 4096)
    lease = kv.client.lease(5)
    web = Located("node-b", "shop", "web.1", "up", 3, "standard-1x", generation=2,
                  address="10.213.32.2", port=5000)
    kv.txn([], [kv.put_op("members/node-a", to_json(a)),
                kv.put_op("nodes/node-b", to_json(b), int(lease.id)),
                kv.put_op("leader", "node-b", int(lease.id)),
                kv.put_op("placement/shop/web.1", to_json(Placement("shop", "web.1", "node-b"))),
                kv.put_op("placement/blog/web.1", to_json(Placement("blog", "web.1", "node-a"))),
                kv.put_op("dynos/node-b/shop/web.1@2", to_json(web), int(lease.id))])
    assert v.me == "node-a"
    assert v.members() == [a] and v.nodes() == [b] and v.leader() == "node-b"
    assert [p.app for p in v.placements()] == ["blog", "shop"]
    assert v.placements("shop") == [Placement("shop", "web.1", "node-b")]
    assert v.located("shop") == [web] and v.located("blog") == []
    lease.revoke()
    assert (v.nodes(), v.leader(), v.located()) == ([], None, [])
    assert v.members() == [a] and len(v.placements()) == 2
