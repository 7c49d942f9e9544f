"""Joining a cluster, the pure parts: tokens, the CA a joiner trusts, dyno pools, who
may join and who may be removed, dynod.toml rewritten; and the node keeper against a
real etcd: its lease, its records, the diff it publishes, a lease lost and replaced."""

from __future__ import annotations

import re
import threading
import time
import tomllib
import uuid
from datetime import UTC, datetime

import pytest

from dynod.errors import InvalidArgument, PermissionDenied
from dynod.model.cluster import Located, Member, Node
from dynod.model.dynos import DynoMeta, DynoRef, DynoState
from dynod.model.membership import (
    ca_hash,
    check_ca_hash,
    check_new_member,
    check_token,
    first_pool,
    join_command,
    make_token,
    next_pool,
    removable,
    token_sha256,
    trusted_ca,
)
from dynod.router import local_ca
from dynod.runtime.located import located_of
from dynod.runtime.plan import Dyno
from dynod.settings import settings_text_with
from dynod.store.etcd_cluster import EtcdClusterView, cluster_kv
from dynod.store.etcd_node import NodeKeeper, diff
from tests.etcd.server import Etcd
from tests.unit.conftest import etcd_store

NOW = datetime(2026, 12, 2, tzinfo=UTC)


def member(name: str, n: int, pool: str) -> Member:
    return Member(name, f"10.216.0.{n}", f"10.216.0.{n}:5443", pool)


def test_a_token_is_checked_against_its_hash_only() -> None:
    token = make_token()
    assert token != make_token() and len(token) >= 43
    check_token(token, token_sha256(token))
    with pytest.raises(PermissionDenied, match="the join token is wrong"):
        check_token(make_token(), token_sha256(token))
    with pytest.raises(PermissionDenied, match="the join token is wrong"):
        check_token(token, None)  # no token was ever made
    with pytest.raises(InvalidArgument, match="malformed; copy the whole --token"):
        check_token("short", token_sha256("short"))


def test_the_joiner_trusts_the_ca_of_the_join_commands_hash_only() -> None:
    ca = local_ca.make_ca(NOW, "a")
    other = local_ca.make_ca(NOW, "b")
    chain, _ = local_ca.issue(ca, ("node-a", "10.216.0.2"), NOW)
    leaf, _ = chain.split("-----END CERTIFICATE-----\n", 1)
    presented = [leaf + "-----END CERTIFICATE-----\n", ca.cert_pem]
    assert trusted_ca(presented, ca_hash(ca.cert_pem)) == ca.cert_pem
    with pytest.raises(PermissionDenied, match="not signed by the CA the join command"):
        trusted_ca(presented, ca_hash(other.cert_pem))
    assert check_ca_hash(ca_hash(ca.cert_pem)) == ca_hash(ca.cert_pem)
    with pytest.raises(InvalidArgument, match="expected sha256: and 64 hex digits"):
        check_ca_hash("md5:abc")
    assert join_command("10.216.0.2", "tok", "sha256:ab") == \
        "dynoctl cluster:join 10.216.0.2 --token tok --ca-hash sha256:ab"


def test_pools_the_first_keeps_what_its_dynos_use_the_next_get_free_20s() -> None:
    assert first_pool("10.213.0.0/16", []) == "10.213.0.0/20"
    assert first_pool("10.213.0.0/16", ["10.213.0.2", "10.213.0.9"]) == "10.213.0.0/20"
    # Dynos beyond the first /20 keep their addresses: a wider pool.
    assert first_pool("10.213.0.0/16", ["10.213.0.2", "10.213.17.3"]) == "10.213.0.0/19"
    assert first_pool("10.9.0.0/24", ["10.9.0.5"]) == "10.9.0.0/24"
    members = [member("node-a", 2, "10.213.0.0/20")]
    assert next_pool("10.213.0.0/16", members) == "10.213.16.0/20"
    members.append(member("node-b", 3, "10.213.16.0/20"))
    assert next_pool("10.213.0.0/16", members) == "10.213.32.0/20"
    wide = [member("node-a", 2, "10.213.0.0/19")]
    assert next_pool("10.213.0.0/16", wide) == "10.213.32.0/20"
    full = [member(f"n{i}", i, f"10.213.{16 * i}.0/20") for i in range(16)]
    with pytest.raises(InvalidArgument, match="no free /20 left"):
        next_pool("10.213.0.0/16", full)


def test_a_machine_joins_once() -> None:
    members = [member("node-a", 2, "10.213.0.0/20")]
    check_new_member("node-b", "10.216.0.3", members)
    with pytest.raises(InvalidArgument, match="node node-a is already a member"):
        check_new_member("node-a", "10.216.0.9", members)
    with pytest.raises(InvalidArgument, match=r"10\.216\.0\.2 is already member node-a's"):
        check_new_member("node-b", "10.216.0.2", members)


def test_who_may_be_removed() -> None:
    a, b = member("node-a", 2, "10.213.0.0/20"), member("node-b", 3, "10.213.16.0/20")
    web = [Located("node-b", "shop", f"web.{i}", "up", 3, "standard-1x") for i in (1, 2)]
    assert removable("node-b", "node-a", [a, b], [], force=False) == b
    with pytest.raises(InvalidArgument, match=re.escape(
            "node-b still runs 2 dynos (shop web.1, shop web.2); scale them away, or pass")):
        removable("node-b", "node-a", [a, b], web, force=False)
    assert removable("node-b", "node-a", [a, b], web, force=True) == b
    with pytest.raises(InvalidArgument, match="node-a is this machine"):
        removable("node-a", "node-a", [a, b], [], force=False)
    with pytest.raises(InvalidArgument, match="node-a is the cluster's last member"):
        removable("node-a", "node-a", [a], [], force=True)
    with pytest.raises(InvalidArgument, match="node-x is not a member"):
        removable("node-x", "node-a", [a, b], [], force=False)


def test_dynod_toml_keeps_the_admins_lines_and_replaces_ours() -> None:
    text = ('# my settings\ndomain = "example.test"\nstore = "sqlite"\n'
            'address_pool = "10.213.0.0/16"\n\n')
    new = settings_text_with(text, {"store": "etcd", "address_pool": "10.213.0.0/20",
                                    "node_name": "node-a"}, "cluster:init")
    assert new.startswith('# my settings\ndomain = "example.test"\n\n# cluster:init\n')
    assert tomllib.loads(new) == {"domain": "example.test", "store": "etcd",
                                  "address_pool": "10.213.0.0/20", "node_name": "node-a"}
    assert tomllib.loads(settings_text_with("", {"x": 'a"\\b'}, "why")) == {"x": 'a"\\b'}


def test_located_records_come_from_the_supervisors_dynos() -> None:
    meta = DynoMeta("shop", "web", 1, 2, 5, "cmd", "standard-1x", "10.213.16.2", 5000)
    up = Dyno(DynoRef("shop", "web", 1, 2), meta, DynoState.UP, since=0.0)
    crashed = Dyno(DynoRef("shop", "worker", 1, 1), None, DynoState.CRASHED, since=0.0,
                   release=4, size="basic")
    stopping = Dyno(DynoRef("shop", "web", 1, 1), meta, DynoState.UP, since=0.0,
                    stopping=True)
    assert located_of("node-b", [up, crashed, stopping]) == [
        Located("node-b", "shop", "web.1", "up", 5, "standard-1x", 2, "10.213.16.2", 5000,
                "1970-01-01T00:00:00+00:00"),
        Located("node-b", "shop", "worker.1", "crashed", 4, "basic", 1, "", 0,
                "1970-01-01T00:00:00+00:00")]


def test_diff_puts_what_changed_and_deletes_what_went() -> None:
    assert diff({"a": "1", "b": "2"}, {"a": "1", "b": "3", "c": "4"}) == \
        ({"b": "3", "c": "4"}, [])
    assert diff({"a": "1", "b": "2"}, {"b": "2"}) == ({}, ["a"])


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def web(n: int, state: str = "up") -> Located:
    return Located("node-b", "shop", f"web.{n}", state, 3, "standard-1x", 1,
                   f"10.213.16.{n + 1}", 5000)


def test_the_keeper_publishes_on_its_lease_and_replaces_a_lost_one(
        etcd_server: Etcd) -> None:
    store = etcd_store(etcd_server)
    kv = cluster_kv(store, f"/c-{uuid.uuid4().hex}/")
    view = EtcdClusterView(kv, "node-a")
    node = Node("node-b", "10.216.0.3", "10.216.0.3:5443", "10.213.16.0/20", 8192)
    dynos = [web(1), web(2, "starting")]
    clock = Clock()
    keeper = NodeKeeper(kv, node, lambda: list(dynos), ttl=5, clock=clock)
    assert keeper.lease_surely_gone_at() is None
    keeper._grant()
    keeper.publish()
    assert view.nodes() == [node] and view.located() == dynos
    assert keeper.lease_surely_gone_at() == 1005.0
    clock.now = 1002.0
    keeper.keep_alive()
    assert keeper.lease_surely_gone_at() == 1007.0

    # Only what changed is written: one dyno up, one gone.
    dynos[:] = [web(2)]
    revision = kv.range("nodes/", None, None)[0]
    keeper.publish()
    assert view.located() == [web(2)]
    assert kv.range("nodes/", None, None)[0] == revision + 1  # one txn
    keeper.publish()
    assert kv.range("nodes/", None, None)[0] == revision + 1  # nothing new: no write

    # The lease expires (etcd away for longer than the TTL): everything vanishes, and
    # the next keep-alive finds out; a new lease carries it all again.
    assert keeper.lease is not None
    kv.post("/lease/revoke", {"ID": keeper.lease})
    assert view.nodes() == [] and view.located() == []
    clock.now = 1004.0
    keeper.keep_alive()
    assert keeper.lease is None
    assert keeper.lease_surely_gone_at() == 1007.0  # still the last answered keep-alive
    keeper._grant()
    keeper.publish()
    assert view.nodes() == [node] and view.located() == [web(2)]


def test_the_keepers_thread_follows_changes(etcd_server: Etcd) -> None:
    store = etcd_store(etcd_server)
    kv = cluster_kv(store, f"/c-{uuid.uuid4().hex}/")
    view = EtcdClusterView(kv, "node-a")
    node = Node("node-b", "10.216.0.3", "10.216.0.3:5443", "10.213.16.0/20", 8192)
    dynos: list[Located] = []
    lock = threading.Lock()

    def located() -> list[Located]:
        with lock:
            return list(dynos)

    keeper = NodeKeeper(kv, node, located, ttl=3)
    keeper.start()
    try:
        deadline = time.monotonic() + 10
        while view.nodes() != [node] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert view.nodes() == [node]
        with lock:
            dynos.append(web(1))
        keeper.changed()
        while view.located() != [web(1)] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert view.located() == [web(1)]
        time.sleep(4)  # longer than the TTL: kept alive
        assert view.nodes() == [node]
        gone_at = keeper.lease_surely_gone_at()
        assert gone_at is not None and time.monotonic() < gone_at <= time.monotonic() + 3
    finally:
        keeper.stop()
