"""Apps' own uids and rollout generations (state migration 2)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from dynod.control import apps
from dynod.model.events import EventBus
from dynod.store import migrations
from dynod.store.migrations import FIRST_APP_UID
from dynod.store.sqlite import SqliteStore


def test_uids_are_allocated_in_order_and_never_reused(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path / "state.db")
    apps.create_app(store, EventBus(), "shop", "alice")
    apps.create_app(store, EventBus(), "blog", "alice")
    apps.delete_app(store, EventBus(), tmp_path / "slugs", "blog")
    apps.create_app(store, EventBus(), "wiki", "alice")
    with store.read() as tx:
        assert [tx.app_uid(n) for n in ("shop", "blog", "wiki")] == [
            FIRST_APP_UID, None, FIRST_APP_UID + 2]
        assert tx.generation("shop") == 1
    with store.write() as tx:
        tx.set_generation("shop", 7)
    with store.read() as tx:
        assert tx.generation("shop") == 7
    store.close()


def test_a_v1_database_gets_uids_for_its_apps(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "state.db", isolation_level=None)
    migrations.migrate(db, migrations.MIGRATIONS[:1])
    for name in ("one", "two"):
        db.execute("INSERT INTO apps (name, owner, created_at) VALUES (?, 'a', "
                   "'2024-01-01T00:00:00+00:00')", (name,))
    db.close()
    store = SqliteStore.open(tmp_path / "state.db")
    apps.create_app(store, EventBus(), "three", "alice")
    with store.read() as tx:
        assert [tx.app_uid(n) for n in ("one", "two", "three")] == [
            FIRST_APP_UID, FIRST_APP_UID + 1, FIRST_APP_UID + 2]
    store.close()
