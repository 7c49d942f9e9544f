"""The leader election and placement loop against a real etcd: one node leads and
places, a follower writes nothing, the leader's death hands over leadership and its
dynos, and a node's share follows the placements and is empty once fenced."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterator

import pytest

from dynod.errors import Unavailable
from dynod.model.cluster import NODE_TTL, Node, Placement, to_json
from dynod.model.formation import Process
from dynod.model.placement import Formations
from dynod.runtime.leader import FENCE_MARGIN, Leader, NodeLease, Share
from dynod.store.etcd_cluster import EtcdClusterView, cluster_kv
from dynod.store.etcd_kv import Kv
from dynod.store.etcd_leader import EtcdLeaderSeat
from tests.etcd.server import Etcd
from tests.unit.conftest import etcd_store

FORMATION: Formations = {"shop": [Process("web", 6, "standard-1x"),
                                  Process("worker", 3, "standard-1x")]}


class Machine:
    """One node as the keeper would leave it: a lease, its ``nodes/`` key on it."""

    def __init__(self, kv: Kv, name: str, memory_mb: int = 4096) -> None:
        self.name = name
        self.kv = kv
        self.lease = kv.client.lease(30)
        self.kept: float | None = time.monotonic()
        node = Node(name, "10.216.0.2", "10.216.0.2:5443", "10.213.16.0/20", memory_mb)
        kv.txn([], [kv.put_op(f"nodes/{name}", to_json(node), int(self.lease.id))])
        self.view = EtcdClusterView(kv, name)
        self.node_lease = NodeLease(
            lambda: int(self.lease.id),
            lambda: None if self.kept is None else self.kept + NODE_TTL)
        self.leader = Leader(self.view, EtcdLeaderSeat(kv, name), self.node_lease,
                             lambda: FORMATION)

    def die(self) -> None:
        """What etcd does NODE_TTL after a machine's death: its lease lapses."""
        self.lease.revoke()
        self.kept = None


@pytest.fixture
def kv(etcd_server: Etcd) -> Kv:
    return cluster_kv(etcd_store(etcd_server), f"/c-{uuid.uuid4().hex}/")


@pytest.fixture
def machines(kv: Kv) -> Iterator[list[Machine]]:
    found = [Machine(kv, n) for n in ("node-a", "node-b", "node-c")]
    yield found
    for m in found:
        if m.kept is not None:
            m.lease.revoke()


def spread(view: EtcdClusterView, ptype: str) -> dict[str, int]:
    return dict(Counter(p.node for p in view.placements("shop")
                        if p.dyno.startswith(ptype + ".")))


def test_one_node_leads_and_spreads_the_formation(machines: list[Machine]) -> None:
    a, b, c = machines
    assert [m.leader.tick() for m in machines] == [True, False, False]
    assert a.view.leader() == "node-a" and a.leader.leading() and not b.leader.leading()
    assert spread(b.view, "web") == {"node-a": 2, "node-b": 2, "node-c": 2}
    assert spread(b.view, "worker") == {"node-a": 1, "node-b": 1, "node-c": 1}
    # A follower's write is refused by the compare on ``leader``: nothing changes.
    before = c.view.placements()
    assert not EtcdLeaderSeat(c.kv, "node-c").write(before, [])
    assert c.view.placements() == before


def test_the_leaders_death_hands_over_leadership_and_its_dynos(
        machines: list[Machine]) -> None:
    a, b, c = machines
    for m in machines:
        m.leader.tick()
    kept = {p for p in b.view.placements() if p.node != "node-a"}
    a.die()
    assert b.view.leader() is None and "node-a" not in {n.name for n in b.view.nodes()}
    assert b.leader.tick() and not c.leader.tick()
    assert b.view.leader() == "node-b"
    assert spread(b.view, "web") == {"node-b": 3, "node-c": 3}
    assert sum(spread(b.view, "worker").values()) == 3
    assert kept <= set(b.view.placements())  # only node-a's dynos moved


def test_a_node_whose_lease_is_not_surely_alive_does_not_campaign(
        machines: list[Machine]) -> None:
    a, b, _ = machines
    a.kept = time.monotonic() - (NODE_TTL - FENCE_MARGIN) - 1
    assert not a.leader.tick() and not a.leader.leading()
    assert b.leader.tick() and b.view.leader() == "node-b"


class Flaky(EtcdClusterView):
    """The view, until etcd goes out of reach."""

    down = False

    def placements(self, app: str | None = None) -> list[Placement]:
        if self.down:
            raise Unavailable("etcd at 10.216.0.2:2379: connection refused")
        return super().placements(app)


def test_a_nodes_share_is_its_placements_and_nothing_once_fenced(
        kv: Kv, machines: list[Machine]) -> None:
    a, b, _ = machines
    a.leader.tick()
    view = Flaky(kv, "node-b")
    share = Share(view, b.node_lease)
    mine = share.mine()
    assert set(mine) == {"shop"}
    assert mine["shop"] == {p.dyno for p in b.view.placements() if p.node == "node-b"}
    assert len(mine["shop"]) == 3
    # etcd out of reach: the last placements read, until the lease is surely lapsed.
    view.down = True
    assert share.mine() == mine and not share.fenced()
    b.kept = time.monotonic() - (NODE_TTL - FENCE_MARGIN) - 0.5
    assert share.fenced() and share.mine() == {}
    # Back: it runs what it is assigned, nothing else.
    view.down = False
    b.kept = time.monotonic()
    assert share.mine() == mine


def test_a_starting_node_is_not_fenced_before_its_first_keep_alive() -> None:
    lease = NodeLease(lambda: None, lambda: None, started=100.0)
    assert lease.surely_alive(now=100.0 + NODE_TTL - FENCE_MARGIN - 0.1)
    assert not lease.surely_alive(now=100.0 + NODE_TTL - FENCE_MARGIN)
    kept = NodeLease(lambda: 7, lambda: 200.0 + NODE_TTL, started=100.0)
    assert kept.surely_alive(now=200.0) and not kept.surely_alive(now=200.0 + 7.5)


def test_an_app_nobody_placed_yet_is_not_taken_from_the_node_running_it(
        kv: Kv, machines: list[Machine]) -> None:
    # A machine's apps just moved into a new cluster: until the leader's first pass the
    # node keeps what it runs of them (the supervisor's share is its running dynos).
    a, b, _ = machines
    share = Share(EtcdClusterView(kv, "node-b"), b.node_lease)
    assert share.mine() == {} and not share.placed_anywhere("shop")
    a.leader.tick()
    share.mine()
    assert share.placed_anywhere("shop") and not share.placed_anywhere("blog")
