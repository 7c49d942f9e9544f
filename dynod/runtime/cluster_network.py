"""This machine's dyno network in a cluster: routes to every other member's dyno pool
via that member's cluster address, and the nftables sets that let the other members'
routers reach this machine's dynos and keep dynos off the other members and their
dynos (``dynod.system.netns.apply_peers``), kept in step with the cluster's members.

A follower thread reads ``members()`` every second and applies what changed: a member
that joins is routed to within a second or two, one that is removed loses its route
and its access at once. When etcd cannot be read, what was applied stays (a member is
only forgotten once the cluster says it was removed).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from ipaddress import IPv4Network
from pathlib import Path

from dynod.model.cluster import ClusterView
from dynod.runtime.follower import Follower
from dynod.system import netns, peers

log = logging.getLogger(__name__)

# Seconds between two reads of the members.
INTERVAL = 1.0


class ClusterNetwork(Follower):
    """Follows ``view.members()`` into routes and nftables sets. ``peer_pools`` (the
    other members' pools as last applied) is what each new dyno's ``IPAddressAllow=``
    leaves out."""

    name = "cluster-network"

    def __init__(self, view: ClusterView, bridge: netns.BridgePlan, runtime_dir: Path, *,
                 interval: float = INTERVAL,
                 apply: Callable[[netns.BridgePlan, list[peers.Peer]], None] = netns.apply_peers,
                 ensure: Callable[[netns.BridgePlan, Path], object] = netns.ensure_bridge,
                 ) -> None:
        super().__init__(interval)
        self.view = view
        self.bridge = bridge
        self.runtime_dir = runtime_dir
        self._apply = apply
        self._ensure = ensure
        self._applied: list[peers.Peer] | None = None

    def peer_pools(self) -> list[IPv4Network]:
        return [p.pool for p in self._applied or ()]

    def sync(self) -> bool:
        """One pass: read the members, apply them if they changed. True when applied.
        Raises what reading or applying raised (DynodError)."""
        found = peers.plan_peers(
            self.view.me, self.bridge.pool,
            ((m.name, m.address, m.pool) for m in self.view.members()))
        if found == self._applied:
            return False
        if self._applied is None:  # the table and its sets exist before they are filled
            self._ensure(self.bridge, self.runtime_dir)
        self._apply(self.bridge, found)
        gone = {p.pool for p in self._applied or ()} - {p.pool for p in found}
        log.info("cluster network: routes to %s%s",
                 ", ".join(f"{p.pool} via {p.address}" for p in found) or "no other member",
                 f" (removed {', '.join(map(str, sorted(gone)))})" if gone else "")
        self._applied = found
        return True
