"""Fixtures shared by the unit tests: ``etcd_server``, a real etcd on 127.0.0.1 (one per
test process, started on first use) and ``open_store``'s empty stores of each kind."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from dynod.store.etcd import EtcdSettings, EtcdStore
from dynod.store.sqlite import SqliteStore
from tests.etcd.server import Etcd, running_etcd

STORES = ["sqlite", "etcd"]


@pytest.fixture(scope="session")
def etcd_server() -> Iterator[Etcd]:
    with running_etcd() as etcd:
        yield etcd


def etcd_store(etcd: Etcd) -> EtcdStore:
    """A new empty etcd store: its own key prefix in the shared etcd."""
    return EtcdStore(EtcdSettings((etcd.endpoint,), root=f"/t-{uuid.uuid4().hex}/"))


def open_store(kind: str, tmp_path: Path,
               request: pytest.FixtureRequest) -> SqliteStore | EtcdStore:
    """A new empty store of ``kind``."""
    if kind == "sqlite":
        return SqliteStore.open(tmp_path / "state" / "state.db")
    return etcd_store(request.getfixturevalue("etcd_server"))


@pytest.fixture(params=STORES)
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)
