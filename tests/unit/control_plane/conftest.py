"""Fixtures of the control-plane tests: ``api``, an in-process server with stubs, on
each store (SQLite, and etcd: a real etcd on 127.0.0.1, one per session, a fresh key
prefix per test), so both behave the same."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from dynod.store.etcd import EtcdSettings, EtcdStore
from dynod.store.sqlite import SqliteStore
from tests.etcd.server import Etcd, running_etcd
from tests.unit.control_plane.harness import Api, start

STORES = ["sqlite", "etcd"]


@pytest.fixture(scope="session")
def etcd_server() -> Iterator[Etcd]:
    with running_etcd() as etcd:
        yield etcd


def open_store(kind: str, tmp_path: Path,
               request: pytest.FixtureRequest) -> SqliteStore | EtcdStore:
    """A new empty store of ``kind``."""
    if kind == "sqlite":
        return SqliteStore.open(tmp_path / "state" / "state.db")
    etcd: Etcd = request.getfixturevalue("etcd_server")
    return EtcdStore(EtcdSettings((etcd.endpoint,), root=f"/t-{uuid.uuid4().hex}/"))


@pytest.fixture(params=STORES)
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def api(tmp_path: Path, store_kind: str, request: pytest.FixtureRequest) -> Iterator[Api]:
    client, server = start(tmp_path, open_store(store_kind, tmp_path, request))
    try:
        yield client
    finally:
        client.channel.close()
        server.stop(None).wait()
        client.store.close()
