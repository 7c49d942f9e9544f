"""Placement: which node of a cluster runs each dyno of every formation. Pure.

The leader (one node, elected on the ``leader`` key) calls :func:`place` with every
app's formation, the nodes alive now and the placements it wrote last time, and writes
back what it returns. The rules, in order:

1. A placement is kept while its dyno is still wanted (its number within the type's
   quantity) and its node is alive and can still hold it: a scale or a node joining
   moves nothing that runs (no churn).
2. Dynos of a node that vanished (its lease lapsed), and new ones (a scale up), go to
   the node with room (dyno sizes' ``memory_mb`` against the node's ``memory_mb``)
   that has the fewest of that app's type, then the fewest dynos, then the most free
   memory: 6 web on 3 nodes are 2/2/2.
3. Numbers beyond the quantity are dropped; a dyno no node has room for is left
   unplaced (``Plan.unplaced``) and runs nowhere until room appears.

``ps:scale`` asks :func:`shortfall` first, so a formation the cluster cannot hold is
refused with the figures rather than half placed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from dynod.model.cluster import Node, Placement
from dynod.model.formation import Process
from dynod.model.sizes import DEFAULT_SIZE, SIZES

Formations = Mapping[str, Sequence[Process]]  # app -> its process types


def memory_of(size: str) -> int:
    """A dyno size's memory in MB (an unknown size counts as the default's)."""
    return (SIZES.get(size) or SIZES[DEFAULT_SIZE]).memory_mb


@dataclass(frozen=True)
class Wanted:
    """One dyno a formation wants: ``web.2`` of ``shop`` at 512 MB."""

    app: str
    dyno: str
    memory_mb: int

    @property
    def process_type(self) -> str:
        return self.dyno.rsplit(".", 1)[0]


@dataclass(frozen=True)
class Plan:
    placements: tuple[Placement, ...]
    unplaced: tuple[Wanted, ...] = ()


def wanted(formations: Formations) -> list[Wanted]:
    """Every dyno of every formation, by app, type and number."""
    return [Wanted(app, f"{p.type}.{n}", memory_of(p.size))
            for app in sorted(formations)
            for p in sorted(formations[app], key=lambda p: p.type)
            for n in range(1, p.quantity + 1)]


class _Nodes:
    """What each alive node holds while a plan is made."""

    def __init__(self, nodes: Iterable[Node]) -> None:
        self.free = {n.name: n.memory_mb for n in nodes}
        self.count: dict[str, int] = dict.fromkeys(self.free, 0)
        self.of_type: dict[tuple[str, str, str], int] = {}

    def fits(self, node: str, w: Wanted) -> bool:
        return node in self.free and self.free[node] >= w.memory_mb

    def take(self, node: str, w: Wanted) -> Placement:
        self.free[node] -= w.memory_mb
        self.count[node] += 1
        key = (node, w.app, w.process_type)
        self.of_type[key] = self.of_type.get(key, 0) + 1
        return Placement(w.app, w.dyno, node)

    def best(self, w: Wanted) -> str | None:
        room = [n for n in self.free if self.fits(n, w)]
        if not room:
            return None
        return min(room, key=lambda n: (self.of_type.get((n, w.app, w.process_type), 0),
                                        self.count[n], -self.free[n], n))


def place(formations: Formations, nodes: Iterable[Node],
          current: Iterable[Placement]) -> Plan:
    """The placements for ``formations`` on the alive ``nodes``, keeping ``current``
    ones where they may stay (see the module's rules). Deterministic."""
    room = _Nodes(nodes)
    want = wanted(formations)
    where = {(p.app, p.dyno): p.node for p in current}
    out: dict[tuple[str, str], Placement] = {}
    for w in want:  # 1. keep
        node = where.get((w.app, w.dyno))
        if node is not None and room.fits(node, w):
            out[(w.app, w.dyno)] = room.take(node, w)
    unplaced = []
    # 2. the rest, biggest first so that a large dyno is not crowded out by small ones
    for w in sorted((w for w in want if (w.app, w.dyno) not in out),
                    key=lambda w: -w.memory_mb):
        node = room.best(w)
        if node is None:
            unplaced.append(w)
        else:
            out[(w.app, w.dyno)] = room.take(node, w)
    order = {(w.app, w.dyno): i for i, w in enumerate(want)}
    return Plan(tuple(sorted(out.values(), key=lambda p: order[(p.app, p.dyno)])),
                tuple(sorted(unplaced, key=lambda w: order[(w.app, w.dyno)])))


@dataclass(frozen=True)
class Shortfall:
    """A formation the cluster cannot hold: ``process`` of ``app`` needs more memory."""

    app: str
    process: Process
    free_mb: int  # what the cluster has left beside every other dyno
    total_mb: int  # every alive node's memory

    def message(self) -> str:
        p = self.process
        return (f"Not enough memory for {p.type}={p.quantity} ({p.size}, "
                f"{memory_of(p.size)} MB each): the cluster has {self.free_mb} MB free of "
                f"{self.total_mb} MB; scale down or add a machine")


def shortfall(formations: Formations, nodes: Sequence[Node], current: Iterable[Placement],
              app: str, types: Iterable[str]) -> Shortfall | None:
    """Whether ``formations`` (with ``app``'s scaled ``types`` already changed) leaves a
    dyno of those types unplaced; None if the cluster holds it all."""
    changed = set(types)
    plan = place(formations, nodes, current)
    short = [w for w in plan.unplaced if w.app == app and w.process_type in changed]
    if not short:
        return None
    procs = {p.type: p for p in formations[app]}
    process = procs[short[0].process_type]
    total = sum(n.memory_mb for n in nodes)
    others = sum(w.memory_mb for w in wanted(formations)
                 if not (w.app == app and w.process_type == process.type))
    return Shortfall(app, process, max(0, total - others), total)


class LeaderSeat(Protocol):
    """The ``leader`` key and the ``placement/`` keys it guards (etcd's implementation
    is :class:`dynod.store.etcd_leader.EtcdLeaderSeat`). Raises Unavailable when the
    cluster's store cannot be reached."""

    def campaign(self, lease: int) -> bool:
        """Take ``leader`` for this node on ``lease`` if nobody holds it; True if this
        node holds it now."""
        ...

    def write(self, old: Sequence[Placement], new: Sequence[Placement]) -> bool:
        """Replace the placements ``old`` by ``new``, only while this node is the
        leader (compare and swap on ``leader``); False if it is not."""
        ...
