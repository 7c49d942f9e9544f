"""A cluster's dyno network and routing across machines, without root: peers from the
members, their routes and nftables sets, dynos' allow-lists, and the other nodes' up
web dynos handed to the router."""

from __future__ import annotations

import threading
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from dynod.errors import Unavailable
from dynod.model.cluster import Located, Member, Node, Placement
from dynod.router.admin_socket import parse_servers_state
from dynod.router.haproxy import adopted
from dynod.router.protocol import Backend
from dynod.runtime.cluster_network import ClusterNetwork
from dynod.runtime.cluster_routes import ClusterRoutes, remote_backends
from dynod.runtime.follower import Follower
from dynod.system import netns, peers

OWN = IPv4Network("10.213.0.0/20")


def members(*rows: tuple[str, str, str]) -> list[Member]:
    return [Member(n, a, f"{a}:5443", p) for n, a, p in rows]


def test_peers_are_the_other_members_with_a_pool_of_their_own() -> None:
    found = peers.plan_peers("node-a", OWN, [
        ("node-a", "10.216.0.1", "10.213.0.0/20"),
        ("node-c", "10.216.0.3", "10.213.32.0/20"),
        ("node-b", "10.216.0.2", "10.213.16.0/20"),
        ("node-d", "10.216.0.4", ""),  # joining: no pool written yet
        ("node-e", "not-an-address", "10.213.48.0/20"),
    ])
    assert found == [peers.Peer(IPv4Address("10.216.0.2"), IPv4Network("10.213.16.0/20")),
                     peers.Peer(IPv4Address("10.216.0.3"), IPv4Network("10.213.32.0/20"))]
    routes = peers.plan_peer_routes(found)
    assert [(str(r.dst), str(r.via)) for r in routes] == [
        ("10.213.16.0/20", "10.216.0.2"), ("10.213.32.0/20", "10.216.0.3")]


def test_no_route_would_take_this_machines_own_dynos_or_two_members_pools() -> None:
    # A pool holding this machine's own (its dynos would be routed away), and two
    # overlapping pools (the allocation went wrong): no route for any of them.
    found = peers.plan_peers("node-a", OWN, [
        ("node-b", "10.216.0.2", "10.213.0.0/16"),
        ("node-c", "10.216.0.3", "10.213.32.0/20"),
        ("node-d", "10.216.0.4", "10.213.32.0/21"),
        ("node-e", "10.216.0.5", "10.213.64.0/20"),
    ])
    assert [str(p.pool) for p in found] == ["10.213.64.0/20"]
    # The first machine, still on the whole range while the others have their /20s:
    # the others' pools inside its own are routed to (more specific routes win).
    first = peers.plan_peers("node-a", IPv4Network("10.213.0.0/16"),
                             [("node-b", "10.216.0.2", "10.213.16.0/20")])
    assert [str(p.pool) for p in first] == ["10.213.16.0/20"]


def test_peer_sets_are_replaced_whole() -> None:
    two = [peers.Peer(IPv4Address("10.216.0.3"), IPv4Network("10.213.32.0/20")),
           peers.Peer(IPv4Address("10.216.0.2"), IPv4Network("10.213.16.0/20"))]
    assert peers.render_peer_sets(two).splitlines() == [
        "flush set ip dynod peer_hosts",
        "flush set ip dynod peer_pools",
        "flush set ip dynod peer_gateways",
        "add element ip dynod peer_hosts { 10.216.0.2, 10.216.0.3 }",
        "add element ip dynod peer_pools { 10.213.16.0/20, 10.213.32.0/20 }",
        "add element ip dynod peer_gateways { 10.213.16.1, 10.213.32.1 }",
    ]
    # The last member removed: every set emptied.
    assert peers.render_peer_sets([]).splitlines() == [
        "flush set ip dynod peer_hosts", "flush set ip dynod peer_pools",
        "flush set ip dynod peer_gateways"]


def test_nftables_lets_peers_routers_in_and_keeps_dynos_off_peers() -> None:
    text = netns.render_nftables(netns.plan_bridge("10.213.0.0/20"))
    lines = [line.strip() for line in text.splitlines()]
    assert "set peer_hosts {" in lines and "set peer_pools {" in lines
    # Declared, never flushed here: a build re-rendering the table keeps the peers.
    assert not any(line.startswith("flush set") for line in lines)
    rules = [line.removeprefix("add rule ip dynod ") for line in lines
             if line.startswith("add rule ")]
    let_in = ('forward oifname "dynod0" ip saddr @peer_hosts ip daddr 10.213.0.0/20 '
              'tcp dport 1024-65535 ct state new accept')
    assert rules.index(let_in) < rules.index('forward oifname "dynod0" drop')
    # Dynos answer a peer's router (replies), and open nothing towards a peer.
    replies = 'forward iifname "dynod0" ip daddr @peer_hosts ct direction reply accept'
    assert rules.index(replies) < rules.index('forward iifname "dynod0" ip daddr @peer_hosts drop')
    assert 'forward iifname "dynod0" ip daddr @peer_pools drop' in rules


def test_allow_list_leaves_out_other_members_pools_not_their_routers() -> None:
    plan = netns.plan_bridge("10.213.0.0/20")
    net = netns.plan_dyno_network(plan, "x", IPv4Address("10.213.0.5"))
    other = [IPv4Network("10.213.16.0/20"), IPv4Network("10.213.32.0/20")]
    allow = netns.ip_allow_list(net, plan.pool, other)
    # The peers' gateways (their add-on servers) and nothing else of their pools.
    assert allow[3:5] == [IPv4Network("10.213.16.1/32"), IPv4Network("10.213.32.1/32")]
    world = allow[5:]
    for n in world:
        assert not n.overlaps(plan.pool)
        assert not any(n.overlaps(o) for o in other)
    assert any(IPv4Address("10.216.0.2") in n for n in world)  # a peer's router
    covered = sum(n.num_addresses for n in world)
    assert covered == (2**32 - plan.pool.num_addresses - netns.METADATA.num_addresses
                       - sum(o.num_addresses for o in other))


class View:
    def __init__(self, me: str = "node-a") -> None:
        self._me = me
        self.member_list: list[Member] = []
        self.dynos: list[Located] = []
        self.error: Exception | None = None

    @property
    def me(self) -> str:
        return self._me

    def members(self) -> list[Member]:
        if self.error:
            raise self.error
        return list(self.member_list)

    def nodes(self) -> list[Node]:
        return []

    def leader(self) -> str | None:
        return None

    def placements(self, app: str | None = None) -> list[Placement]:
        return []

    def located(self, app: str | None = None) -> list[Located]:
        if self.error:
            raise self.error
        return list(self.dynos)


def test_cluster_network_follows_joins_and_removals(tmp_path: Path) -> None:
    view = View()
    applied: list[list[str]] = []
    ensured: list[Path] = []
    cn = ClusterNetwork(view, netns.plan_bridge("10.213.0.0/20"), tmp_path,
                        apply=lambda _plan, ps: applied.append([str(p.pool) for p in ps]),
                        ensure=lambda _plan, d: ensured.append(d))
    view.member_list = members(("node-a", "10.216.0.1", "10.213.0.0/20"))
    assert cn.sync() and applied == [[]] and ensured == [tmp_path]
    assert not cn.sync()  # nothing changed: nothing applied
    view.member_list += members(("node-b", "10.216.0.2", "10.213.16.0/20"))
    assert cn.sync() and applied[-1] == ["10.213.16.0/20"]
    assert cn.peer_pools() == [IPv4Network("10.213.16.0/20")]
    view.member_list = view.member_list[:1]  # cluster:remove node-b
    assert cn.sync() and applied[-1] == [] and cn.peer_pools() == []
    assert ensured == [tmp_path]
    # etcd unreachable: the error is raised, what was applied stays.
    view.error = Unavailable("etcd at 10.216.0.2:2379: down")
    try:
        cn.sync()
        raise AssertionError("no error")
    except Unavailable:
        pass
    assert len(applied) == 3


def located(node: str, dyno: str, address: str, *, state: str = "up", app: str = "shop",
            gen: int = 1) -> Located:
    return Located(node, app, dyno, state, 3, "standard-1x", gen, address, 5000)


def test_remote_backends_are_other_nodes_up_web_dynos() -> None:
    dynos = [
        located("node-a", "web.1", "10.213.0.2"),  # this machine's: the supervisor's
        located("node-b", "web.2", "10.213.16.3"),
        located("node-b", "web.1", "10.213.16.2"),
        located("node-b", "web.1", "10.213.16.4", gen=2),  # a rollout: both up
        located("node-c", "web.3", "10.213.32.2", state="starting"),
        located("node-c", "worker.1", "10.213.32.3"),
        located("node-c", "web.4", ""),  # no address published
        located("node-c", "web.1", "10.213.32.5", app="blog"),
    ]
    assert remote_backends(dynos, "node-a") == {
        "blog": [Backend("web.1", "10.213.32.5", 5000)],
        "shop": [Backend("web.1", "10.213.16.2", 5000), Backend("web.1", "10.213.16.4", 5000),
                 Backend("web.2", "10.213.16.3", 5000)],
    }


def test_cluster_routes_hand_changes_to_the_router_and_drop_vanished_nodes() -> None:
    class Router:
        def __init__(self) -> None:
            self.calls: list[dict[str, list[Backend]]] = []

        def set_remote(self, backends: dict[str, list[Backend]]) -> None:
            self.calls.append(backends)

    view, router = View(), Router()
    routes = ClusterRoutes(view, router)
    view.dynos = [located("node-b", "web.1", "10.213.16.2")]
    assert routes.sync() and router.calls == [{"shop": [Backend("web.1", "10.213.16.2", 5000)]}]
    assert not routes.sync() and len(router.calls) == 1
    view.dynos = []  # node-b's lease lapsed: its records are gone
    assert routes.sync() and router.calls[-1] == {}


def test_a_follower_goes_on_after_failures_and_stops_when_told() -> None:
    class Counting(Follower):
        name = "counting"

        def __init__(self) -> None:
            super().__init__(0.01)
            self.calls = 0
            self.enough = threading.Event()

        def sync(self) -> bool:
            self.calls += 1
            if self.calls == 5:
                self.enough.set()
            if self.calls < 3:
                raise Unavailable("etcd at 10.216.0.2:2379: down")
            if self.calls == 3:
                raise RuntimeError("a bug")
            return True

    f = Counting()
    f.start()
    assert f.enough.wait(10), f.calls
    f.stop()
    assert f._thread is not None and not f._thread.is_alive()


def test_a_restarted_router_adopts_other_machines_servers_as_theirs() -> None:
    state = parse_servers_state(
        "1\n# be_id be_name srv_id srv_name srv_addr ...\n" + "".join(
            f"4 {be} {i} {name} {ip} 2 {admin} 100 100 40 6 3 2 6 0 0 0 - 5000 - 0 0 - - 0\n"
            for i, (be, name, ip, admin) in enumerate([
                ("app_shop", "web.1_10.213.0.3_5000", "10.213.0.3", 0),
                ("app_shop", "web.1_10.213.16.2_5000", "10.213.16.2", 0),
                ("app_blog", "web.1_10.213.16.5_5000", "10.213.16.5", 0),
                ("app_blog", "web.2_10.213.16.6_5000", "10.213.16.6", 1),  # draining
                ("stats", "x", "127.0.0.1", 0)])))
    local, remote = adopted(state, lambda ip: IPv4Address(ip) in OWN)
    assert local == {"shop": [Backend("web.1", "10.213.0.3", 5000)], "blog": []}
    # blog has no web dyno here: its server is node-b's, for the follower to drop.
    assert remote == {"shop": [Backend("web.1", "10.213.16.2", 5000)],
                      "blog": [Backend("web.1", "10.213.16.5", 5000)]}
    # One machine (no cluster): everything is its own, as before.
    assert adopted(state, lambda _ip: True)[1] == {}
