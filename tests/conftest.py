"""Shared test set-up: tiers by marker, and the sandbox machine on the import path."""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Integration and root tests need root on the host; skip them, loudly, without it."""
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root (namespaces, mounts, cgroups)")
    for item in items:
        if "integration" in item.keywords or "root" in item.keywords:
            item.add_marker(skip)
