"""The other members of a cluster as this machine's dyno network sees them: routes to
their dyno pools and the nftables sets that let their routers in and keep dynos out
(pure; ``netns.apply_peers`` applies them).

An add-on server listens on its machine's bridge gateway (the first address of that
machine's pool), which is also what its URL names: the other members' dynos reach it
over the route to that pool. The ``peer_gateways`` set lets a dyno's connections to
another member's gateway (unprivileged ports only) leave this machine; that member's
own add-on sets then decide (``system/addon_firewall.py``), as they do for its dynos.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

NFT_TABLE = "dynod"  # netns's table (family ip)
# Sets of the other members of a cluster: their addresses on the cluster network (their
# routers open connections to this machine's dynos from there) and their dyno pools.
PEER_HOSTS = "peer_hosts"
PEER_POOLS = "peer_pools"
# The other members' bridge gateways, where their add-on servers listen.
PEER_GATEWAYS = "peer_gateways"


@dataclass(frozen=True)
class Peer:
    """Another member of the cluster, as this machine's network needs it: its address
    on the cluster network and its dyno pool."""

    address: IPv4Address
    pool: IPv4Network

    @property
    def gateway(self) -> IPv4Address:
        """Its bridge's address (``netns.BridgePlan.gateway``: the pool's first host),
        where its add-on servers listen."""
        return self.pool.network_address + 1


def plan_peers(me: str, own: IPv4Network,
               members: Iterable[tuple[str, str, str]]) -> list[Peer]:
    """The peers of ``me`` (whose pool is ``own``) among ``(name, address, pool)``
    members, sorted. Left out, since no route is better than a wrong one: ``me``,
    members with no address or pool yet or a malformed one, a pool that holds ``own``
    (a route there would take this machine's own dynos away) and any pool overlapping
    another member's (the members' allocation went wrong; neither gets a route).
    A peer pool inside ``own`` is kept: the first machine of a cluster whose pool is
    still the whole range while the others have theirs."""
    found = set()
    for name, address, pool in members:
        if name == me:
            continue
        try:
            peer = Peer(IPv4Address(address), IPv4Network(pool, strict=True))
        except ValueError:
            continue
        if not own.subnet_of(peer.pool):
            found.add(peer)
    clash = {p for p in found for q in found if p != q and p.pool.overlaps(q.pool)}
    return sorted(found - clash, key=lambda p: (int(p.pool.network_address), int(p.address)))


def render_peer_sets(peers: Iterable[Peer]) -> str:
    """The ``peer_hosts``, ``peer_pools`` and ``peer_gateways`` sets made equal to
    ``peers``, in one transaction (``nft -f``, after ``render_nftables``)."""
    peers = list(peers)
    t = f"ip {NFT_TABLE}"
    lines = [f"flush set {t} {name}" for name in (PEER_HOSTS, PEER_POOLS, PEER_GATEWAYS)]
    hosts = sorted({p.address for p in peers}, key=int)
    pools = sorted({p.pool for p in peers})
    gateways = sorted({p.gateway for p in peers}, key=int)
    for name, items in ((PEER_HOSTS, hosts), (PEER_POOLS, pools),
                        (PEER_GATEWAYS, gateways)):
        if items:
            lines.append(f"add element {t} {name} {{ {', '.join(map(str, items))} }}")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class PeerRoute:
    dst: IPv4Network
    via: IPv4Address


def plan_peer_routes(peers: Iterable[Peer]) -> list[PeerRoute]:
    return sorted({PeerRoute(p.pool, p.address) for p in peers},
                  key=lambda r: (int(r.dst.network_address), r.dst.prefixlen))


