"""Fixtures of the control-plane tests: ``api``, an in-process server with stubs, on
each store (SQLite, and etcd: a real etcd on 127.0.0.1, a fresh key prefix per test),
so both behave the same."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.conftest import open_store
from tests.unit.control_plane.harness import Api, serving


@pytest.fixture
def api(tmp_path: Path, store_kind: str, request: pytest.FixtureRequest) -> Iterator[Api]:
    with serving(tmp_path, open_store(store_kind, tmp_path, request)) as client:
        yield client
