"""In a cluster, the git user's authorized_keys follows keys added through another
machine's API: no event reaches this machine, so the composition root compares the file
with the store every few seconds, and rewrites it only when they differ."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from dynod import __main__ as composition
from dynod.control import keys
from dynod.model.events import EventBus
from dynod.store.etcd import EtcdStore
from tests.etcd.server import Etcd
from tests.unit.conftest import etcd_store
from tests.unit.test_keys_gitpush import ED

SHELL = ["/usr/bin/python3", "-m", "dynod.cli.gitpush", "shell"]


def test_a_key_added_on_one_machine_reaches_the_others_file(
        etcd_server: Etcd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = etcd_store(etcd_server)
    b = EtcdStore(a.settings)  # another machine: its own client of the same store
    follower = keys.AuthorizedKeys(b, tmp_path / "b-home", SHELL)
    follower.sync()
    target = tmp_path / "b-home" / ".ssh" / "authorized_keys"
    before = target.stat().st_ino
    follower.sync()  # nothing changed: the file is left as it is
    assert target.stat().st_ino == before
    monkeypatch.setattr(composition, "KEYS_FOLLOW_INTERVAL", 0.05)
    stop = threading.Event()
    thread = threading.Thread(target=composition.follow_keys, args=(follower, stop))
    thread.start()
    try:
        added = keys.add_key(a, EventBus(), f"ssh-ed25519 {ED} alice", "root")
        deadline = time.monotonic() + 10
        while added.id not in target.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert f"gitpush shell {added.id}\"," in target.read_text()
    finally:
        stop.set()
        thread.join(5)
        a.close()
        b.close()
    assert not thread.is_alive()
