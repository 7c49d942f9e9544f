"""Add-on access: which dyno addresses may reach which add-on, and when it is applied
(runtime/addon_access.py, the hooks in runtime/dynos.py). The firewall and the servers
are fakes; the nftables text is tested in test_addon_firewall.py."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Iterator, Mapping, Set
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest

from dynod.errors import Unavailable
from dynod.model.addons import POSTGRES, REDIS, Addon, AddonState, Attachment, Credentials
from dynod.model.dynos import DynoRef
from dynod.runtime import addon_access, dynos
from dynod.runtime.addon_access import AddonAccess, LiveDyno, compute_access
from dynod.slug import trees
from dynod.system import mounts, netns, units

NOW = datetime(2026, 12, 1, tzinfo=UTC)
GW = "10.213.0.1"
A = {n: IPv4Address(f"10.213.0.{n}") for n in range(2, 20)}


def addon(name: str, app: str, port: int, service: str = POSTGRES,
          state: AddonState = AddonState.CREATED) -> Addon:
    return Addon(name, service, "essential-0" if service == POSTGRES else "mini", app, state,
                 NOW, Credentials(GW, port, name, "secret", name))


def attach(name: str, app: str, as_: str = "DATABASE") -> Attachment:
    return Attachment(name, app, as_, NOW)


@dataclass
class FakeTx:
    addons: dict[str, Addon]
    attachments: list[Attachment]

    def list_addons(self, app: str | None = None) -> list[Addon]:
        return [a for a in self.addons.values() if app is None or a.app == app]

    def list_attachments(self, app: str | None = None,
                         addon: str | None = None) -> list[Attachment]:
        return [a for a in self.attachments
                if (app is None or a.app == app) and (addon is None or a.addon == addon)]


@dataclass
class FakeStore:
    tx: FakeTx = field(default_factory=lambda: FakeTx({}, []))

    @contextmanager
    def read(self) -> Iterator[FakeTx]:
        yield self.tx


@dataclass
class FakeFirewall:
    sets: dict[int, set[IPv4Address]] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    fail: bool = False

    def read(self) -> dict[int, set[IPv4Address]]:
        return {p: set(a) for p, a in self.sets.items()}

    def replace(self, members: Mapping[int, Iterable[IPv4Address]],
                stale: Iterable[int] = ()) -> None:
        if self.fail:
            raise Unavailable("nftables table ip dynod: add-on rules: nft refused")
        self.calls.append(f"replace {sorted(members)} stale {sorted(stale)}")
        self.sets = {p: set(a) for p, a in members.items()}

    def update(self, add: Mapping[int, Iterable[IPv4Address]],
               remove: Mapping[int, Iterable[IPv4Address]]) -> None:
        if self.fail:
            raise Unavailable("nftables table ip dynod: add-on members: nft refused")
        self.calls.append("update")
        for p, addrs in add.items():
            self.sets[p] |= set(addrs)
        for p, addrs in remove.items():
            self.sets[p] -= set(addrs)


@dataclass
class FakeServices:
    admitted: list[dict[str, set[str]]] = field(default_factory=list)
    fail: bool = False

    def admit(self, addresses: Mapping[str, Set[str]]) -> None:
        if self.fail:
            raise Unavailable("dynod-postgresql.service is not running")
        self.admitted.append({k: set(v) for k, v in addresses.items()})


def make(store: FakeStore, fw: FakeFirewall, services: FakeServices,
         tmp_path: Path) -> AddonAccess:
    return AddonAccess(store, tmp_path, fw, services)  # type: ignore[arg-type]


@pytest.fixture
def world() -> FakeStore:
    """shop has Postgres (port 5432) and Redis (6380); blog has its own Postgres on the
    same server; news has nothing."""
    store = FakeStore()
    store.tx.addons = {
        "postgresql-shop-1": addon("postgresql-shop-1", "shop", 5432),
        "redis-shop-1": addon("redis-shop-1", "shop", 6380, REDIS),
        "postgresql-blog-1": addon("postgresql-blog-1", "blog", 5432),
    }
    store.tx.attachments = [attach("postgresql-shop-1", "shop"),
                            attach("redis-shop-1", "shop", "REDIS"),
                            attach("postgresql-blog-1", "blog")]
    return store


def test_compute_access_by_attachment() -> None:
    addons = [addon("pg-a", "shop", 5432), addon("pg-b", "blog", 5432),
              addon("redis-a", "shop", 6380, REDIS), addon("redis-new", "shop", 0, REDIS),
              addon("pg-gone", "shop", 5432, state=AddonState.DEPROVISIONED)]
    attachments = [attach("pg-a", "shop"), attach("pg-a", "admin", "SHOP_DB"),
                   attach("pg-b", "blog"), attach("redis-a", "shop", "REDIS"),
                   attach("pg-gone", "shop", "OLD")]
    live = [LiveDyno("shop", A[2]), LiveDyno("shop", A[3]), LiveDyno("blog", A[4]),
            LiveDyno("admin", A[5]), LiveDyno("news", A[6])]
    access = compute_access(addons, attachments, live)
    assert access.addons == {
        "pg-a": {A[2], A[3], A[5]},  # the owner's dynos and the other attached app's
        "pg-b": {A[4]},
        "redis-a": {A[2], A[3]},
        "redis-new": set(),
        "pg-gone": set(),  # being deprovisioned: nobody
    }
    # The shared Postgres port admits every app with a database there (pg_hba then
    # keeps each to its own); an add-on without a port yet has no set; news nowhere.
    assert access.ports == {5432: {A[2], A[3], A[4], A[5]}, 6380: {A[2], A[3]}}
    assert all(A[6] not in addrs for addrs in access.ports.values())


def test_dyno_is_admitted_before_the_hook_returns(world: FakeStore, tmp_path: Path) -> None:
    fw, services = FakeFirewall(), FakeServices()
    access = make(world, fw, services, tmp_path)
    access.rebuild()
    assert fw.calls == ["replace [5432, 6380] stale []"]
    assert fw.sets == {5432: set(), 6380: set()}
    access.network_up("shop", "shop.web.1.0", A[2])
    assert fw.sets == {5432: {A[2]}, 6380: {A[2]}}
    assert services.admitted[-1] == {"postgresql-shop-1": {"10.213.0.2"},
                                     "redis-shop-1": {"10.213.0.2"},
                                     "postgresql-blog-1": set()}
    # A second dyno (a one-off, the release phase) is a membership change, not a rewrite.
    access.network_up("shop", "shop.run.4821.0", A[3])
    assert fw.calls[-1] == "update"
    assert fw.sets[6380] == {A[2], A[3]}
    # Another app's dyno: into blog's database only, never shop's Redis.
    access.network_up("blog", "blog.web.1.0", A[4])
    assert fw.sets == {5432: {A[2], A[3], A[4]}, 6380: {A[2], A[3]}}
    assert services.admitted[-1]["postgresql-shop-1"] == {"10.213.0.2", "10.213.0.3"}
    assert services.admitted[-1]["postgresql-blog-1"] == {"10.213.0.4"}
    # An app with no add-on changes nothing: no nft call, no admit.
    calls, admits = len(fw.calls), len(services.admitted)
    access.network_up("news", "news.web.1.0", A[5])
    assert (len(fw.calls), len(services.admitted)) == (calls, admits)
    assert all(A[5] not in s for s in fw.sets.values())


def test_detach_and_teardown_take_access_away(world: FakeStore, tmp_path: Path) -> None:
    fw, services = FakeFirewall(), FakeServices()
    access = make(world, fw, services, tmp_path)
    access.rebuild()
    access.network_up("shop", "shop.web.1.0", A[2])
    access.network_up("shop", "shop.worker.1.0", A[3])
    world.tx.attachments = [a for a in world.tx.attachments if a.addon != "redis-shop-1"]
    access.refresh()  # AddonsChanged: detached
    assert fw.sets[6380] == set()
    assert fw.sets[5432] == {A[2], A[3]}
    assert services.admitted[-1]["redis-shop-1"] == set()
    access.network_down("shop.worker.1.0")
    assert fw.sets[5432] == {A[2]}
    assert services.admitted[-1]["postgresql-shop-1"] == {"10.213.0.2"}
    access.network_down("shop.worker.1.0")  # idempotent, nothing applied
    assert services.admitted[-1]["postgresql-shop-1"] == {"10.213.0.2"}


def test_new_port_rewrites_rules_and_drops_stale_sets(world: FakeStore, tmp_path: Path) -> None:
    fw = FakeFirewall(sets={6399: {A[9]}})  # left by an earlier dynod: a destroyed add-on
    access = make(world, fw, FakeServices(), tmp_path)
    access.rebuild()
    assert fw.calls == ["replace [5432, 6380] stale [6399]"]
    world.tx.addons["redis-shop-2"] = addon("redis-shop-2", "shop", 6381, REDIS)
    world.tx.attachments.append(attach("redis-shop-2", "shop", "HEROKU_REDIS_AMBER"))
    access.network_up("shop", "shop.web.1.0", A[2])
    assert fw.calls[-1] == "replace [5432, 6380, 6381] stale []"
    assert fw.sets[6381] == {A[2]}


def test_failure_stops_a_dyno_of_an_app_with_addons_only(world: FakeStore,
                                                         tmp_path: Path) -> None:
    fw = FakeFirewall(fail=True)
    access = make(world, fw, FakeServices(), tmp_path)
    with pytest.raises(Unavailable, match="add-ons cannot be opened to it: nftables"):
        access.network_up("shop", "shop.web.1.0", A[2])
    access.network_up("news", "news.web.1.0", A[3])  # logged, the dyno may start
    access.network_down("shop.web.1.0")  # never raises


def test_a_server_that_cannot_be_told_is_retried(world: FakeStore, tmp_path: Path) -> None:
    fw, services = FakeFirewall(), FakeServices(fail=True)
    access = make(world, fw, services, tmp_path)
    access.rebuild()
    access.network_up("shop", "shop.web.1.0", A[2])  # the dyno starts; the error is logged
    assert fw.sets[5432] == {A[2]} and services.admitted == []
    services.fail = False
    access.network_up("shop", "shop.web.2.0", A[3])
    assert services.admitted[-1]["postgresql-shop-1"] == {"10.213.0.2", "10.213.0.3"}
    access.refresh()  # nothing changed since it was told: not told again
    assert len(services.admitted) == 1


def test_rebuild_reads_running_dynos_back(world: FakeStore, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    netns_dir = tmp_path / "netns"
    netns_dir.mkdir()
    monkeypatch.setattr(netns, "NETNS_DIR", netns_dir)
    for key, app, n, has_netns in (("shop.web.1.3", "shop", 2, True),
                                   ("shop.run.77.0", "shop", 3, True),
                                   ("shop.web.2.3", "shop", 4, False),  # its network gone
                                   ("blog.web.1.0", "blog", 5, True)):
        d = mounts.dynos_dir(tmp_path) / key
        d.mkdir(parents=True)
        meta = {"app": app, "process_type": "web", "number": 1, "generation": 0,
                "release": 3, "command": "x", "size": "standard-1x",
                "address": str(A[n]), "port": 5000}
        (d / "dyno.json").write_text(json.dumps(meta))
        if has_netns:
            (netns_dir / f"dynod-{key}").touch()
    (mounts.dynos_dir(tmp_path) / "shop.web.9.0").mkdir()  # no dyno.json yet
    fw, services = FakeFirewall(), FakeServices()
    make(world, fw, services, tmp_path).rebuild()
    assert fw.sets == {5432: {A[2], A[3], A[5]}, 6380: {A[2], A[3]}}
    assert services.admitted == [{"postgresql-shop-1": {"10.213.0.2", "10.213.0.3"},
                                  "redis-shop-1": {"10.213.0.2", "10.213.0.3"},
                                  "postgresql-blog-1": {"10.213.0.5"}}]


@dataclass
class Recorder:
    events: list[str] = field(default_factory=list)

    def network_up(self, app: str, key: str, address: IPv4Address) -> None:
        self.events.append(f"up {app} {key} {address}")

    def network_down(self, key: str) -> None:
        self.events.append(f"down {key}")


def test_host_tells_the_watcher_before_the_process_and_before_freeing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rec = Recorder()
    host = dynos.Host.__new__(dynos.Host)
    settings: Any = type("S", (), {"runtime_dir": tmp_path, "state_dir": tmp_path})()
    host.settings = settings
    host.watcher = rec
    host.slug_peers = None
    host.bridge = netns.plan_bridge("10.213.0.0/16")
    host.require_stack = lambda _name, _checksum: (tmp_path / "stack",)
    host.init = tmp_path / "init"
    host.resolv = tmp_path / "resolv.conf"
    host.journal_dir = tmp_path / "journal"
    host.mode = None  # type: ignore[assignment]
    host._addresses = threading.RLock()
    host._used = set()
    host._spare = None
    host.peer_pools = tuple
    ref = DynoRef("shop", "release", 1, 1)
    monkeypatch.setattr(trees, "slug_tree", lambda *a, **k: tmp_path / "tree")
    monkeypatch.setattr(dynos, "ensure_user", lambda uid: None)
    monkeypatch.setattr(dynos.Host, "_refill", lambda self: None)
    monkeypatch.setattr(dynos.Host, "_new_network", lambda self, key: netns.plan_dyno_network(
        self.bridge, key, A[7]))

    def apply_rootfs(plan: mounts.RootfsPlan) -> None:
        plan.dyno_dir.mkdir(parents=True)
        rec.events.append("rootfs")

    monkeypatch.setattr(mounts, "apply_rootfs", apply_rootfs)
    monkeypatch.setattr(units, "start_dyno", lambda spec, mode: rec.events.append("start"))
    monkeypatch.setattr(units, "reset_dyno", lambda unit: rec.events.append("reset"))
    monkeypatch.setattr(mounts, "remove_rootfs", lambda plan: rec.events.append("umount"))
    monkeypatch.setattr(netns, "remove_dyno_network",
                        lambda net: rec.events.append(f"remove {net.address}"))
    host.start(ref, release=3, command="python manage.py migrate", size="standard-1x",
               checksum="0" * 64, uid=20000, config={}, stack="debian-13")
    assert rec.events == [f"up shop {ref.key} 10.213.0.7", "rootfs", "start"]
    rec.events.clear()
    host.teardown(ref)
    assert rec.events == ["reset", f"down {ref.key}", "umount", "remove 10.213.0.7"]


def test_server_uids_skips_missing_users() -> None:
    assert addon_access.server_uids(["root", "no-such-user-dynod"]) == [0]
