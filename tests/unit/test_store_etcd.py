"""The etcd store against a real etcd: every aggregate behaves as SQLite's does (the
same writes read back the same on both), writers of several processes get gap-free
release versions, a writer that lost its lock changes nothing, and a SQLite state
migrates into etcd with nothing lost."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from dynod.__main__ import etcd_settings
from dynod.errors import FailedPrecondition, InvalidArgument, Unavailable
from dynod.model.acm import AcmChallenge, AcmDomain, AcmStatus
from dynod.model.addons import (
    Addon,
    AddonState,
    Attachment,
    Backup,
    BackupScheduleRecord,
    BackupStatus,
    Credentials,
)
from dynod.model.apps import App
from dynod.model.builds import Build, BuildSettings, BuildStatus
from dynod.model.domains import Domain
from dynod.model.drains import Drain
from dynod.model.formation import Process
from dynod.model.keys import Key
from dynod.model.releases import Release, ReleaseStatus
from dynod.model.slugs import Slug
from dynod.model.users import Collaborator, Role, Token, User
from dynod.settings import Settings, load_settings
from dynod.store.etcd import EtcdSettings, EtcdStore
from dynod.store.etcd_kv import LOCK
from dynod.store.protocol import Store, Tx
from dynod.store.sqlite import SqliteStore
from dynod.store.to_etcd import migrate, snapshot
from tests.etcd.server import Etcd
from tests.unit.conftest import etcd_store

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def fill(tx: Tx, app: str, n: int) -> None:
    """An app with ``n`` + 1 releases, config, formation, a slug, a build, a domain with
    its certificate state, an add-on attached to it, a backup and its schedule."""
    tx.add_app(App(app, "owner@example.com", at(n)))
    tx.set_generation(app, 3)
    tx.set_maintenance(app, True)
    tx.set_acm(app, True)
    tx.set_feature(app, "preboot", True)
    tx.set_feature(app, "runtime-dyno-metadata", True)
    tx.set_app_build_settings(app, BuildSettings("debian-12", ("heroku/python",)))
    tx.put_slug(Slug(f"s-{app}", app, f"sha256:{app}", 123, at(1),
                     MappingProxyType({"web": "serve", "release": "migrate"}), "abc1234",
                     stack="debian-12", layers=("python",)))
    tx.put_slug(Slug(f"s-{app}", app, "ignored", 0, at(2), uploaded=True))
    for v in range(1, n + 2):
        tx.add_release(Release(app, v, f"Deploy v{v}", "owner@example.com", at(v),
                               f"s-{app}" if v > 1 else None,
                               MappingProxyType({"N": str(v), "DATABASE_URL": f"pg://{app}"}),
                               ReleaseStatus.PENDING if v == n + 1 else ReleaseStatus.SUCCEEDED))
    tx.put_process(app, Process("web", 2, "standard-1x", command="not stored"))
    tx.put_process(app, Process("worker", 1, "basic"))
    tx.put_build(Build(f"b1-{app}", app, BuildStatus.PENDING, "owner@example.com", at(1),
                       "debian-12", "abc1234", ("heroku/python",)))
    tx.put_build(Build(f"b2-{app}", app, BuildStatus.PENDING, "owner@example.com", at(1),
                       "debian-12"))
    tx.put_build(Build(f"b1-{app}", app, BuildStatus.SUCCEEDED, "someone", at(9),
                       "other", "other", ("heroku/python",), f"s-{app}", 2, "",
                       finished_at=at(3), source_bytes=4096))
    tx.add_domain(Domain(f"www.{app}.example", app, at(1)))
    tx.add_domain(Domain(f"api.{app}.example", app, at(2)))
    tx.put_acm_domain(AcmDomain(f"www.{app}.example", app, AcmStatus.CERT_ISSUED, at(3),
                                "", at(3), at(90), 0, None))
    tx.put_acm_domain(AcmDomain(f"gone.{app}.example", app, AcmStatus.PENDING, at(3)))
    tx.put_acm_cert(f"www.{app}.example", f"CHAIN {app}\nKEY\n")
    tx.put_acm_cert(f"api.{app}.example", "API\n")
    tx.put_acm_cert(f"gone.{app}.example", "NO DOMAIN\n")
    tx.put_acm_challenge(AcmChallenge(f"api.{app}.example", "t1", "t1.thumb"))
    tx.put_acm_challenge(AcmChallenge(f"www.{app}.example", "t2", "t2.thumb"))
    tx.put_acm_challenge(AcmChallenge(f"gone.{app}.example", "t3", "t3.thumb"))
    creds = Credentials("10.0.0.1", 5432, f"u_{app}", "secret", f"d_{app}")
    tx.insert_addon(Addon(f"postgresql-{app}", "heroku-postgresql", "essential-0", app,
                          AddonState.PROVISIONING, at(1), creds))
    tx.update_addon(Addon(f"postgresql-{app}", "heroku-postgresql", "essential-1", app,
                          AddonState.CREATED, at(5), creds))
    tx.insert_attachment(Attachment(f"postgresql-{app}", app, "DATABASE", at(1)))
    tx.insert_backup(Backup("b001", f"postgresql-{app}", app, at(1), None, 0, "",
                            BackupStatus.RUNNING, "", MappingProxyType({})))
    tx.update_backup(Backup("b001", f"postgresql-{app}", app, at(1), at(2), 2048, "f00",
                            BackupStatus.VERIFIED, "", MappingProxyType({"users": 3}), True))
    tx.put_backup_schedule(BackupScheduleRecord(app, f"postgresql-{app}", "DATABASE", "02:00"))
    tx.add_drain(Drain(app, f"d.{app}", f"syslog+tls://logs.example:6514/{app}", at(1)))
    tx.add_collaborator(Collaborator(app, "friend@example.com", Role.COLLABORATOR, at(1)))


def scenario(store: Store) -> list[Any]:
    """Writes over every aggregate, and what each read answers after them."""
    seen: list[Any] = []
    with store.write() as tx:
        for i, app in enumerate(["shop", "blog", "api"]):
            fill(tx, app, i + 1)
        tx.put_user(User("owner@example.com", "scrypt$old", at(1)))
        tx.put_user(User("owner@example.com", "scrypt$new", at(7)))
        tx.put_user(User("friend@example.com", "scrypt$f", at(2)))
        tx.add_token(Token("t1", "owner@example.com", "h1", "laptop", at(2), None))
        tx.add_token(Token("t2", "owner@example.com", "h2", "ci", at(1), at(30)))
        tx.add_key(Key("k1", "owner@example.com", "ssh-ed25519", "AAAA", "me@laptop",
                       "SHA256:x", at(1)))
        # Attached to another app too: removing its owner removes this attachment.
        tx.insert_attachment(Attachment("postgresql-blog", "shop", "BLOG_DB", at(4)))
        seen.append(tx.remove_app("nope"))
    with store.write() as tx:
        tx.set_release_status("shop", 3, ReleaseStatus.FAILED, failure="timed out (R10)")
        tx.set_feature("shop", "preboot", False)
        tx.remove_domain("api.shop.example")
        tx.remove_acm_challenge("www.api.example", "t2")
        tx.remove_acm_cert("www.api.example")
        tx.set_app_owner("api", "friend@example.com")
        seen += [tx.remove_key("k1"), tx.remove_key("k1"), tx.remove_token("t2"),
                 tx.remove_drain("shop", "d.nope"), tx.remove_collaborator("api", "x"),
                 tx.delete_backup_schedule("shop", "postgresql-shop")]
        tx.delete_attachment("postgresql-api", "api")
        tx.delete_addon("postgresql-api")
        tx.delete_backup("api", "b001")
        # Writes for an app that does not exist change nothing.
        tx.add_release(Release("ghost", 1, "x", "x", at(1), None))
        tx.put_process("ghost", Process("web", 1, "basic"))
    with store.write() as tx:
        seen.append(tx.remove_app("blog"))
        tx.add_app(App("blog", "owner@example.com", at(50)))  # a new uid, never reused
    with store.read() as tx:
        seen += [tx.app_uid(a.name) for a in tx.apps()]
        seen += [tx.latest_release("shop"), tx.latest_succeeded_release("shop"),
                 tx.releases("shop", 2), tx.release("shop", 9), tx.builds("shop", 1),
                 tx.build("shop", "b2-shop"), tx.slug_layers("sha256:shop"),
                 tx.slug_layers("sha256:none"), tx.domain("www.shop.example"),
                 tx.acm_domain("www.shop.example"), tx.acm_domain("gone.shop.example"),
                 tx.get_addon("postgresql-shop"), tx.get_backup("shop", "b001"),
                 tx.token_by_hash("h1"), tx.user("nobody"), tx.app("nobody"),
                 tx.generation("nobody"), tx.list_attachments(addon="postgresql-shop"),
                 tx.list_attachments(app="shop"), tx.drains("shop"),
                 tx.list_backup_schedules("api"), tx.features("nobody"),
                 tx.acm_challenges()]
        seen.append(snapshot(tx))
    return seen


def test_the_etcd_store_reads_back_what_sqlite_does(tmp_path: Path, etcd_server: Etcd) -> None:
    sqlite = SqliteStore.open(tmp_path / "state.db")
    etcd = etcd_store(etcd_server)
    try:
        want, got = scenario(sqlite), scenario(etcd)
        for i, (w, g) in enumerate(zip(want, got, strict=True)):
            assert g == w, f"read {i} differs"
        everything = want[-1]
        assert sorted(everything["apps"]) == ["api", "blog", "shop"]
        assert everything["apps"]["blog"]["releases"] == []  # removed, then made anew
        assert everything["apps"]["shop"]["releases"][0].version == 2
    finally:
        sqlite.close()
        etcd.close()


def test_a_failed_block_changes_nothing(store_kind: str, tmp_path: Path,
                                        request: pytest.FixtureRequest) -> None:
    from tests.unit.conftest import open_store  # noqa: PLC0415 - beside its fixture
    store = open_store(store_kind, tmp_path, request)
    try:
        with store.write() as tx:
            tx.add_app(App("shop", "me", T0))
        with pytest.raises(RuntimeError), store.write() as tx:
            tx.add_release(Release("shop", 1, "x", "me", T0, None))
            tx.put_process("shop", Process("web", 1, "basic"))
            raise RuntimeError("the block failed")
        with store.read() as tx:
            assert tx.releases("shop", None) == []
            assert tx.processes("shop") == []
    finally:
        store.close()


def test_a_failed_release_keeps_its_cause(store_kind: str, tmp_path: Path,
                                          request: pytest.FixtureRequest) -> None:
    from tests.unit.conftest import open_store  # noqa: PLC0415 - beside its fixture
    store = open_store(store_kind, tmp_path, request)
    cause = "could not start: No space left on device unpacking slug sha256:x"
    try:
        with store.write() as tx:
            tx.add_app(App("shop", "me", T0))
            tx.add_release(Release("shop", 1, "x", "me", T0, None))
            tx.add_release(Release("shop", 2, "y", "me", T0, None))
            tx.set_release_status("shop", 2, ReleaseStatus.FAILED, failure=cause)
        with store.read() as tx:
            got = [(r.version, r.status, r.failure) for r in tx.releases("shop", None)]
        assert got == [(2, ReleaseStatus.FAILED, cause), (1, ReleaseStatus.SUCCEEDED, "")]
    finally:
        store.close()


def next_release(store: Store, app: str) -> int:
    with store.write() as tx:
        latest = tx.latest_release(app)
        version = 1 if latest is None else latest.version + 1
        tx.add_release(Release(app, version, f"Deploy v{version}", "me", T0, None,
                               MappingProxyType({"V": str(version)})))
        return version


def test_concurrent_writers_get_gap_free_versions(etcd_server: Etcd) -> None:
    """Eight writers, each its own store (as on eight machines: the etcd lock, not the
    thread lock, orders them), make ten releases each of one app at once."""
    first = etcd_store(etcd_server)
    with first.write() as tx:
        tx.add_app(App("shop", "me", T0))
    stores = [first] + [EtcdStore(first.settings) for _ in range(7)]
    made: list[int] = []
    errors: list[BaseException] = []
    start = threading.Barrier(len(stores))

    def writer(store: EtcdStore) -> None:
        try:
            start.wait()
            for _ in range(10):
                made.append(next_release(store, "shop"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(s,)) for s in stores]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert sorted(made) == list(range(1, 81))
        with first.read() as tx:
            releases = tx.releases("shop", None)
        assert [r.version for r in releases] == list(range(80, 0, -1))
        assert all(r.config["V"] == str(r.version) for r in releases)
    finally:
        for s in stores:
            s.close()


def test_a_writer_that_lost_its_lock_changes_nothing(etcd_server: Etcd) -> None:
    store = etcd_store(etcd_server)
    try:
        with store.write() as tx:
            tx.add_app(App("shop", "me", T0))
        with pytest.raises(Unavailable, match="lapsed"), store.write() as tx:
            tx.add_release(Release("shop", 1, "x", "me", T0, None))
            store.kv.txn([], [store.kv.delete_op(LOCK)])  # as if its lease had expired
        with store.read() as tx:
            assert tx.releases("shop", None) == []
        assert next_release(store, "shop") == 1  # and the store goes on
    finally:
        store.close()


def _three_apps(store: SqliteStore) -> None:
    with store.write() as tx:
        for i, app in enumerate(["shop", "blog", "api"]):
            fill(tx, app, 2 + i)
        tx.put_user(User("owner@example.com", "scrypt$x", at(1)))
        tx.add_token(Token("t1", "owner@example.com", "h1", "laptop", at(2), None))
        tx.add_key(Key("k1", "owner@example.com", "ssh-ed25519", "AAAA", "me", "fp", at(1)))
    with store.write() as tx:
        tx.remove_app("blog")
        fill(tx, "blog", 80)  # 81 releases: the copy spans several etcd txns


@pytest.fixture
def stores(tmp_path: Path, etcd_server: Etcd) -> Iterator[tuple[SqliteStore, EtcdStore]]:
    """A SQLite store with three apps, and an empty etcd store."""
    sqlite = SqliteStore.open(tmp_path / "state.db")
    etcd = etcd_store(etcd_server)
    try:
        _three_apps(sqlite)
        yield sqlite, etcd
    finally:
        sqlite.close()
        etcd.close()


def test_migration_copies_three_apps_with_nothing_lost(
        stores: tuple[SqliteStore, EtcdStore]) -> None:
    sqlite, etcd = stores
    done = migrate(sqlite, etcd)
    assert (done.apps, done.releases) == (3, 3 + 5 + 81)
    assert done.keys > 128  # more than one etcd txn can hold
    with sqlite.read() as want, etcd.read() as got:
        assert snapshot(got) == snapshot(want)
        assert got.app_uid("blog") == want.app_uid("blog") == 70003
        assert got.releases("blog", 1)[0].config == {"N": "81",
                                                      "DATABASE_URL": "pg://blog"}
        assert [p.quantity for p in got.processes("shop")] == [2, 1]
        assert got.domains("api") == want.domains("api") != []
        assert got.list_addons("shop") == want.list_addons("shop") != []
    with etcd.write() as tx:  # and it is a working store: a new app's uid is new
        tx.add_app(App("new", "me", T0))
    with etcd.read() as tx:
        assert tx.app_uid("new") == 70004
    with pytest.raises(FailedPrecondition, match="already holds a migrated state"):
        migrate(sqlite, etcd)


def test_migration_refuses_an_etcd_with_apps_of_its_own(
        stores: tuple[SqliteStore, EtcdStore]) -> None:
    sqlite, etcd = stores
    with etcd.write() as tx:
        tx.add_app(App("theirs", "me", T0))
    with pytest.raises(FailedPrecondition, match="apps of its own"):
        migrate(sqlite, etcd)
    with etcd.read() as tx:
        assert [a.name for a in tx.apps()] == ["theirs"]


def test_an_interrupted_migration_is_redone_whole(
        stores: tuple[SqliteStore, EtcdStore], monkeypatch: pytest.MonkeyPatch) -> None:
    """etcd fails after the first batch: the next attempt wipes the half copy."""
    sqlite, etcd = stores
    real = etcd.kv.txn
    calls = [0]

    def failing(compare: list[dict[str, Any]], success: list[dict[str, Any]]) -> bool:
        calls[0] += 1
        if calls[0] == 3:  # lock, first batch, then this one
            raise Unavailable("etcd went away")
        return real(compare, success)

    monkeypatch.setattr(etcd.kv, "txn", failing)
    with pytest.raises(Unavailable):
        migrate(sqlite, etcd)
    monkeypatch.setattr(etcd.kv, "txn", real)
    etcd.kv.txn([], [etcd.kv.delete_op(LOCK)])  # the dead attempt's lock (its lease)
    migrate(sqlite, etcd)
    with sqlite.read() as want, etcd.read() as got:
        assert snapshot(got) == snapshot(want)


def test_an_etcd_that_does_not_answer_is_named(tmp_path: Path) -> None:
    from tests.etcd.server import _free_port  # noqa: PLC0415 - a port nothing listens on
    endpoint = f"127.0.0.1:{_free_port()}"
    with pytest.raises(Unavailable, match=f"etcd at {endpoint}: .*etcd_endpoints"):
        EtcdStore(EtcdSettings((endpoint,), timeout=2))


@pytest.mark.parametrize(("toml", "message"), [
    ('store = "postgres"', "'store' must be \"sqlite\""),
    ('store = "etcd"\netcd_endpoints = "10.0.0.1"', "'etcd_endpoints' must be HOST:PORT"),
    ('etcd_endpoints = "10.0.0.1:2379,"', "'etcd_endpoints' must be HOST:PORT"),
])
def test_bad_store_settings_are_refused(tmp_path: Path, toml: str, message: str) -> None:
    path = tmp_path / "dynod.toml"
    path.write_text(toml + "\n")
    with pytest.raises(InvalidArgument, match=re.escape(message)):
        load_settings(path)


def test_store_settings_read() -> None:
    settings = Settings(store="etcd", etcd_endpoints="10.0.0.1:2379, 10.0.0.2:2379",
                        etcd_ca_file="/etc/ca.pem")
    assert etcd_settings(settings) == EtcdSettings(
        ("10.0.0.1:2379", "10.0.0.2:2379"), Path("/etc/ca.pem"), None, None)
    assert Settings().store == "sqlite"
