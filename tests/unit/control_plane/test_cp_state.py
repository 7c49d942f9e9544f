"""The store: migrations, durability, atomicity; and the pure domain rules."""

from __future__ import annotations

import hashlib
import random
import sqlite3
from pathlib import Path

import pytest

from dynod.control import apps, config_vars, formation, releases, slugs
from dynod.errors import FailedPrecondition, InvalidArgument
from dynod.model import sizes
from dynod.model.apps import random_name, validate_name
from dynod.model.config_vars import size_of, validate_key
from dynod.model.events import EventBus
from dynod.slug import blobs
from dynod.store import migrations
from dynod.store.sqlite import SqliteStore


def test_fresh_database_is_migrated_with_wal_and_foreign_keys(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path / "a" / "state.db")
    assert store.schema_version == len(migrations.MIGRATIONS)
    with store.read() as tx:
        db = tx.db  # type: ignore[attr-defined]
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    store.close()
    again = SqliteStore.open(tmp_path / "a" / "state.db")  # idempotent
    assert again.schema_version == len(migrations.MIGRATIONS)
    again.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    SqliteStore.open(path).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE schema_version SET version = 99")
    db.commit()
    db.close()
    with pytest.raises(FailedPrecondition, match="schema version 99, newer than this dynod"):
        SqliteStore.open(path)


def test_failed_migration_leaves_previous_version(tmp_path: Path) -> None:
    def broken(db: sqlite3.Connection) -> None:
        db.execute("CREATE TABLE half (x)")
        raise RuntimeError("boom")

    db = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    with pytest.raises(RuntimeError):
        migrations.migrate(db, [*migrations.MIGRATIONS, broken])
    assert db.execute("SELECT version FROM schema_version").fetchone()[0] == len(
        migrations.MIGRATIONS)
    assert db.execute("SELECT name FROM sqlite_master WHERE name='half'").fetchone() is None


def test_a_v7_database_records_the_stack_each_slug_was_built_on(tmp_path: Path) -> None:
    """v8: a slug runs on its own stack. Existing slugs get their build's stack, else
    (uploaded through the API) their app's, as the dynos will now run them."""
    path = tmp_path / "state.db"
    db = sqlite3.connect(path, isolation_level=None)
    assert migrations.migrate(db, migrations.MIGRATIONS[:7]) == 7
    at = "2024-01-01T00:00:00+00:00"
    db.execute("INSERT INTO apps (name, owner, created_at, uid, stack) VALUES "
               "('shop', 'alice', ?, 70000, 'debian-14'), ('blog', 'bob', ?, 70001, "
               "'debian-13')", (at, at))
    for slug_id, app_id in (("built12", 1), ("uploaded", 1), ("blogs", 2)):
        db.execute("INSERT INTO slugs (id, app_id, checksum, size, process_types, commit_id,"
                   " created_at, uploaded) VALUES (?, ?, 'sha256:ab', 1, '{}', '', ?, 1)",
                   (slug_id, app_id, at))
    # shop's first slug was built while shop was on debian-12; a failed build made none
    db.execute("INSERT INTO builds (id, app_id, status, user, created_at, stack, slug_id)"
               " VALUES ('b1', 1, 'succeeded', 'alice', ?, 'debian-12', 'built12'),"
               " ('b2', 1, 'failed', 'alice', ?, 'debian-14', '')", (at, at))
    db.close()

    store = SqliteStore.open(path)
    assert store.schema_version == len(migrations.MIGRATIONS)
    with store.read() as tx:
        got = {i: tx.slug(app, i) for app, i in (("shop", "built12"), ("shop", "uploaded"),
                                                 ("blog", "blogs"))}
    assert {i: s.stack for i, s in got.items() if s is not None} == {
        "built12": "debian-12", "uploaded": "debian-14", "blogs": "debian-13"}
    store.close()


def test_a_slug_records_its_stack_the_apps_unless_given(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path / "state.db")
    apps.create_app(store, EventBus(), "shop", "alice", stack="debian-12")
    mine = slugs.create_slug(store, "shop", checksum="sha256:" + "a" * 64, size=1,
                             process_types={})
    built = slugs.create_slug(store, "shop", checksum="sha256:" + "a" * 64, size=1,
                              process_types={}, stack="debian-14")
    assert slugs.get_slug(store, "shop", mine.id).stack == "debian-12"
    assert slugs.get_slug(store, "shop", built.id).stack == "debian-14"
    store.close()


def test_state_survives_reopen(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path / "state.db")
    apps.create_app(store, EventBus(), "shop", "alice")
    config_vars.set_config(store, EventBus(), "shop", {"A": "1"}, "bob")
    store.close()
    store = SqliteStore.open(tmp_path / "state.db")
    got = releases.list_releases(store, "shop")
    assert [(r.version, r.description, r.user, dict(r.config)) for r in got] == [
        (2, "Set A config vars", "bob", {"A": "1"}), (1, "Initial release", "alice", {})]
    store.close()


def test_a_failing_change_writes_nothing(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path / "state.db")
    apps.create_app(store, EventBus(), "shop", "alice")
    with pytest.raises(RuntimeError), store.write() as tx:
        releases.append_release(tx, "shop", description="x", user="u", slug_id=None, config={})
        raise RuntimeError("crash in the middle")
    assert [r.version for r in releases.list_releases(store, "shop")] == [1]
    store.close()


@pytest.mark.parametrize("name", ["abc", "my-app-2", "a" * 30, "a1b"])
def test_valid_names(name: str) -> None:
    validate_name(name)


@pytest.mark.parametrize("name", ["ab", "a" * 31, "1abc", "abc-", "Abc", "a_bc", "a.bc", ""])
def test_invalid_names(name: str) -> None:
    with pytest.raises(InvalidArgument):
        validate_name(name)


@pytest.mark.parametrize("name", ["addons", "builds"])
def test_names_of_dynods_own_slices_are_reserved(name: str) -> None:
    # An app "addons" would put its dynos in dynod-addons.slice, the add-on servers'.
    with pytest.raises(InvalidArgument, match=f"app name '{name}' is reserved"):
        validate_name(name)


def test_random_names_are_valid() -> None:
    rng = random.Random(7)  # noqa: S311 - reproducible names, not secrets
    for _ in range(500):
        validate_name(random_name(rng))


def test_config_size_counts_utf8_bytes() -> None:
    assert size_of({"A": "é"}) == 3


@pytest.mark.parametrize("key", ["FOO", "_x", "a1", "DYNOD", "PORTS", "dyno"])
def test_config_keys_allowed(key: str) -> None:
    validate_key(key)


def test_sizes_table() -> None:
    assert list(sizes.SIZES) == ["eco", "basic", "standard-1x", "standard-2x",
                                 "performance-m", "performance-l"]
    assert sizes.parse_size("Standard-2X").memory_mb == 1024
    assert sizes.parse_size("2x").name == "standard-2x"
    assert sizes.parse_size("performance-l").tasks_max == 32768
    assert all(1 <= s.cpu_weight <= 10000 for s in sizes.SIZES.values())


def test_declare_starts_web_at_one(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path / "state.db")
    apps.create_app(store, EventBus(), "shop", "alice")
    with store.write() as tx:
        formation.declare(tx, "shop", {"web": "a", "worker": "b"})
        assert [(p.type, p.quantity) for p in tx.processes("shop")] == [("web", 1),
                                                                        ("worker", 0)]
    store.close()


def test_blob_write_is_verified_and_atomic(tmp_path: Path) -> None:
    data = b"\x1f\x8b" + b"rest"
    checksum = "sha256:" + hashlib.sha256(data).hexdigest()
    path = blobs.write_blob(tmp_path, iter([data[:3], data[3:]]), checksum, len(data))
    assert path.read_bytes() == data
    with pytest.raises(InvalidArgument, match="larger than the declared"):
        blobs.write_blob(tmp_path, iter([data, b"x"]), checksum, len(data))
    with pytest.raises(InvalidArgument, match="has 3 bytes, not the declared"):
        blobs.write_blob(tmp_path, iter([data[:3]]), checksum, len(data))
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_slugs_from_before_layers_get_every_layer(tmp_path: Path) -> None:
    """v8: a slug built when the stack had every runtime keeps them all; new slugs carry
    their build's layers, found by checksum for the dyno host."""
    db = sqlite3.connect(tmp_path / "v7.db")
    migrations.migrate(db, migrations.MIGRATIONS[:7])
    db.execute("INSERT INTO apps (name, owner, created_at) VALUES ('shop', 'root',"
               " '2026-01-01T00:00:00+00:00')")
    db.execute("INSERT INTO slugs (id, app_id, checksum, size, process_types, commit_id,"
               " created_at, uploaded) VALUES ('s1', 1, 'sha256:aa', 1, '{}', '',"
               " '2026-01-01T00:00:00+00:00', 1)")
    db.commit()
    db.close()
    store = SqliteStore(tmp_path / "v7.db")
    with store.read() as tx:
        slug = tx.slug("shop", "s1")
        assert slug is not None and slug.layers == ("ruby", "jvm", "php", "go")
        assert tx.slug_layers("sha256:aa") == ("ruby", "jvm", "php", "go")
        assert tx.slug_layers("sha256:bb") is None
