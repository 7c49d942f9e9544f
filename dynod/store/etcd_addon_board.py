"""The add-on board in etcd (:class:`dynod.model.cluster.AddonBoard`): each node's
``addon-clients/<node>/<key>`` and ``addon-admitted/<node>``, on the node's lease, so
they vanish with the node the way its ``dynos/`` records do.

Writes follow the node keeper's way (``etcd_node``): only what changed since the last
publish, in one txn; a new lease (the keeper took one after etcd lost the last)
re-publishes everything on it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from dynod.errors import Unavailable
from dynod.model.cluster import AddonAdmitted, AddonClient, from_json, to_json
from dynod.store.etcd_kv import Kv, prefix_end
from dynod.store.etcd_node import write_diff

CLIENTS = "addon-clients/"
ADMITTED = "addon-admitted/"


class EtcdAddonBoard:
    """Node ``me``'s view of the board; ``lease()`` is its lease now (None before the
    keeper has one). Thread-safe."""

    def __init__(self, kv: Kv, me: str, lease: Callable[[], int | None]) -> None:
        self.kv = kv
        self.me = me
        self.lease = lease
        self._lock = threading.Lock()
        # On which lease this node's clients and its admitted record were last put.
        self._clients: tuple[int, dict[str, str]] | None = None
        self._admitted: tuple[int, str] | None = None

    def _current_lease(self) -> int:
        lease = self.lease()
        if lease is None:
            raise Unavailable(f"node {self.me}: no lease in etcd yet; its add-on records "
                              "are published once it has one")
        return lease

    def publish_clients(self, clients: Sequence[AddonClient]) -> None:
        mine = f"{CLIENTS}{self.me}/"
        wanted = {f"{mine}{c.key}": to_json(c) for c in clients if c.node == self.me}
        lease = self._current_lease()
        with self._lock:
            if self._clients is None or self._clients[0] != lease:
                # A new lease: whatever an earlier one (an earlier dynod) left goes.
                _, pairs = self.kv.range(mine, prefix_end(mine), None)
                published = {k: "" for k, _ in pairs}
            else:
                published = self._clients[1]
            write_diff(self.kv, lease, published, wanted)
            self._clients = (lease, wanted)

    def clients(self) -> list[AddonClient]:
        _, pairs = self.kv.range(CLIENTS, prefix_end(CLIENTS), None)
        return [from_json(AddonClient, value) for _, value in pairs]

    def publish_admitted(self, admitted: AddonAdmitted) -> None:
        value = to_json(admitted)
        lease = self._current_lease()
        with self._lock:
            if self._admitted == (lease, value):
                return
            self.kv.txn([], [self.kv.put_op(f"{ADMITTED}{self.me}", value, lease)])
            self._admitted = (lease, value)

    def admitted(self) -> list[AddonAdmitted]:
        _, pairs = self.kv.range(ADMITTED, prefix_end(ADMITTED), None)
        return [from_json(AddonAdmitted, value) for _, value in pairs]
