"""Fixtures that boot sandbox machines: a real systemd with dynod.service inside.

``machine``: a fresh machine per test, powered off after it, with a check that it left
nothing on the host. ``shared_machine``: one machine for a whole module, for tests that
only look. ``persistent_machine``: a machine with a state directory, so
``machine.reboot()`` is a host reboot.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.sandbox.machine import Machine


def _teardown(m: Machine) -> None:
    m.shutdown()
    left = m.residue()
    assert not left, f"machine {m.name} left residue on the host: {left}"


@pytest.fixture
def machine() -> Iterator[Machine]:
    m = Machine()
    m.boot()
    try:
        yield m
    finally:
        _teardown(m)


@pytest.fixture(scope="module")
def shared_machine() -> Iterator[Machine]:
    m = Machine()
    m.boot()
    try:
        yield m
    finally:
        _teardown(m)


@pytest.fixture
def persistent_machine(tmp_path: Path) -> Iterator[Machine]:
    m = Machine(state_dir=tmp_path / "state")
    m.boot()
    try:
        yield m
    finally:
        _teardown(m)
