"""Add-ons: the store's records (migration v6) and the control plane's use cases
(``dynod.control.addons``) against a fake :class:`AddonServices`."""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterator, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from dynod.api.daemon import Daemon
from dynod.api.server import make_server
from dynod.build.buildpacks import Buildpack, compile_app
from dynod.build.pipeline import addon_hints
from dynod.cli import main as cli_main
from dynod.control import addons as control
from dynod.control import apps, config_vars, releases
from dynod.control.audit import Audit
from dynod.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, Unavailable
from dynod.model.addons import (
    POSTGRES,
    REDIS,
    Addon,
    AddonState,
    Attachment,
    Backup,
    BackupStatus,
    Credentials,
    Plan,
)
from dynod.model.apps import App
from dynod.model.events import AddonsChanged, AppEvent, EventBus
from dynod.model.releases import Release, ReleaseStatus
from dynod.model.slugs import Slug
from dynod.settings import Settings
from dynod.store import reads
from dynod.store.sqlite import SqliteStore

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
CREDS = Credentials("10.213.0.1", 5432, "u_pg", "secret/pw", "d_pg")


def _addon(name: str, app: str, service: str = POSTGRES) -> Addon:
    plan = "essential-0" if service == POSTGRES else "mini"
    return Addon(name, service, plan, app, AddonState.CREATED, NOW, CREDS)


def test_store_keeps_addons_attachments_and_backups(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path / "state.db")
    with store.write() as tx:
        tx.add_app(App("shop", "jane", NOW))
        tx.add_app(App("blog", "jane", NOW))
        tx.insert_addon(_addon("postgresql-curved-12345", "shop"))
        tx.insert_addon(_addon("redis-flat-11111", "blog", REDIS))
        tx.insert_attachment(Attachment("postgresql-curved-12345", "shop", "DATABASE", NOW))
        tx.insert_attachment(Attachment("postgresql-curved-12345", "blog", "SHOP_DB", NOW))
        tx.insert_attachment(Attachment("redis-flat-11111", "blog", "REDIS", NOW))
        tx.insert_backup(Backup("b001", "postgresql-curved-12345", "shop", NOW, None, 0, "",
                                BackupStatus.RUNNING, "", {}))
    store.close()
    store = SqliteStore.open(tmp_path / "state.db")  # durable
    with store.write() as tx:
        assert tx.get_addon("postgresql-curved-12345") == _addon("postgresql-curved-12345",
                                                                  "shop")
        assert [a.name for a in tx.list_addons()] == ["postgresql-curved-12345",
                                                      "redis-flat-11111"]
        assert [a.name for a in tx.list_addons("blog")] == ["redis-flat-11111"]
        assert [(a.app, a.name) for a in tx.list_attachments(addon="postgresql-curved-12345")
                ] == [("blog", "SHOP_DB"), ("shop", "DATABASE")]
        assert [a.name for a in tx.list_attachments("blog")] == ["REDIS", "SHOP_DB"]
        rotated = Addon("postgresql-curved-12345", POSTGRES, "essential-0", "shop",
                        AddonState.CREATED, NOW, Credentials("10.213.0.1", 5432, "u_pg",
                                                             "new", "d_pg"))
        tx.update_addon(rotated)
        assert tx.get_addon(rotated.name) == rotated
        done = Backup("b001", "postgresql-curved-12345", "shop", NOW, NOW, 42, "ab",
                      BackupStatus.VERIFIED, "", {"items": 3}, scheduled=True)
        tx.update_backup(done)
        assert tx.get_backup("shop", "b001") == done
        assert tx.list_backups("shop") == [done]
        assert tx.get_backup("blog", "b001") is None
        tx.delete_attachment("postgresql-curved-12345", "blog")
        assert [a.name for a in tx.list_attachments("blog")] == ["REDIS"]
        # Removing an app removes what it owns and every attachment of its add-ons.
        tx.insert_attachment(Attachment("postgresql-curved-12345", "blog", "SHOP_DB", NOW))
        tx.remove_app("shop")
        assert tx.get_addon("postgresql-curved-12345") is None
        assert [a.name for a in tx.list_attachments()] == ["REDIS"]
        tx.delete_backup("blog", "b001")
        tx.delete_addon("redis-flat-11111")
        assert tx.list_attachments() == [] and tx.list_addons() == []


def test_attachment_names_are_unique_per_app(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path / "state.db")
    with store.write() as tx:
        tx.add_app(App("shop", "jane", NOW))
        tx.insert_addon(_addon("postgresql-curved-12345", "shop"))
        tx.insert_addon(_addon("postgresql-round-22222", "shop"))
        tx.insert_attachment(Attachment("postgresql-curved-12345", "shop", "DATABASE", NOW))
    with pytest.raises(Exception, match="UNIQUE"), store.write() as tx:
        tx.insert_attachment(Attachment("postgresql-round-22222", "shop", "DATABASE", NOW))


# --- the control plane, against a fake of the servers ---------------------------------

class FakeServices:
    """Records what the control plane asks of the servers; ``fail`` makes provision or
    deprovision raise."""

    def __init__(self) -> None:
        self.provisioned: dict[str, str] = {}  # add-on -> service
        self.deprovisioned: list[str] = []
        self.fail: set[str] = set()
        self.count = 0

    def provision(self, addon: str, plan: Plan) -> Credentials:
        if "provision" in self.fail:
            raise Unavailable("postgresql@15-dynod.service is not running; start it")
        self.count += 1
        self.provisioned[addon] = plan.service
        port = 5432 if plan.service == POSTGRES else 6400 + self.count
        return Credentials("10.213.0.1", port, f"u{self.count}", f"pw{self.count}",
                           f"d{self.count}" if plan.service == POSTGRES else "0")

    def deprovision(self, addon: str, service: str) -> None:
        if "deprovision" in self.fail:
            raise Unavailable("cannot reach the server")
        self.deprovisioned.append(addon)
        self.provisioned.pop(addon, None)

    def rotate_credentials(self, addon: str, service: str) -> Credentials:
        raise NotImplementedError

    def reset(self, addon: str, service: str) -> None:
        raise NotImplementedError

    def info(self, addon: str, service: str) -> Mapping[str, str]:
        return {}

    def admit(self, addresses: Mapping[str, AbstractSet[str]]) -> None:
        pass

    def ensure_running(self) -> None:
        pass


@dataclass
class World:
    store: SqliteStore
    events: EventBus
    services: FakeServices
    seen: list[AppEvent]
    lines: list[tuple[str, str]]

    def snapshot(self) -> tuple[object, ...]:
        with self.store.read() as tx:
            return (tx.list_addons(), tx.list_attachments(),
                    {a.name: tx.releases(a.name, None) for a in tx.apps()},
                    [a.name for a in tx.apps()])

    def config(self, app: str) -> dict[str, str]:
        with self.store.read() as tx:
            return dict(reads.latest_release(tx, app).config)


@pytest.fixture
def world(tmp_path: Path) -> World:
    store = SqliteStore.open(tmp_path / "state.db")
    events = EventBus()
    seen: list[AppEvent] = []
    lines: list[tuple[str, str]] = []
    events.subscribe(AppEvent, seen.append)
    events.subscribe(Audit.EVENTS, Audit(lambda app, line: lines.append((app, line))))
    for name in ("shop", "blog"):
        apps.create_app(store, events, name, "jane")
    return World(store, events, FakeServices(), seen, lines)


def _create(w: World, spec: str = "heroku-postgresql", app: str = "shop",
            as_name: str | None = None) -> control.Change:
    return control.create_addon(w.store, w.events, w.services, app, spec, user="jane",
                                as_name=as_name)


def test_create_names_attaches_and_releases_without_release_phase(world: World) -> None:
    change = _create(world)
    addon = change.addon
    assert re.fullmatch(r"postgresql-[a-z]+-\d{5}", addon.name)
    assert (addon.service, addon.plan, addon.app) == (POSTGRES, "essential-0", "shop")
    assert world.services.provisioned == {addon.name: POSTGRES}
    release = change.releases["shop"]
    assert release.description == f"Attach DATABASE (@ref:{addon.name})"
    assert release.status is ReleaseStatus.SUCCEEDED
    assert world.config("shop")["DATABASE_URL"] == "postgres://u1:pw1@10.213.0.1:5432/d1"
    event = world.seen[-1]
    assert isinstance(event, AddonsChanged) and event.release == release
    assert world.lines[-3:] == [
        ("shop", f"Attach DATABASE (@ref:{addon.name}) by user jane"),
        ("shop", f"Release v{release.version} created by user jane"),
        ("shop", f"@ref:{addon.name} completed provisioning, setting DATABASE_URL. "
                 "by user jane")]
    # Further Postgres add-ons get Heroku's colours; Redis is REDIS.
    second = _create(world, "postgresql:essential-1")
    assert second.attachment is not None
    assert second.attachment.name == "HEROKU_POSTGRESQL_AMBER"
    assert "HEROKU_POSTGRESQL_AMBER_URL" in world.config("shop")
    redis = _create(world, "redis")
    assert redis.attachment is not None and redis.attachment.name == "REDIS"
    assert re.fullmatch(r"redis-[a-z]+-\d{5}", redis.addon.name)
    assert world.config("shop")["REDIS_URL"].startswith("redis://u3:pw3@10.213.0.1:")


def test_addon_release_skips_the_release_phase_of_a_slug_that_declares_one(
        world: World) -> None:
    with world.store.write() as tx:
        tx.put_slug(Slug(id="s1", app="shop", checksum="sha256:ab", size=1, created_at=NOW,
                         process_types={"web": "gunicorn app", "release": "migrate"},
                         commit="1234567890", uploaded=True))
    deployed = releases.create_release(world.store, world.events, "shop", "s1", "jane")
    assert deployed.status is ReleaseStatus.PENDING  # a deploy runs its release phase
    releases.set_status(world.store, "shop", deployed.version, ReleaseStatus.SUCCEEDED)
    change = _create(world)
    assert change.releases["shop"].status is ReleaseStatus.SUCCEEDED
    assert change.releases["shop"].slug_id == "s1"
    # config:set of the same app still runs it
    set_ = config_vars.set_config(world.store, world.events, "shop", {"A": "1"}, "jane")
    assert set_.status is ReleaseStatus.PENDING


@pytest.mark.parametrize(("spec", "as_name", "error", "text"), [
    ("mysql", None, InvalidArgument, 'unknown add-on service "mysql"'),
    ("heroku-postgresql:huge-9", None, InvalidArgument, 'has no plan "huge-9"; plans:'),
    ("redis:nope", None, InvalidArgument, "plans: mini"),
    ("postgresql", "bad name!", InvalidArgument, "e.g. --as DATABASE"),
    ("postgresql", "DATABASE", AlreadyExists, "choose another name with --as"),
])
def test_bad_create_names_the_fix_and_changes_nothing(
        world: World, spec: str, as_name: str | None, error: type[Exception],
        text: str) -> None:
    _create(world)
    before = world.snapshot()
    provisioned = dict(world.services.provisioned)
    with pytest.raises(error, match=re.escape(text)):
        _create(world, spec, as_name=as_name)
    assert world.snapshot() == before
    assert world.services.provisioned == provisioned


def test_create_refuses_a_config_var_the_user_set(world: World) -> None:
    config_vars.set_config(world.store, world.events, "shop",
                           {"DATABASE_URL": "postgres://elsewhere/db"}, "jane")
    before = world.snapshot()
    with pytest.raises(FailedPrecondition, match="config:unset DATABASE_URL"):
        _create(world)
    assert world.snapshot() == before and world.services.provisioned == {}
    assert _create(world, as_name="local").attachment is not None  # --as works around it


def test_create_on_missing_app_and_failed_provision_record_nothing(world: World) -> None:
    before = world.snapshot()
    with pytest.raises(NotFound, match="dynoctl apps"):
        _create(world, app="nope")
    world.services.fail.add("provision")
    with pytest.raises(Unavailable):
        _create(world)
    assert world.snapshot() == before


def test_a_failed_commit_deprovisions(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    before = world.snapshot()

    def broken(*_a: object, **_k: object) -> Release:
        raise OSError("disk full")

    monkeypatch.setattr(releases, "append_release", broken)
    with pytest.raises(OSError, match="disk full"):
        _create(world)
    assert world.snapshot() == before
    assert world.services.provisioned == {} and len(world.services.deprovisioned) == 1


def test_attach_detach_and_their_releases(world: World) -> None:
    addon = _create(world).addon
    att = control.attach_addon(world.store, world.events, addon.name, "blog",
                               as_name="shop_db", user="jane")
    assert att.attachment is not None and att.attachment.name == "SHOP_DB"
    assert att.releases["blog"].description == f"Attach SHOP_DB (@ref:{addon.name})"
    assert world.config("blog")["SHOP_DB_URL"] == world.config("shop")["DATABASE_URL"]
    listed = control.list_addons(world.store, "blog")
    assert [(v.addon.name, [a.app for a in v.attachments]) for v in listed] == [
        (addon.name, ["blog", "shop"])]
    before = world.snapshot()
    with pytest.raises(NotFound, match="apps:create ghost"):
        control.attach_addon(world.store, world.events, addon.name, "ghost", as_name=None,
                             user="jane")
    with pytest.raises(AlreadyExists, match="already attached"):
        control.attach_addon(world.store, world.events, addon.name, "blog", as_name="X",
                             user="jane")
    with pytest.raises(NotFound, match="addons --all"):
        control.attach_addon(world.store, world.events, "postgresql-nope-00000", "blog",
                             as_name=None, user="jane")
    with pytest.raises(FailedPrecondition, match="addons:destroy"):
        control.detach_addon(world.store, world.events, "DATABASE", "shop", "jane")
    with pytest.raises(NotFound, match="addons -a blog"):
        control.detach_addon(world.store, world.events, "NOPE", "blog", "jane")
    assert world.snapshot() == before
    gone = control.detach_addon(world.store, world.events, "SHOP_DB_URL", "blog", "jane")
    assert gone.releases["blog"].description == f"Detach SHOP_DB (@ref:{addon.name})"
    assert gone.releases["blog"].status is ReleaseStatus.SUCCEEDED
    assert "SHOP_DB_URL" not in world.config("blog")
    assert control.list_addons(world.store, "blog") == []


def test_destroy_needs_the_owning_app_and_detaches_everywhere(world: World) -> None:
    addon = _create(world).addon
    control.attach_addon(world.store, world.events, addon.name, "blog", as_name=None,
                         user="jane")
    before = world.snapshot()
    with pytest.raises(InvalidArgument, match="--confirm shop"):
        control.destroy_addon(world.store, world.events, world.services, addon.name,
                              confirm=None, user="jane")
    with pytest.raises(InvalidArgument, match='owning app "shop"; re-run with --confirm shop'):
        control.destroy_addon(world.store, world.events, world.services, addon.name,
                              confirm="blog", user="jane")
    world.services.fail.add("deprovision")
    with pytest.raises(Unavailable):
        control.destroy_addon(world.store, world.events, world.services, addon.name,
                              confirm="shop", user="jane")
    assert world.snapshot() == before
    world.services.fail.clear()
    change = control.destroy_addon(world.store, world.events, world.services, addon.name,
                                   confirm="shop", user="jane")
    assert world.services.deprovisioned == [addon.name]
    assert {a: r.description for a, r in change.releases.items()} == {
        "shop": f"Detach DATABASE (@ref:{addon.name})",
        "blog": f"Detach DATABASE (@ref:{addon.name})"}
    assert "DATABASE_URL" not in world.config("shop")
    assert "DATABASE_URL" not in world.config("blog")
    assert control.list_addons(world.store) == []
    changed = [e.app for e in world.seen[-2:] if isinstance(e, AddonsChanged)]
    assert sorted(changed) == ["blog", "shop"]


def test_promote_swaps_in_one_release(world: World) -> None:
    first = _create(world).addon
    second = _create(world).addon
    urls = (world.config("shop")["DATABASE_URL"],
            world.config("shop")["HEROKU_POSTGRESQL_AMBER_URL"])
    versions = len(releases.list_releases(world.store, "shop"))
    done = control.promote(world.store, world.events, "HEROKU_POSTGRESQL_AMBER", "shop",
                           "jane")
    assert done.addon.name == second.name
    assert done.demoted is not None and done.demoted.name == "HEROKU_POSTGRESQL_AMBER"
    assert len(releases.list_releases(world.store, "shop")) == versions + 1
    assert done.release.description == f"Update DATABASE by pg:promote (@ref:{second.name})"
    assert done.release.status is ReleaseStatus.SUCCEEDED
    config = world.config("shop")
    assert (config["HEROKU_POSTGRESQL_AMBER_URL"], config["DATABASE_URL"]) == urls
    with pytest.raises(FailedPrecondition, match="already promoted"):
        control.promote(world.store, world.events, second.name, "shop", "jane")
    redis = _create(world, "redis").addon
    with pytest.raises(InvalidArgument, match="heroku-postgresql add-ons only"):
        control.promote(world.store, world.events, redis.name, "shop", "jane")
    assert first.name in {v.addon.name for v in control.list_addons(world.store, "shop")}


def test_rollback_keeps_the_current_addons(world: World) -> None:
    config_vars.set_config(world.store, world.events, "shop", {"A": "1"}, "jane")  # v2
    addon = _create(world).addon  # v3
    url = world.config("shop")["DATABASE_URL"]
    releases.rollback(world.store, world.events, "shop", 2, "jane")
    assert world.config("shop") == {"A": "1", "DATABASE_URL": url}
    # Rolling back to a release from while an add-on since detached was attached drops it.
    other = _create(world, app="blog").addon
    control.attach_addon(world.store, world.events, other.name, "shop", as_name="OTHER",
                         user="jane")
    before_detach = len(releases.list_releases(world.store, "shop"))
    control.detach_addon(world.store, world.events, "OTHER", "shop", "jane")
    releases.rollback(world.store, world.events, "shop", before_detach, "jane")
    assert world.config("shop") == {"A": "1", "DATABASE_URL": url}
    assert addon.name in {v.addon.name for v in control.list_addons(world.store, "shop")}


def test_apps_destroy_destroys_owned_addons_and_detaches_others(world: World) -> None:
    owned = _create(world).addon
    theirs = _create(world, "redis", app="blog").addon
    control.attach_addon(world.store, world.events, owned.name, "blog", as_name=None,
                         user="jane")
    control.attach_addon(world.store, world.events, theirs.name, "shop", as_name=None,
                         user="jane")
    before = world.snapshot()
    with pytest.raises(FailedPrecondition, match=f"owns add-ons \\({owned.name}\\)"):
        apps.delete_app(world.store, world.events, Path("/nonexistent"), "shop",
                        services=world.services)
    assert world.snapshot() == before
    apps.delete_app(world.store, world.events, Path("/nonexistent"), "shop",
                    services=world.services, destroy_addons=True, user="jane")
    assert world.services.deprovisioned == [owned.name]
    assert [v.addon.name for v in control.list_addons(world.store)] == [theirs.name]
    assert [a.app for a in control.get_addon(world.store, theirs.name).attachments] == ["blog"]
    assert "DATABASE_URL" not in world.config("blog")
    assert world.lines[-2:] == [
        ("blog", f"Detach DATABASE (@ref:{owned.name}) by user jane"),
        ("blog", f"Release v{len(releases.list_releases(world.store, 'blog'))} created by "
                 "user jane")]


# --- dynoctl over the API -------------------------------------------------------------

@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeServices]:
    store = SqliteStore.open(tmp_path / "state" / "state.db")
    services = FakeServices()
    daemon = Daemon(store, Settings(state_dir=tmp_path / "state", runtime_dir=tmp_path / "run"),
                    addons=services)
    server, _ = make_server(daemon, max_workers=8)
    sock = tmp_path / "api.sock"
    server.add_insecure_port(f"unix:{sock}")
    server.start()
    monkeypatch.setenv("DYNOD_SOCKET", str(sock))
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))
    try:
        yield services
    finally:
        server.stop(None).wait()
        store.close()


def dynoctl(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli_main.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_dynoctl_addons_verbs_print_herokus_output(
        cli: FakeServices, capsys: pytest.CaptureFixture[str]) -> None:
    for app in ("shop", "blog"):
        assert dynoctl(capsys, "apps:create", app, "--no-remote")[0] == 0
    code, out, err = dynoctl(capsys, "addons:create", "heroku-postgresql", "-a", "shop")
    assert code == 0, err
    name = out.split()[1]
    assert re.fullmatch(r"postgresql-[a-z]+-\d{5}", name)
    assert err == "Creating heroku-postgresql:essential-0 on ⬢ shop... free\n"
    assert out.splitlines()[0] == f"Created {name} as DATABASE_URL"
    code, out, err = dynoctl(capsys, "addons:create", "postgresql:nope", "-a", "shop")
    assert code == 1
    assert err.splitlines() == [
        "Creating postgresql:nope on ⬢ shop... !",
        ' !    heroku-postgresql has no plan "nope"; plans: essential-0, essential-1, '
        "essential-2, standard-0 (e.g. heroku-postgresql:essential-0)"]
    code, out, err = dynoctl(capsys, "addons:attach", name, "-a", "blog", "--as", "shop_db")
    assert (code, err) == (0, f"Attaching {name} as SHOP_DB to ⬢ blog... done\n"
                              "Setting SHOP_DB config vars and restarting ⬢ blog... done, v2\n")
    code, out, _ = dynoctl(capsys, "addons", "-a", "blog")
    lines = out.splitlines()
    assert lines[1].split() == ["Add-on", "Plan", "Price", "Max", "Price", "State"]
    assert lines[3].split() == ["heroku-postgresql", f"({name})", "essential-0", "(billed",
                                "to", "⬢", "shop", "app)", "(billed", "to", "⬢", "shop",
                                "app)", "created"]
    assert lines[4] == " ├─ as SHOP_DB"
    assert lines[5] == " └─ as DATABASE on ⬢ shop app"
    assert lines[-1] == ("The table above shows add-ons and the attachments to the current "
                         "app (blog) or other apps.")
    code, out, _ = dynoctl(capsys, "addons:info", name)
    assert out.splitlines()[:3] == [f"=== {name}", "Plan:         heroku-postgresql:essential-0",
                                    "Price:        free"]
    assert "Attachments:  ⬢ blog::SHOP_DB\n              ⬢ shop::DATABASE\n" in out
    assert "Connections:  20 (CONNECTION LIMIT of its role)" in out
    assert ("Storage:      1 GB (not enforced: PostgreSQL has no per-database quota; "
            "pg:info shows the size)") in out
    listed = json.loads(dynoctl(capsys, "addons", "--all", "--json")[1])
    assert [(a["name"], a["plan"]["name"], len(a["attachments"])) for a in listed] == [
        (name, "heroku-postgresql:essential-0", 2)]
    code, _, err = dynoctl(capsys, "addons:detach", "SHOP_DB", "-a", "blog")
    assert (code, err) == (0, f"Detaching SHOP_DB to {name} from ⬢ blog... done\n"
                              "Unsetting SHOP_DB config vars and restarting ⬢ blog... done, v3\n")
    assert dynoctl(capsys, "addons", "-a", "blog")[1] == "No add-ons for app blog.\n"
    redis = dynoctl(capsys, "addons:create", "redis:premium-0", "-a", "shop")[1].split()[1]
    code, out, _ = dynoctl(capsys, "addons:info", "REDIS", "-a", "shop")
    assert "Memory:       50 MB (maxmemory, then eviction)" in out
    assert "Connections:  40 (maxclients)" in out
    second = dynoctl(capsys, "addons:create", "postgresql", "-a", "shop")[1].split()[1]
    code, _, err = dynoctl(capsys, "pg:promote", second, "-a", "shop")
    assert (code, err) == (0, "Ensuring an alternate alias for existing DATABASE_URL... "
                              "HEROKU_POSTGRESQL_AMBER_URL\n"
                              f"Promoting {second} to DATABASE_URL on ⬢ shop... done\n")
    config = json.loads(dynoctl(capsys, "config", "-a", "shop", "--json")[1])
    assert sorted(config) == ["DATABASE_URL", "HEROKU_POSTGRESQL_AMBER_URL", "REDIS_URL"]
    code, _, err = dynoctl(capsys, "addons:destroy", redis, "--confirm", "blog")
    assert code == 1 and "re-run with --confirm shop" in err
    code, _, err = dynoctl(capsys, "addons:destroy", redis, "--confirm", "shop")
    assert (code, err) == (0, f"Destroying {redis} on ⬢ shop... done\n")
    assert cli.deprovisioned == [redis]
    code, _, err = dynoctl(capsys, "apps:destroy", "shop", "--confirm", "shop")
    assert (code, err) == (0, "Destroying ⬢ shop (including all add-ons)... done\n")
    assert sorted(cli.deprovisioned) == sorted([redis, name, second])
    assert dynoctl(capsys, "addons", "--all")[1] == "No add-ons.\n"


# --- the build's add-on hint ----------------------------------------------------------

def test_bin_release_addons_become_one_hint_each_for_what_the_app_lacks(
        world: World, tmp_path: Path) -> None:
    dirs = {n: tmp_path / n for n in ("build", "cache", "env", "work", "packs")}
    for d in dirs.values():
        d.mkdir()
    packs = []
    for name, addons in (("one", "  - heroku-postgresql:essential-0\\n  - heroku-redis\\n"),
                         ("two", "  - heroku-postgresql\\n  - heroku-kafka\\n")):
        bin_dir = dirs["packs"] / name / "bin"
        bin_dir.mkdir(parents=True)
        for script, body in (("detect", f"echo {name}"), ("compile", "true"),
                             ("release", f'printf -- "---\\naddons:\\n{addons}"')):
            (bin_dir / script).write_text(f"#!/usr/bin/env bash\nset -eu\n{body}\n")
            (bin_dir / script).chmod(0o755)
        packs.append(Buildpack(name, dirs["packs"] / name))
    result = compile_app(dirs["build"], dirs["cache"], dirs["env"], dirs["work"],
                         stack="debian-13", on_line=lambda _l: None, buildpacks=packs)
    assert result.addons == ("heroku-postgresql:essential-0", "heroku-redis",
                             "heroku-postgresql", "heroku-kafka")
    _create(world, "redis")
    assert addon_hints(world.store, "shop", result.addons) == [
        "-----> This app may need an add-on: heroku-postgresql (dynoctl addons:create "
        "heroku-postgresql:essential-0 -a shop)",
        "-----> This app may need an add-on dynod does not provide: heroku-kafka"]
    _create(world)
    assert addon_hints(world.store, "shop", result.addons) == [
        "-----> This app may need an add-on dynod does not provide: heroku-kafka"]


def test_dynoctl_bad_input_names_the_fix_and_changes_nothing(
        cli: FakeServices, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    for app in ("shop", "blog"):
        dynoctl(capsys, "apps:create", app, "--no-remote")
    name = dynoctl(capsys, "addons:create", "postgresql", "-a", "shop")[1].split()[1]
    db = sqlite3.connect(tmp_path / "state" / "state.db")

    def dump() -> str:
        return "\n".join(db.iterdump())

    before = dump()
    for argv, message in [
        (("addons:create", "mysql", "-a", "shop"),
         'unknown add-on service "mysql"; available: heroku-postgresql, heroku-redis, '
         "postgres, postgresql, redis (e.g. dynoctl addons:create heroku-postgresql)"),
        (("addons:create", "redis:huge", "-a", "shop"),
         'heroku-redis has no plan "huge"; plans: mini, premium-0, premium-1, premium-2 '
         "(e.g. heroku-redis:mini)"),
        (("addons:create", "postgresql", "--as", "DATABASE", "-a", "shop"),
         f'app "shop" already has an add-on attached as DATABASE ({name}); choose another '
         "name with --as, or detach it first (dynoctl addons:detach DATABASE -a shop)"),
        (("addons:destroy", name),
         f"destroying {name} deletes its data; confirm with `dynoctl addons:destroy {name} "
         "--confirm shop`"),
        (("addons:destroy", name, "--confirm", "blog"),
         f"--confirm blog does not match {name}'s owning app \"shop\"; re-run with "
         "--confirm shop"),
        (("addons:attach", name, "-a", "ghost"),
         'app "ghost" not found; create it with `dynoctl apps:create ghost`, or list your '
         "apps with `dynoctl apps`"),
        (("addons:info", "postgresql-none-00000"),
         'add-on "postgresql-none-00000" not found; list add-ons with `dynoctl addons --all`'),
    ]:
        code, _, err = dynoctl(capsys, *argv)
        assert code == 1, argv
        assert err.splitlines()[-1] == f" !    {message}", (argv, err)
        assert dump() == before, argv
    assert cli.provisioned == {name: POSTGRES}


def test_dynoctl_rollback_says_the_addons_stay(
        cli: FakeServices, capsys: pytest.CaptureFixture[str]) -> None:
    dynoctl(capsys, "apps:create", "shop", "--no-remote")
    dynoctl(capsys, "config:set", "A=1", "-a", "shop")
    dynoctl(capsys, "addons:create", "postgresql", "-a", "shop")
    dynoctl(capsys, "addons:create", "redis", "-a", "shop")
    code, _, err = dynoctl(capsys, "rollback", "v2", "-a", "shop")
    assert (code, err.splitlines()) == (0, [
        "Rolling back ⬢ shop to v2... done, v5",
        " !    Rollback affects code and config vars; it doesn't add or remove addons.",
        " !    Add-on config vars kept: DATABASE_URL, REDIS_URL",
        " !    To undo, run: dynoctl rollback v4"])
    config = json.loads(dynoctl(capsys, "config", "-a", "shop", "--json")[1])
    assert sorted(config) == ["A", "DATABASE_URL", "REDIS_URL"]


def test_an_addon_release_waits_for_a_pending_release_phase(world: World) -> None:
    with world.store.write() as tx:
        tx.put_slug(Slug(id="s1", app="shop", checksum="sha256:ab", size=1, created_at=NOW,
                         process_types={"web": "gunicorn app", "release": "migrate"},
                         commit="1234567890", uploaded=True))
    deployed = releases.create_release(world.store, world.events, "shop", "s1", "jane")
    assert deployed.status is ReleaseStatus.PENDING
    # The code has not passed its release phase: the add-on's release runs it too, with
    # the new URL, instead of going live before the migration.
    assert _create(world).releases["shop"].status is ReleaseStatus.PENDING


def test_promote_an_addon_of_another_app_and_destroy_from_the_wrong_app(world: World) -> None:
    mine = _create(world).addon
    theirs = _create(world, app="blog").addon
    done = control.promote(world.store, world.events, theirs.name, "shop", "jane")
    assert done.demoted is not None and done.demoted.name == "HEROKU_POSTGRESQL_AMBER"
    config = world.config("shop")
    assert config["DATABASE_URL"] == theirs.url
    assert config["HEROKU_POSTGRESQL_AMBER_URL"] == mine.url
    before = world.snapshot()
    with pytest.raises(InvalidArgument, match="is on blog not shop; destroy it with -a blog"):
        control.destroy_addon(world.store, world.events, world.services, theirs.name,
                              confirm="blog", user="jane", app="shop")
    assert world.snapshot() == before


def test_while_provisioning_the_name_is_taken_and_listed_as_provisioning(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[object] = []
    provision = world.services.provision

    def slow(addon: str, plan: Plan) -> Credentials:
        seen.append([(v.addon.name, str(v.addon.state)) for v in
                     control.list_addons(world.store, "shop")])
        with pytest.raises(AlreadyExists, match='"postgresql-mine" already exists'):
            control.create_addon(world.store, world.events, world.services, "blog",
                                 "postgresql", user="jane", name="postgresql-mine")
        return provision(addon, plan)

    monkeypatch.setattr(world.services, "provision", slow)
    control.create_addon(world.store, world.events, world.services, "shop", "postgresql",
                         user="jane", name="postgresql-mine")
    assert seen == [[("postgresql-mine", "provisioning")]]
    assert control.get_addon(world.store, "postgresql-mine").addon.state is AddonState.CREATED
    assert list(world.services.provisioned) == ["postgresql-mine"]


def test_apps_info_lists_the_plans_of_the_addons_the_app_owns(
        cli: FakeServices, capsys: pytest.CaptureFixture[str]) -> None:
    for app in ("shop", "blog"):
        dynoctl(capsys, "apps:create", app, "--no-remote")
    name = dynoctl(capsys, "addons:create", "postgresql", "-a", "shop")[1].split()[1]
    dynoctl(capsys, "addons:create", "redis:premium-0", "-a", "shop")
    dynoctl(capsys, "addons:attach", name, "-a", "blog")
    assert dynoctl(capsys, "apps:info", "-a", "shop")[1].splitlines()[1] == \
        "Addons:               heroku-postgresql:essential-0, heroku-redis:premium-0"
    assert dynoctl(capsys, "apps:info", "-a", "blog")[1].splitlines()[1] == "Addons:"


def test_a_create_interrupted_by_a_stop_is_undone_at_start(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    class Stopped(BaseException):
        """dynod stopping in the middle of provisioning (no cleanup runs)."""

    services = world.services

    def stop(addon: str, plan: Plan) -> Credentials:
        services.provisioned[addon] = plan.service  # half made: the database exists
        raise Stopped

    monkeypatch.setattr(control, "_forget", lambda store, name: None)  # the stop skips it
    monkeypatch.setattr(world.services, "provision", stop)
    with pytest.raises(Stopped):
        control.create_addon(world.store, world.events, world.services, "shop", "postgresql",
                             user="jane", name="postgresql-mine")
    monkeypatch.undo()
    assert [v.addon.state for v in control.list_addons(world.store, "shop")] == \
        [AddonState.PROVISIONING]

    assert control.recover(world.store, world.services) == ["postgresql-mine"]
    assert control.list_addons(world.store, "shop") == []
    assert "postgresql-mine" not in world.services.provisioned
    # The name is free again, and a created add-on is never touched by recover.
    control.create_addon(world.store, world.events, world.services, "shop", "postgresql",
                         user="jane", name="postgresql-mine")
    assert control.recover(world.store, world.services) == []
    assert [v.addon.state for v in control.list_addons(world.store, "shop")] == \
        [AddonState.CREATED]
