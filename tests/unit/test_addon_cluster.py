"""Add-ons across a cluster (issue 19; runtime/addon_peers.py, the cluster part of
runtime/addon_access.py, the peer-gateway rules of system/netns.py): a home machine
opens its add-ons to the attached apps' dynos on every machine and to nothing else; a
dyno elsewhere starts once it is admitted. The board, firewall and servers are fakes;
tests/integration/test_addon_cluster.py runs it on two machines."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from ipaddress import IPv4Address
from pathlib import Path

from dynod.errors import Unavailable
from dynod.model.addons import POSTGRES, REDIS, Addon, AddonState, Attachment, Credentials
from dynod.model.cluster import AddonAdmitted, AddonClient, Member
from dynod.runtime.addon_access import AddonAccess, LiveDyno, compute_access
from dynod.runtime.addon_peers import AddonPeers, homes_of, remote_dynos
from dynod.store.etcd_addon_board import EtcdAddonBoard
from dynod.store.etcd_cluster import cluster_kv
from dynod.system import netns
from tests.etcd.server import Etcd
from tests.unit.conftest import etcd_store
from tests.unit.test_addon_access import FakeFirewall, FakeServices, FakeStore

NOW = datetime(2026, 12, 1, tzinfo=UTC)
GW_A, GW_B = "10.213.0.1", "10.213.16.1"
MEMBERS = [Member("node-a", "10.216.0.1", "10.216.0.1:5443", "10.213.0.0/20"),
           Member("node-b", "10.216.0.2", "10.216.0.2:5443", "10.213.16.0/20")]


def addon(name: str, app: str, host: str, port: int, service: str = POSTGRES) -> Addon:
    return Addon(name, service, "essential-0" if service == POSTGRES else "mini", app,
                 AddonState.CREATED, NOW, Credentials(host, port, name, "secret", name))


def world() -> FakeStore:
    """shop's Postgres and Redis live on node-a; blog's Redis on node-b, on the port
    number shop's has on node-a; news has nothing."""
    store = FakeStore()
    store.tx.addons = {a.name: a for a in (
        addon("postgresql-shop", "shop", GW_A, 5432),
        addon("redis-shop", "shop", GW_A, 6380, REDIS),
        addon("redis-blog", "blog", GW_B, 6380, REDIS))}
    store.tx.attachments = [Attachment("postgresql-shop", "shop", "DATABASE", NOW),
                            Attachment("redis-shop", "shop", "REDIS", NOW),
                            Attachment("redis-blog", "blog", "REDIS", NOW)]
    return store


def ip(text: str) -> IPv4Address:
    return IPv4Address(text)


def test_a_home_machine_opens_only_its_own_addons_to_attached_dynos_anywhere() -> None:
    dynos = [LiveDyno("shop", ip("10.213.0.2")),    # node-a's own
             LiveDyno("shop", ip("10.213.16.2")),   # node-b's, of the attached app
             LiveDyno("blog", ip("10.213.16.3")),   # node-b's, another app
             LiveDyno("news", ip("10.213.16.4"))]
    store = world()
    on_a = compute_access(store.tx.addons.values(), store.tx.attachments, dynos, GW_A)
    assert on_a.addons == {"postgresql-shop": {ip("10.213.0.2"), ip("10.213.16.2")},
                           "redis-shop": {ip("10.213.0.2"), ip("10.213.16.2")}}
    assert on_a.ports == {5432: {ip("10.213.0.2"), ip("10.213.16.2")},
                          6380: {ip("10.213.0.2"), ip("10.213.16.2")}}
    # node-b's port 6380 is blog's Redis alone: shop's dynos are not let in there,
    # though shop's Redis on node-a has the same port number.
    on_b = compute_access(store.tx.addons.values(), store.tx.attachments, dynos, GW_B)
    assert on_b.addons == {"redis-blog": {ip("10.213.16.3")}}
    assert on_b.ports == {6380: {ip("10.213.16.3")}}


def test_each_addon_has_the_home_of_the_pool_holding_its_host() -> None:
    store = world()
    addons, atts = store.tx.addons.values(), store.tx.attachments
    assert homes_of("shop", addons, atts, MEMBERS, "node-b") == {
        "postgresql-shop": "node-a", "redis-shop": "node-a"}
    assert homes_of("shop", addons, atts, MEMBERS, "node-a") == {}  # its own
    assert homes_of("news", addons, atts, MEMBERS, "node-b") == {}
    # The first machine's pool may still be the whole range: the narrowest pool wins.
    wide = [Member("node-a", "10.216.0.1", "", "10.213.0.0/16"), MEMBERS[1]]
    assert homes_of("blog", addons, atts, wide, "node-a") == {"redis-blog": "node-b"}


def test_remote_dynos_are_the_other_nodes_clients() -> None:
    clients = [AddonClient("node-a", "shop", "shop-web.1", "10.213.0.2"),
               AddonClient("node-b", "shop", "shop-run.1234", "10.213.16.2"),
               AddonClient("node-b", "blog", "bad", "not an address")]
    assert remote_dynos(clients, "node-a") == {
        "node-b/shop-run.1234": LiveDyno("shop", ip("10.213.16.2"))}


@dataclass
class FakeBoard:
    """The etcd keys of every node, shared by the nodes' boards."""

    clients: dict[str, list[AddonClient]] = field(default_factory=dict)
    admitted: dict[str, AddonAdmitted] = field(default_factory=dict)
    down: bool = False

    def of(self, node: str) -> NodeBoard:
        return NodeBoard(self, node)


@dataclass
class NodeBoard:
    board: FakeBoard
    me: str

    def _up(self) -> None:
        if self.board.down:
            raise Unavailable("etcd at 10.216.0.2:2379: down")

    def publish_clients(self, clients: Sequence[AddonClient]) -> None:
        self._up()
        self.board.clients[self.me] = list(clients)

    def clients(self) -> list[AddonClient]:
        self._up()
        return [c for cs in self.board.clients.values() for c in cs]

    def publish_admitted(self, admitted: AddonAdmitted) -> None:
        self._up()
        self.board.admitted[self.me] = admitted

    def admitted(self) -> list[AddonAdmitted]:
        self._up()
        return list(self.board.admitted.values())


class View:
    def __init__(self, me: str) -> None:
        self.me = me

    def members(self) -> list[Member]:
        return list(MEMBERS)


@dataclass
class Node:
    access: AddonAccess
    peers: AddonPeers
    firewall: FakeFirewall
    services: FakeServices


def node(name: str, gateway: str, store: FakeStore, board: FakeBoard, tmp_path: Path, *,
         wait: float = 10.0) -> Node:
    fw, services = FakeFirewall(), FakeServices()
    access = AddonAccess(store, tmp_path / name, fw, services, home=gateway)  # type: ignore[arg-type]
    peers = AddonPeers(View(name), board.of(name), access, store,  # type: ignore[arg-type]
                       interval=0.05, wait=wait)
    access.peers = peers
    return Node(access, peers, fw, services)


def test_a_dyno_elsewhere_starts_once_its_home_machine_admits_it(tmp_path: Path) -> None:
    store, board = world(), FakeBoard()
    a = node("node-a", GW_A, store, board, tmp_path)
    b = node("node-b", GW_B, store, board, tmp_path)
    a.peers.start()  # node-a's follower: the home machine of shop's add-ons
    try:
        b.peers.sync()
        # A one-off of shop on node-b: network_up returns once node-a admits it.
        b.access.network_up("shop", "shop-run.1234", ip("10.213.16.5"))
        assert ip("10.213.16.5") in a.firewall.sets[5432]
        assert ip("10.213.16.5") in a.firewall.sets[6380]
        assert {"10.213.16.5"} <= a.services.admitted[-1]["postgresql-shop"]
        assert "10.213.16.5" in a.services.admitted[-1]["redis-shop"]
        # Another app's dyno on node-b: not let into node-a's add-ons at all.
        b.access.network_up("blog", "blog-web.1", ip("10.213.16.6"))
        a.peers.sync()
        assert all(ip("10.213.16.6") not in s for s in a.firewall.sets.values())
        assert "10.213.16.6" not in str(a.services.admitted[-1])
        # The one-off ends: its address is out of node-a's sets before it is freed.
        b.access.network_down("shop-run.1234")
        assert all(ip("10.213.16.5") not in s for s in a.firewall.sets.values())
        assert all("10.213.16.5" not in s for s in a.services.admitted[-1].values())
    finally:
        a.peers.stop()


def test_a_home_machine_that_does_not_answer_delays_a_dyno_only_so_long(
        tmp_path: Path) -> None:
    store, board = world(), FakeBoard()
    b = node("node-b", GW_B, store, board, tmp_path, wait=0.3)
    done = threading.Event()

    def start() -> None:
        b.access.network_up("shop", "shop-web.1", ip("10.213.16.5"))
        done.set()
    threading.Thread(target=start, daemon=True).start()
    assert done.wait(5)  # node-a never admitted it: the dyno starts all the same
    assert board.clients["node-b"] == [
        AddonClient("node-b", "shop", "shop-web.1", "10.213.16.5")]
    # etcd away: the follower's pass raises, the dyno's start goes on.
    board.down = True
    b.access.network_up("news", "news-web.1", ip("10.213.16.7"))
    try:
        b.peers.sync()
        raise AssertionError("no error")
    except Unavailable:
        pass


def test_peer_gateways_are_let_out_and_in_only_to_addon_ports() -> None:
    rules = [line.removeprefix("add rule ip dynod ") for line in
             netns.render_nftables(netns.plan_bridge("10.213.0.0/20")).splitlines()
             if line.startswith("add rule ")]
    # Out: a dyno's connection to a peer's gateway leaves with the dyno's address.
    keep = "postrouting ip saddr 10.213.0.0/20 ip daddr @peer_gateways return"
    assert rules.index(keep) < rules.index(
        'postrouting ip saddr 10.213.0.0/20 oifname != "dynod0" masquerade')
    out = ('forward iifname "dynod0" ip daddr @peer_gateways tcp dport 1024-65535 '
           'ct direction original accept')
    assert rules.index(out) < rules.index('forward iifname "dynod0" ip daddr @peer_pools drop')
    # In: a peer's dyno meets the add-on sets, then everything else of the gateway drops.
    inward = "input ip saddr @peer_pools ip daddr 10.213.0.1 jump addons"
    assert rules.index(inward) == rules.index(
        'input iifname != { "dynod0", "lo" } ip daddr 10.213.0.1 drop') - 1


def test_the_etcd_board_keeps_each_nodes_records_on_its_lease(etcd_server: Etcd) -> None:
    store = etcd_store(etcd_server)
    kv = cluster_kv(store, f"/c-{uuid.uuid4().hex}/")
    lease: list[int | None] = [None]
    board = EtcdAddonBoard(kv, "node-b", lambda: lease[0])
    run = AddonClient("node-b", "shop", "shop-run.1234", "10.213.16.5")
    web = AddonClient("node-b", "shop", "shop-web.1", "10.213.16.2")
    try:  # no lease yet: nothing is written without one
        board.publish_clients([run])
        raise AssertionError("no error")
    except Unavailable as exc:
        assert "no lease" in exc.message
    lease[0] = int(kv.post("/lease/grant", {"TTL": 30})["ID"])
    board.publish_clients([run, web])
    # Another node's board sees them; a node publishes only its own.
    other = EtcdAddonBoard(kv, "node-a", lambda: lease[0])
    other.publish_clients([AddonClient("node-b", "blog", "forged", "10.213.16.9")])
    assert sorted(other.clients(), key=lambda c: c.key) == [run, web]
    board.publish_clients([web])  # the one-off ended
    assert other.clients() == [web]
    admitted = AddonAdmitted("node-a", {"redis-shop": ["10.213.0.2", "10.213.16.2"]})
    other.publish_admitted(admitted)
    assert board.admitted() == [admitted]
    # The lease lapses (etcd away longer than the TTL): the records vanish with it; the
    # next publish, on the new lease, puts them back.
    kv.post("/lease/revoke", {"ID": lease[0]})
    assert board.clients() == [] and board.admitted() == []
    lease[0] = int(kv.post("/lease/grant", {"TTL": 30})["ID"])
    board.publish_clients([web])
    other.publish_admitted(admitted)
    assert board.clients() == [web] and board.admitted() == [admitted]
