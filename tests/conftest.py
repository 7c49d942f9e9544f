"""Shared test set-up: tiers by marker, the order tests run in, and the default stack
built early in a parallel run."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest


def pytest_configure(config: pytest.Config) -> None:
    """In a parallel run with integration tests, the controller builds the default stack
    (debootstrap, minutes on a fresh machine; cached after) in a thread from the start, so
    it overlaps the tests that need none. The workers' ``stack`` fixture takes the same
    lock and waits for it; if it failed here, the first test that needs it builds again
    and reports the error."""
    if hasattr(config, "workerinput") or not getattr(config.option, "numprocesses", None):
        return
    if os.geteuid() != 0 or "not integration" in (config.option.markexpr or ""):
        return
    unit = Path(__file__).parent / "unit"
    if config.args and all(Path(a.split("::")[0]).resolve().is_relative_to(unit.resolve())
                           for a in config.args):
        return

    def build() -> None:
        from tests.integration.conftest import built_stack  # noqa: PLC0415 - root runs only

        try:
            built_stack()
        except Exception:  # the fixture builds again and fails the test with the error
            return

    _prebuild.append(threading.Thread(target=build, name="stack-prebuild", daemon=True))
    _prebuild[0].start()


_prebuild: list[threading.Thread] = []


def pytest_unconfigure(config: pytest.Config) -> None:
    """A run that needed no stack still lets the build finish: never leave a debootstrap
    running behind."""
    for thread in _prebuild:
        thread.join()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests that need no built stack first, so the workers run them while the stack is
    being built; in each group the slow ones first, so that the run does not end waiting
    on one. Integration and root tests need root on the host; skip them, loudly, without
    it."""
    items.sort(key=lambda item: ("stack" in getattr(item, "fixturenames", ()),
                                 "slow" not in item.keywords))
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root (namespaces, mounts, cgroups)")
    for item in items:
        if "integration" in item.keywords or "root" in item.keywords:
            item.add_marker(skip)
