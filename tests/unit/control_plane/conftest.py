"""Fixtures of the control-plane tests: ``api``, an in-process server with stubs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.control_plane.harness import Api, start


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    client, server = start(tmp_path)
    try:
        yield client
    finally:
        client.channel.close()
        server.stop(None).wait()
        client.store.close()
