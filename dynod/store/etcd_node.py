"""The node keeper: this machine's lease, and what it says on it.

Each node's dynod holds a lease of ``NODE_TTL`` seconds and keeps it alive; on it sit
``nodes/<me>`` (its :class:`~dynod.model.cluster.Node`) and one
``dynos/<me>/<app>/<type>.<n>@<gen>`` :class:`~dynod.model.cluster.Located` per dyno
the supervisor has. When the machine dies or loses etcd, the lease lapses and all of it
vanishes. The dynos' records follow the supervisor: each pass publishes only what
changed since the last (one txn), and a lease lost (expired while etcd was away) is
replaced by a new one as soon as etcd answers, everything re-published on it.

Fencing reads :meth:`NodeKeeper.lease_surely_gone_at`: the monotonic time of the start
of the last keep-alive etcd answered, plus the TTL; after it, the cluster surely holds
this node dead.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping

from dynod.errors import DynodError
from dynod.model.cluster import NODE_TTL, Located, Node, to_json
from dynod.store.etcd_kv import Kv, prefix_end

log = logging.getLogger(__name__)
BATCH = 100  # operations per txn, under etcd's default --max-txn-ops of 128


def located_key(d: Located) -> str:
    return f"dynos/{d.node}/{d.app}/{d.dyno}@{d.generation}"


def diff(published: Mapping[str, str], wanted: Mapping[str, str]
         ) -> tuple[dict[str, str], list[str]]:
    """What to put and what to delete so that ``published`` becomes ``wanted``."""
    puts = {k: v for k, v in wanted.items() if published.get(k) != v}
    return puts, sorted(set(published) - set(wanted))


def write_diff(kv: Kv, lease: int, published: Mapping[str, str],
               wanted: Mapping[str, str]) -> None:
    """Put on ``lease`` what ``wanted`` changed since ``published`` and delete what it
    dropped, in txns of ``BATCH`` operations."""
    puts, deletes = diff(published, wanted)
    ops = [kv.put_op(k, v, lease) for k, v in puts.items()]
    ops += [kv.delete_op(k) for k in deletes]
    for i in range(0, len(ops), BATCH):
        kv.txn([], ops[i:i + BATCH])


class NodeKeeper:
    """Keeps node ``node``'s lease and records in etcd (``kv``: the cluster's keys).
    ``located()`` is this node's dynos now. ``clock`` is monotonic."""

    def __init__(self, kv: Kv, node: Node, located: Callable[[], list[Located]],
                 ttl: int = NODE_TTL, clock: Callable[[], float] = time.monotonic) -> None:
        self.kv = kv
        self.node = node
        self.located = located
        self.ttl = ttl
        self.clock = clock
        self.lease: int | None = None
        self.published: dict[str, str] = {}
        self._last_ok: float | None = None
        self._kick = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def lease_surely_gone_at(self) -> float | None:
        """:meth:`dynod.model.membership.NodeLease.lease_surely_gone_at`."""
        last = self._last_ok
        return None if last is None else last + self.ttl

    def changed(self) -> None:
        """The supervisor's dynos changed: publish soon."""
        self._kick.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="node-keeper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop keeping the lease. It is not revoked: the dynos go on running through a
        restart of dynod, and the next one takes over their records."""
        self._stop.set()
        self._kick.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        next_keepalive = 0.0
        while not self._stop.is_set():
            try:
                if self.lease is None:
                    self._grant()
                    next_keepalive = self.clock() + self.ttl / 3
                elif self.clock() >= next_keepalive:
                    self.keep_alive()
                    next_keepalive = self.clock() + self.ttl / 3
                if self.lease is not None:
                    self.publish()
            except DynodError as exc:
                log.warning("node %s: %s", self.node.name, exc.message)
            self._kick.wait(1.0)
            self._kick.clear()

    def _grant(self) -> None:
        started = self.clock()
        result = self.kv.post("/lease/grant", {"TTL": self.ttl})
        self.lease = int(result["ID"])
        self._last_ok = started
        self.published = {}
        # Any records of an earlier lease (a restarted dynod) move onto this one.
        self.kv.txn([], [self.kv.put_op(f"nodes/{self.node.name}", to_json(self.node),
                                        self.lease)])
        log.info("node %s: lease %x of %d s", self.node.name, self.lease, self.ttl)

    def keep_alive(self) -> None:
        """One keep-alive; a lease etcd no longer knows is dropped (a new one follows)."""
        assert self.lease is not None
        started = self.clock()
        result = self.kv.post("/lease/keepalive", {"ID": self.lease})
        if int(result.get("result", {}).get("TTL", 0)) <= 0:
            log.warning("node %s: lease %x expired; taking a new one", self.node.name,
                        self.lease)
            self.lease = None
            return
        self._last_ok = started

    def publish(self) -> None:
        """Put the dynos' records that changed and delete those gone, in one txn."""
        assert self.lease is not None
        mine = f"dynos/{self.node.name}/"
        wanted = {located_key(d): to_json(d) for d in self.located()
                  if d.node == self.node.name}
        if not self.published:
            # A new lease: whatever an earlier dynod left under dynos/<me>/ goes.
            _, pairs = self.kv.range(mine, prefix_end(mine), None)
            self.published = {k: "" for k, _ in pairs}
        write_diff(self.kv, self.lease, self.published, wanted)
        self.published = wanted
