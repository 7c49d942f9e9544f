"""Fixtures that boot sandbox machines: a real systemd with dynod.service inside.

``machine``: a fresh machine per test, powered off after it, with a check that it left
nothing on the host. ``shared_machine``: one machine for a whole module, for tests that
only look. ``persistent_machine``: a machine with a state directory, so
``machine.reboot()`` is a host reboot. ``cluster_machines``: three machines for a whole
module on a test network of their own (``machine.test_address`` on each).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from dynod.build import layers, stacks
from tests.sandbox.machine import Machine, Network


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


class NetMachines:
    """Machines on one test network: those ``cluster`` booted, and more with ``add``."""

    def __init__(self, net: Network, binds: Sequence[tuple[str, str]]) -> None:
        self.net = net
        self.binds = list(binds)
        self.machines: list[Machine] = []

    def add(self) -> Machine:
        """One more booted machine on the network (powered off with the others)."""
        m = Machine(binds=self.binds)
        self.machines.append(m)
        m.boot()
        self.net.attach(m)
        return m


@contextlib.contextmanager
def on_network(count: int, binds: Sequence[tuple[str, str]] = ()) -> Iterator[NetMachines]:
    """``count`` booted machines, each attached to one test network of their own; all
    (and those added later) powered off and the network removed afterwards, with a
    residue check of each, also when booting one of them fails."""
    net = Network()
    found = NetMachines(net, binds)
    net.create()
    try:
        for _ in range(count):
            found.add()
        yield found
    finally:
        errors = []
        for m in found.machines:
            try:
                _teardown(m)
            except AssertionError as exc:
                errors.append(str(exc))
        net.destroy()
        left = net.residue()
        if left:
            errors.append(f"network {net.name} left residue on the host: {left}")
        assert not errors, "\n".join(errors)


@contextlib.contextmanager
def cluster(count: int, binds: Sequence[tuple[str, str]] = ()) -> Iterator[list[Machine]]:
    """``count`` booted machines on a test network of their own (see on_network)."""
    with on_network(count, binds) as found:
        yield found.machines


@pytest.fixture(scope="module")
def cluster_machines() -> Iterator[list[Machine]]:
    """Three machines on a test network of their own, for a whole module."""
    with cluster(3) as machines:
        yield machines


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


# ---- a built stack, shared read-only by every machine of the run

TEST_STATE = Path(os.environ.get("DYNOD_TEST_STACKS", "/var/cache/dynod/test-state"))


def built_stack(name: str = stacks.DEFAULT_STACK) -> Path:
    """Build stack ``name`` once per machine (cached across runs), under a file lock so
    parallel test workers wait for one build instead of starting their own."""
    TEST_STATE.mkdir(parents=True, exist_ok=True)
    with (TEST_STATE / f".{name}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return stacks.build_stack(stacks.get_stack(name), TEST_STATE)


def built_layer(layer: str, name: str = stacks.DEFAULT_STACK) -> Path:
    """Build language layer ``layer`` of stack ``name`` once per machine, like
    ``built_stack``."""
    built_stack(name)
    with (TEST_STATE / f".{name}+{layer}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return layers.build_layer(stacks.get_stack(name), layer, TEST_STATE)


@pytest.fixture(scope="session")
def stack() -> Path:
    """The default stack's root on the host (built with debootstrap on first use)."""
    return built_stack()


def stack_bind(root: Path) -> tuple[str, str]:
    """The bind that puts a stack (or a layer of one) built on the host into a machine,
    read-only."""
    return (str(root), f"/var/lib/dynod/stacks/{root.name}:ro")


@pytest.fixture
def stack_machine(stack: Path, request: pytest.FixtureRequest) -> Iterator[Machine]:
    """A fresh machine whose dynod has the default stack built, and the language layers
    the test is marked with (``@pytest.mark.layers("ruby")``)."""
    marker = request.node.get_closest_marker("layers")
    extra = [stack_bind(built_layer(n)) for n in (marker.args if marker else ())]
    m = Machine(binds=[stack_bind(stack), *extra])
    m.boot()
    try:
        yield m
    finally:
        _teardown(m)
