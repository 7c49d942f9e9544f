"""Leadership and this node's share of the formation, in a cluster.

:class:`Leader` is one thread on every node: about once a second it campaigns for the
``leader`` key on the node's lease (a no-op while another node holds it), and the node
that holds it plans the placements (:func:`dynod.model.placement.place`) from every
app's formation, the nodes alive now and the placements of last time, and writes what
changed. A formation change wakes it at once (``kick``); a node dying shows as its
``nodes/`` key gone with its lease, seen by the next poll: NODE_TTL after the death the
leader moves its dynos, and if the dead node was the leader, the next campaign after
its ``leader`` key lapsed takes over.

:class:`Share` is what this node's supervisor runs: the dynos placed on it, and none
once its lease is surely lapsed (fencing: the others have taken its dynos by then, so
``worker.1`` never runs twice for longer than the lease). Cluster-wide work asks
:meth:`Leader.leading` first: ACM's certificate orders. (Slug gc is each machine's own
disk, and a backup timer lives on the machine whose add-on server it backs up: both stay
on every machine.)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

from dynod.errors import DynodError
from dynod.model.cluster import NODE_TTL, ClusterView
from dynod.model.placement import Formations, LeaderSeat, place
from dynod.system.loop import Loop

log = logging.getLogger(__name__)

POLL = 1.0
# A node stops its dynos this long before its lease surely lapses in etcd (the
# keeper's ``lease_surely_gone_at``), so they are down before the leader, seeing the
# lease gone, places them elsewhere (plan.FENCED_GRACE fits in it).
FENCE_MARGIN = 3.0


class NodeLease:
    """What the node keeper (``dynod.store.etcd_node.NodeKeeper``) tells of this node's
    lease: its id (None while it has none) and the monotonic time after which it has
    surely lapsed (None before the first keep-alive)."""

    def __init__(self, lease_id: Callable[[], int | None],
                 surely_gone_at: Callable[[], float | None],
                 started: float | None = None) -> None:
        self.lease_id = lease_id
        self.surely_gone_at = surely_gone_at
        # Before the keeper's first keep-alive (dynod just started), the lease of the
        # dynod before it may still hold this node's placements: its dynos, adopted,
        # keep running as long as that lease can live (a restart restarts no dyno).
        self.started = time.monotonic() if started is None else started

    def surely_alive(self, now: float | None = None) -> bool:
        gone = self.surely_gone_at()
        now = time.monotonic() if now is None else now
        if gone is None:
            gone = self.started + NODE_TTL
        return now < gone - FENCE_MARGIN


class Leader(Loop):
    """The election and the placement loop of this node (``start``, ``kick``, ``stop``)."""

    name = "leader"

    def __init__(self, view: ClusterView, seat: LeaderSeat, lease: NodeLease,
                 formations: Callable[[], Formations]) -> None:
        super().__init__(POLL)
        self.view = view
        self.seat = seat
        self.lease = lease
        self.formations = formations
        self._leading = False

    def leading(self) -> bool:
        """This node holds ``leader`` and its lease is surely alive."""
        return self._leading and self.lease.surely_alive()

    def step(self) -> None:
        self.tick()

    def failed(self) -> None:
        self._leading = False  # unsure: another node may take over meanwhile

    def tick(self) -> bool:
        """One campaign and, as the leader, one placement pass. True if leading."""
        lease = self.lease.lease_id()
        if lease is None or not self.lease.surely_alive():
            self._leading = False
            return False
        was = self._leading
        self._leading = self.seat.campaign(lease)
        if self._leading != was:
            log.info("placement: %s", "this node is the leader" if self._leading
                     else f"{self.view.leader() or 'no node'} leads")
        if not self._leading:
            return False
        current = self.view.placements()
        plan = place(self.formations(), self.view.nodes(), current)
        if set(plan.placements) != set(current):
            moved = len(set(plan.placements) - set(current))
            dropped = len(set(current) - set(plan.placements))
            if self.seat.write(current, plan.placements):
                log.info("placement: %d placed, %d removed", moved, dropped)
        for w in plan.unplaced:
            log.warning("placement: no node has %d MB free for %s of %s", w.memory_mb,
                        w.dyno, w.app)
        return True


class Share:
    """The dynos this node runs, by app: the placements on it (the last ones read, while
    the cluster's store cannot be reached), none once its lease is surely lapsed."""

    def __init__(self, view: ClusterView, lease: NodeLease) -> None:
        self.view = view
        self.lease = lease
        self._last: dict[str, frozenset[str]] = {}
        self._placed_apps: frozenset[str] = frozenset()

    def fenced(self) -> bool:
        return not self.lease.surely_alive()

    def mine(self) -> Mapping[str, frozenset[str]]:
        if self.fenced():
            return {}
        try:
            found: dict[str, set[str]] = {}
            apps = set()
            for p in self.view.placements():
                apps.add(p.app)
                if p.node == self.view.me:
                    found.setdefault(p.app, set()).add(p.dyno)
            self._last = {app: frozenset(d) for app, d in found.items()}
            self._placed_apps = frozenset(apps)
        except DynodError as exc:
            log.warning("placements unread (%s); running the last ones read", exc.message)
        return self._last

    def placed_anywhere(self, app: str) -> bool:
        """The leader placed some dyno of ``app`` (as of the last :meth:`mine`). An app
        with dynos wanted but none placed yet (a machine's apps just moved into a new
        cluster, a first deploy) is not the leader's decision yet: a node keeps what it
        runs of it and starts nothing."""
        return app in self._placed_apps
