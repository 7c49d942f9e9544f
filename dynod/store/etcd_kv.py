"""The etcd store's key-value transactions, on etcd's v3 API through ``etcd3gw``.

A transaction reads at one etcd revision (the first range's), so it sees a consistent
snapshot however long it runs, plus its own writes, which it buffers. A write
transaction holds the store's write lock, a key on the process's lease, and commits as
one etcd txn whose compares are the compare-and-swap: the lock key still holds this
process's id (the lease did not lapse while it ran) and the guard key, which every commit
rewrites, is unchanged since the snapshot. So writers of every machine are serialised,
each sees the last one's commit, and a writer that lost its lock changes nothing.
"""

from __future__ import annotations

import base64
import contextlib
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

from etcd3gw.client import Etcd3Client
from etcd3gw.exceptions import Etcd3Exception
from etcd3gw.lease import Lease

from dynod.errors import Unavailable

LOCK_TTL = 10  # seconds; the lease is refreshed every third of it


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _text(b64: str) -> str:
    return base64.b64decode(b64).decode()


def prefix_end(prefix: str) -> str:
    """The end of etcd's range of keys starting with ``prefix`` (its last byte + 1)."""
    raw = prefix.encode()
    return (raw[:-1] + bytes([raw[-1] + 1])).decode()


class Kv:
    """One etcd client and the store's root prefix; every call names what failed."""

    def __init__(self, client: Etcd3Client, root: str, where: str) -> None:
        self.client = client
        self.root = root
        self.where = where

    def post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        try:
            result: dict[str, Any] = self.client.post(self.client.get_url(path), json=payload)
        except Etcd3Exception as exc:
            raise Unavailable(f"etcd at {self.where}: {exc}; check that etcd runs and "
                              "dynod.toml's etcd_endpoints and TLS files") from exc
        return result

    def range(self, key: str, end: str | None, revision: int | None, *,
              newest: int | None = None) -> tuple[int, list[tuple[str, str]]]:
        """The header revision and the (key, value) pairs of ``[key, end)`` (or ``key``),
        relative to the root; only the ``newest`` last keys, last first, if given."""
        payload: dict[str, Any] = {"key": _b64(self.root + key)}
        if newest is not None:
            payload.update(limit=newest, sort_order=2, sort_target=0)  # DESCEND by KEY
        if end is not None:
            payload["range_end"] = _b64(self.root + end)
        if revision is not None:
            payload["revision"] = revision
        result = self.post("/kv/range", payload)
        n = len(self.root)
        pairs = [(_text(kv["key"])[n:], _text(kv.get("value", "")))
                 for kv in result.get("kvs", [])]
        return int(result["header"]["revision"]), pairs

    def everything(self) -> list[tuple[str, str]]:
        """Every (key, value) under the root, the store's bookkeeping too, by key."""
        result = self.post("/kv/range", {"key": _b64(self.root),
                                         "range_end": _b64(prefix_end(self.root))})
        n = len(self.root)
        return [(_text(kv["key"])[n:], _text(kv.get("value", "")))
                for kv in result.get("kvs", [])]

    def txn(self, compare: list[dict[str, Any]], success: list[dict[str, Any]]) -> bool:
        result = self.post("/kv/txn", {"compare": compare, "success": success})
        return bool(result.get("succeeded", False))

    def compare_value(self, key: str, value: str) -> dict[str, Any]:
        return {"key": _b64(self.root + key), "target": "VALUE", "result": "EQUAL",
                "value": _b64(value)}

    def put_op(self, key: str, value: str, lease: int | None = None) -> dict[str, Any]:
        op: dict[str, Any] = {"key": _b64(self.root + key), "value": _b64(value)}
        if lease is not None:
            op["lease"] = lease
        return {"request_put": op}

    def delete_op(self, key: str, end: str | None = None) -> dict[str, Any]:
        op = {"key": _b64(self.root + key)}
        if end is not None:
            op["range_end"] = _b64(self.root + end)
        return {"request_delete_range": op}


GUARD = "meta/guard"
LOCK = "meta/write-lock"


class KvTx:
    """Reads at one revision with this transaction's writes over them; the writes are
    kept until :meth:`ops` hands them to the commit."""

    def __init__(self, kv: Kv) -> None:
        self.kv = kv
        self.revision: int | None = None
        self._known: dict[str, str | None] = {}
        self._scanned: list[str] = []
        self._puts: dict[str, str | None] = {}
        self._range_deletes: list[str] = []

    def _covered(self, key: str) -> bool:
        return any(key.startswith(p) for p in self._scanned)

    def _fetch(self, key: str, end: str | None, newest: int | None = None
               ) -> list[tuple[str, str]]:
        revision, pairs = self.kv.range(key, end, self.revision, newest=newest)
        if self.revision is None:
            self.revision = revision
        return pairs

    def start(self) -> None:
        """Fix the snapshot's revision now (the guard's range)."""
        if self.revision is None:
            self.get(GUARD)

    def get(self, key: str) -> str | None:
        if key not in self._known and not self._covered(key):
            pairs = self._fetch(key, None)
            self._known[key] = pairs[0][1] if pairs else None
        return self._known.get(key)

    def scan(self, prefix: str) -> list[tuple[str, str]]:
        """The (key, value) pairs under ``prefix``, by key."""
        if not self._covered(prefix):
            for key, value in self._fetch(prefix, prefix_end(prefix)):
                self._known.setdefault(key, value)
            self._scanned.append(prefix)
        return sorted((k, v) for k, v in self._known.items()
                      if v is not None and k.startswith(prefix))

    def newest(self, prefix: str, limit: int) -> list[tuple[str, str]]:
        """The last ``limit`` (key, value) pairs under ``prefix``, last first, fetching
        only those unless the prefix was scanned."""
        if not self._covered(prefix):
            fetched = self._fetch(prefix, prefix_end(prefix), limit)
            for key, value in fetched:
                self._known.setdefault(key, value)
            found = sorted(((k, v) for k, v in self._known.items()
                            if v is not None and k.startswith(prefix)
                            and (k in self._puts or k in dict(fetched))), reverse=True)
            if len(found) >= limit or len(fetched) < limit:
                return found[:limit]
        return list(reversed(self.scan(prefix)))[:limit]

    def put(self, key: str, value: str) -> None:
        self._known[key] = value
        self._puts[key] = value

    def delete(self, key: str) -> None:
        if self.get(key) is not None or key in self._puts:
            self._known[key] = None
            self._puts[key] = None

    def delete_prefix(self, prefix: str) -> None:
        for key, _ in self.scan(prefix):
            self._known[key] = None
            self._puts.pop(key, None)
        self._range_deletes.append(prefix)

    def ops(self) -> list[dict[str, Any]]:
        out = [self.kv.delete_op(p, prefix_end(p)) for p in self._range_deletes]
        for key, value in self._puts.items():
            if any(key.startswith(p) for p in self._range_deletes):
                if value is not None:  # re-added after its prefix went
                    out.append(self.kv.put_op(key, value))
            elif value is None:
                out.append(self.kv.delete_op(key))
            else:
                out.append(self.kv.put_op(key, value))
        return out


class WriteLock:
    """The store-wide write lock: a thread lock inside the process, a key on the
    process's lease across processes and machines (polled while another holds it)."""

    def __init__(self, kv: Kv, timeout: float) -> None:
        self.kv = kv
        self.timeout = timeout
        self.owner = f"{uuid.uuid4()}"
        self._thread_lock = threading.Lock()
        self._lease: Lease | None = None
        self._lease_lock = threading.Lock()
        self._stop = threading.Event()
        self._keeper: threading.Thread | None = None

    def _lease_id(self) -> int:
        with self._lease_lock:
            if self._lease is None:
                try:
                    self._lease = self.kv.client.lease(LOCK_TTL)
                except Etcd3Exception as exc:
                    raise Unavailable(f"etcd at {self.kv.where}: {exc}") from exc
                if self._keeper is None:
                    self._keeper = threading.Thread(target=self._keep, daemon=True,
                                                    name="etcd-lease")
                    self._keeper.start()
            return int(self._lease.id)

    def _keep(self) -> None:
        while not self._stop.wait(LOCK_TTL / 3):
            with self._lease_lock:
                lease = self._lease
            try:
                alive = lease is not None and lease.refresh() > 0
            except Etcd3Exception:
                alive = False
            if not alive:
                with self._lease_lock:
                    self._lease = None  # the next write takes a new one

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        deadline = time.monotonic() + self.timeout
        if not self._thread_lock.acquire(timeout=self.timeout):
            raise Unavailable("the state store's write lock is busy; try again")
        try:
            pause = 0.002
            while not self.kv.txn(
                    [{"key": _b64(self.kv.root + LOCK), "target": "CREATE",
                      "result": "EQUAL", "create_revision": 0}],
                    [self.kv.put_op(LOCK, self.owner, self._lease_id())]):
                if time.monotonic() > deadline:
                    raise Unavailable("another dynod has held the etcd store's write lock "
                                      f"for {self.timeout:.0f}s; try again")
                time.sleep(pause)
                pause = min(pause * 2, 0.05)
            try:
                yield
            finally:
                # A no-op after a commit, which deleted the lock key itself.
                self.kv.txn([self.kv.compare_value(LOCK, self.owner)],
                            [self.kv.delete_op(LOCK)])
        finally:
            self._thread_lock.release()

    def close(self) -> None:
        self._stop.set()
        with self._lease_lock:
            lease, self._lease = self._lease, None
        if lease is not None:
            with contextlib.suppress(Etcd3Exception):
                lease.revoke()


def commit(kv: Kv, tx: KvTx, owner: str) -> None:
    """Apply ``tx``'s writes if it still holds the lock and nothing committed since its
    snapshot; release the lock in the same txn. Raises Unavailable, changing nothing."""
    assert tx.revision is not None
    ops = tx.ops()
    if not ops:
        return
    guard = {"key": _b64(kv.root + GUARD), "target": "MOD", "result": "LESS",
             "mod_revision": tx.revision + 1}
    ops += [kv.put_op(GUARD, str(tx.revision)), kv.delete_op(LOCK)]
    if not kv.txn([kv.compare_value(LOCK, owner), guard], ops):
        raise Unavailable("the etcd store's write lock lapsed during a change (dynod "
                          "stalled longer than its lease): nothing was changed; try again")
