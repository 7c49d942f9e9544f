"""Use cases own their side effects: each API change commits, then publishes one event;
the app[api] lines come from those events; an upgraded store keeps its builds and keys."""

from __future__ import annotations

import base64
import json
import sqlite3
import struct
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType

import grpc
import pytest

from dynod.control import apps, builds, config_vars, keys, releases
from dynod.control.audit import Audit
from dynod.control.keys import AuthorizedKeys
from dynod.errors import Unavailable
from dynod.model.builds import Build, BuildStatus
from dynod.model.events import (
    AppCreated,
    AppDestroyed,
    BuildFinished,
    BuildStarted,
    ConfigChanged,
    DomainsChanged,
    Event,
    EventBus,
    FormationChanged,
    KeysChanged,
    MaintenanceChanged,
    ReleaseCreated,
    ReleaseFailed,
    ReleasePhaseStarted,
    RolledBack,
)
from dynod.model.formation import Process
from dynod.model.keys import Key
from dynod.model.releases import Release
from dynod.store import migrations
from dynod.store.sqlite import SqliteStore
from dynod.v1 import (
    apps_pb2,
    config_pb2,
    domains_pb2,
    domains_pb2_grpc,
    formation_pb2,
    keys_pb2,
    keys_pb2_grpc,
    releases_pb2,
)
from tests.unit.control_plane.harness import Api


def public_key() -> str:
    kind = b"ssh-ed25519"
    raw = struct.pack(">I", len(kind)) + kind + struct.pack(">I", 32) + b"\x07" * 32
    return f"ssh-ed25519 {base64.b64encode(raw).decode()} me@laptop"


def test_each_change_publishes_one_event_after_its_commit(api: Api) -> None:
    seen: list[Event] = []
    committed: list[int] = []

    def record(event: Event) -> None:
        seen.append(event)
        if isinstance(event, ConfigChanged):
            # Published after the commit: a new read already sees the release.
            committed.append(config_vars.get_config(api.store, event.app).version)

    api.daemon.events.subscribe(Event, record)
    domains = domains_pb2_grpc.DomainsStub(api.channel)
    keys_api = keys_pb2_grpc.KeysStub(api.channel)

    api.create_app("shop")
    assert seen == [AppCreated("shop", "root")]
    seen.clear()
    api.config.Set(config_pb2.SetConfigRequest(app="shop", vars={"A": "1"}))
    api.config.Unset(config_pb2.UnsetConfigRequest(app="shop", keys=["A"]))
    api.deploy("shop", {"web": "serve"})
    api.releases.Rollback(releases_pb2.RollbackReleaseRequest(app="shop", version=4))
    api.formation.Scale(formation_pb2.ScaleFormationRequest(app="shop", updates=[
        formation_pb2.ScaleUpdate(type="web", quantity=2)]))
    api.formation.Resize(formation_pb2.ResizeFormationRequest(app="shop", updates=[
        formation_pb2.ResizeUpdate(type="web", size="standard-2x")]))
    domains.Add(domains_pb2.AddDomainRequest(app="shop", hostname="www.example.test"))
    domains.Remove(domains_pb2.RemoveDomainRequest(app="shop", hostname="www.example.test"))
    domains.SetMaintenance(domains_pb2.SetMaintenanceRequest(app="shop", on=True))
    key = keys_api.Add(keys_pb2.AddKeyRequest(public_key=public_key())).key
    keys_api.Remove(keys_pb2.RemoveKeyRequest(key=key.id))
    api.apps.Delete(apps_pb2.DeleteAppRequest(name="shop"))

    assert [type(e) for e in seen] == [
        ConfigChanged, ConfigChanged, ReleaseCreated, RolledBack, FormationChanged,
        FormationChanged, DomainsChanged, DomainsChanged, MaintenanceChanged, KeysChanged,
        KeysChanged, AppDestroyed]
    assert committed == [2, 3]
    releases_of = [e.release for e in seen if isinstance(e, ConfigChanged | ReleaseCreated
                                                          | RolledBack)]
    assert [(r.version, r.description) for r in releases_of] == [
        (2, "Set A config vars"), (3, "Remove A config vars"),
        (4, releases_of[2].description), (5, "Rollback to v4")]
    scaled = [e for e in seen if isinstance(e, FormationChanged)]
    assert [(e.scaled, e.user, e.processes) for e in scaled] == [
        (True, "root", (Process("web", 2, "standard-1x", "serve"),)),
        (False, "root", (Process("web", 2, "standard-2x", "serve"),))]
    assert seen[6:10] == [DomainsChanged("shop", "www.example.test"),
                          DomainsChanged("shop", "www.example.test"),
                          MaintenanceChanged("shop", on=True), KeysChanged(key.id)]
    assert seen[-1] == AppDestroyed("shop")


def test_a_refused_change_publishes_nothing(api: Api) -> None:
    seen: list[Event] = []
    api.daemon.events.subscribe(Event, seen.append)
    api.create_app("shop")
    seen.clear()
    with pytest.raises(grpc.RpcError):
        api.config.Set(config_pb2.SetConfigRequest(app="shop", vars={"1BAD": "x"}))
    with pytest.raises(grpc.RpcError):
        api.formation.Scale(formation_pb2.ScaleFormationRequest(app="shop", updates=[
            formation_pb2.ScaleUpdate(type="web", quantity=1)]))  # no web in v1
    with pytest.raises(grpc.RpcError):
        api.releases.Rollback(releases_pb2.RollbackReleaseRequest(app="shop"))
    assert seen == []


def test_a_failing_subscriber_never_fails_the_change(api: Api) -> None:
    after: list[Event] = []

    def broken(_event: Event) -> None:
        raise RuntimeError("subscriber bug")

    def router_down(_event: Event) -> None:
        raise Unavailable("router: HAProxy does not answer")

    api.daemon.events.subscribe(Event, broken)
    api.daemon.events.subscribe(ConfigChanged, router_down)
    api.daemon.events.subscribe(ConfigChanged, after.append)
    api.create_app("shop")
    reply = api.config.Set(config_pb2.SetConfigRequest(app="shop", vars={"A": "1"}))
    assert reply.release.version == 2
    assert [type(e) for e in after] == [ConfigChanged]


def test_audit_writes_herokus_api_lines() -> None:
    lines: list[tuple[str, str]] = []
    audit = Audit(lambda app, message: lines.append((app, message)))
    bus = EventBus()
    bus.subscribe(Audit.EVENTS, audit)
    when = datetime(2024, 1, 1, tzinfo=UTC)

    def release(version: int, description: str) -> Release:
        return Release("shop", version, description, "jane", when, None, MappingProxyType({}))

    bus.publish(AppCreated("shop", "jane"))
    bus.publish(ConfigChanged("shop", release(2, "Set A, B config vars")))
    bus.publish(ReleaseCreated("shop", release(3, "Deploy 1a2b3c4d")))
    bus.publish(RolledBack("shop", release(4, "Rollback to v2")))
    web, worker = Process("web", 3, "standard-1x"), Process("worker", 0, "standard-2x")
    bus.publish(FormationChanged("shop", "jane", (web, worker), scaled=True))
    bus.publish(FormationChanged("shop", "jane", (web, worker), scaled=False))
    bus.publish(MaintenanceChanged("shop", on=True))
    assert lines == [
        ("shop", "Set A, B config vars by user jane"),
        ("shop", "Release v2 created by user jane"),
        ("shop", "Deploy 1a2b3c4d by user jane"),
        ("shop", "Release v3 created by user jane"),
        ("shop", "Rollback to v2 by user jane"),
        ("shop", "Release v4 created by user jane"),
        ("shop", "Scaled to web@3:Standard-1X worker@0:Standard-2X by user jane"),
    ]


def test_the_platforms_verdicts_are_api_lines_too() -> None:
    """The build pipeline and the runtime publish their app[api] lines as events, so
    audit.py is the one writer of them all."""
    lines: list[str] = []
    bus = EventBus()
    bus.subscribe(Audit.EVENTS, Audit(lambda _app, message: lines.append(message)))
    bus.publish(BuildStarted("shop", "jane"))
    bus.publish(BuildFinished("shop", succeeded=True))
    bus.publish(BuildFinished("shop", succeeded=False))
    bus.publish(ReleasePhaseStarted("shop", 5, "jane"))
    bus.publish(ReleaseFailed("shop", 5, "Release v5 failed: the release command did not "
                                         "succeed"))
    assert lines == ["Build started by user jane", "Build succeeded", "Build failed",
                     "Running release v5 commands by user jane",
                     "Release v5 failed: the release command did not succeed"]


def test_creating_an_app_is_one_transaction(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    store = SqliteStore.open(tmp_path / "state.db")
    seen: list[Event] = []
    bus = EventBus()
    bus.subscribe(Event, seen.append)
    apps.create_app(store, bus, "shop", "alice", stack="debian-12")
    assert builds.get_settings(store, "shop").stack == "debian-12"
    assert [r.version for r in releases.list_releases(store, "shop")] == [1]

    def crash(*_args: object, **_kwargs: object) -> Release:
        raise RuntimeError("crash before v1")

    monkeypatch.setattr(releases, "append_release", crash)
    with pytest.raises(RuntimeError):
        apps.create_app(store, bus, "blog", "alice", stack="debian-12")
    assert [a.name for a in apps.list_apps(store)] == ["shop"]  # no app without its v1
    assert seen == [AppCreated("shop", "alice")]
    store.close()


def test_a_v4_database_keeps_its_builds_and_keys(tmp_path: Path) -> None:
    """Until v4 builds and keys were JSON documents; v5 converts them to columns."""
    path = tmp_path / "state.db"
    db = sqlite3.connect(path, isolation_level=None)
    assert migrations.migrate(db, migrations.MIGRATIONS[:4]) == 4
    db.execute("INSERT INTO apps (name, owner, created_at, uid) VALUES "
               "('shop', 'alice', '2024-01-01T00:00:00+00:00', 70000)")
    db.execute("UPDATE app_uids SET next = 70001")
    done = {"id": "b1", "app": "shop", "status": "succeeded", "user": "alice",
            "created_at": "2024-01-02T10:00:00+00:00", "stack": "debian-13",
            "commit": "1a2b3c4d", "buildpacks": ["python", "procfile"], "slug_id": "s1",
            "release": 2, "error": "", "finished_at": "2024-01-02T10:01:30+00:00",
            "source_bytes": 1234}
    failed = {"id": "b2", "app": "shop", "status": "failed", "user": "bob",
              "created_at": "2024-01-03T09:00:00+00:00", "stack": "debian-12", "commit": "",
              "buildpacks": [], "slug_id": "", "release": 0, "error": "no language",
              "finished_at": None, "source_bytes": 0}
    for doc in (done, failed):
        db.execute("INSERT INTO builds (id, app_id, doc, created_at) VALUES (?, 1, ?, ?)",
                   (doc["id"], json.dumps(doc, sort_keys=True), doc["created_at"]))
    key = {"id": "k0123456789ab", "owner": "alice", "type": "ssh-ed25519", "blob": "AAAA",
           "comment": "me@laptop", "fingerprint": "SHA256:abc",
           "created_at": "2024-01-01T12:00:00+00:00"}
    db.execute("INSERT INTO ssh_keys (id, owner, fingerprint, doc) VALUES (?, ?, ?, ?)",
               (key["id"], key["owner"], key["fingerprint"], json.dumps(key, sort_keys=True)))
    db.close()

    store = SqliteStore.open(path)
    assert store.schema_version == len(migrations.MIGRATIONS)
    first = Build(id="b1", app="shop", status=BuildStatus.SUCCEEDED, user="alice",
                  created_at=datetime(2024, 1, 2, 10, tzinfo=UTC), stack="debian-13",
                  commit="1a2b3c4d", buildpacks=("python", "procfile"), slug_id="s1",
                  release=2, finished_at=datetime(2024, 1, 2, 10, 1, 30, tzinfo=UTC),
                  source_bytes=1234)
    second = Build(id="b2", app="shop", status=BuildStatus.FAILED, user="bob",
                   created_at=datetime(2024, 1, 3, 9, tzinfo=UTC), stack="debian-12",
                   error="no language")
    assert builds.list_builds(store, "shop") == [second, first]
    assert builds.get_build(store, "shop", "b1") == first
    assert builds.get_build(store, "shop") == second
    with store.read() as tx:
        assert tx.ssh_keys() == [Key(
            id="k0123456789ab", owner="alice", type="ssh-ed25519", blob="AAAA",
            comment="me@laptop", fingerprint="SHA256:abc",
            created_at=datetime(2024, 1, 1, 12, tzinfo=UTC))]
    # New records are rows too, and a finished build replaces its pending record.
    with store.write() as tx:
        tx.put_build(Build(id="b3", app="shop", status=BuildStatus.PENDING, user="alice",
                           created_at=datetime(2024, 1, 4, tzinfo=UTC), stack="debian-13"))
        tx.put_build(Build(id="b3", app="shop", status=BuildStatus.SUCCEEDED, user="alice",
                           created_at=datetime(2024, 1, 4, tzinfo=UTC), stack="debian-13",
                           release=3, finished_at=datetime(2024, 1, 4, 0, 2, tzinfo=UTC)))
    assert [(b.id, b.status, b.release) for b in builds.list_builds(store, "shop", 1)] == [
        ("b3", BuildStatus.SUCCEEDED, 3)]
    store.close()
    columns = {r[1] for r in sqlite3.connect(path).execute("PRAGMA table_info(builds)")}
    assert "doc" not in columns and {"status", "stack", "buildpacks"} <= columns


def test_authorized_keys_follow_the_keys(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path / "state.db")
    bus = EventBus()
    authorized = AuthorizedKeys(store, tmp_path / "home", ["/usr/bin/python3", "-m",
                                                            "dynod.cli.gitpush", "shell"])
    bus.subscribe(KeysChanged, authorized.sync)
    authorized.sync()  # at start: no keys, a file that says so
    path = tmp_path / "home" / ".ssh" / "authorized_keys"
    assert [line for line in path.read_text().splitlines() if not line.startswith("#")] == []
    key = keys.add_key(store, bus, public_key(), "alice")
    entries = [line for line in path.read_text().splitlines() if not line.startswith("#")]
    assert len(entries) == 1
    assert entries[0].startswith(
        f'command="/usr/bin/python3 -m dynod.cli.gitpush shell {key.id}",no-port-forwarding')
    assert path.stat().st_mode & 0o777 == 0o644
    keys.remove_key(store, bus, key.id)
    assert [line for line in path.read_text().splitlines() if not line.startswith("#")] == []
    store.close()
