"""The leader's keys in etcd: the election on ``leader`` and the ``placement/`` writes
only the leader makes (:class:`dynod.model.placement.LeaderSeat`).

The election is etcd's usual one: ``leader`` is created on the candidate's node lease
only if absent (a txn comparing its create revision with 0), so it vanishes with the
lease when the leader dies or loses etcd, and the next candidate's txn succeeds. Every
placement write compares ``leader`` with this node's name in the same txn, so a leader
that lost its seat (a partition) writes nothing.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

from dynod.model.cluster import Placement, to_json
from dynod.store.etcd_kv import Kv

LEADER = "leader"
# etcd refuses a txn of more than 128 operations (--max-txn-ops); stay well below.
OPS_PER_TXN = 100


def placement_key(p: Placement) -> str:
    return f"placement/{p.app}/{p.dyno}"


class EtcdLeaderSeat:
    """The election and the guarded placement writes of node ``me``."""

    def __init__(self, kv: Kv, me: str) -> None:
        self.kv = kv
        self.me = me

    def campaign(self, lease: int) -> bool:
        absent = {"key": base64.b64encode((self.kv.root + LEADER).encode()).decode(),
                  "target": "CREATE", "result": "EQUAL", "create_revision": 0}
        if self.kv.txn([absent], [self.kv.put_op(LEADER, self.me, lease)]):
            return True
        _, pairs = self.kv.range(LEADER, None, None)
        return bool(pairs) and pairs[0][1] == self.me

    def write(self, old: Sequence[Placement], new: Sequence[Placement]) -> bool:
        keep = {placement_key(p): p for p in new}
        ops: list[dict[str, Any]] = [self.kv.delete_op(placement_key(p)) for p in old
                                     if placement_key(p) not in keep]
        before = {placement_key(p): p for p in old}
        ops += [self.kv.put_op(k, to_json(p)) for k, p in keep.items() if before.get(k) != p]
        guard = [self.kv.compare_value(LEADER, self.me)]
        # One key per dyno: a moved dyno's put replaces its old node in one step.
        for i in range(0, len(ops), OPS_PER_TXN):
            if not self.kv.txn(guard, ops[i:i + OPS_PER_TXN]):
                return False
        return True
