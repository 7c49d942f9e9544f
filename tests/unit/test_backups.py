"""Backups' pure parts (ids, retention, the verification comparison, schedules and their
timer files) and the pg:* use cases (``dynod.control.pg``) against a real store and fake
files, servers and timers. The engine itself is tested on a real cluster in
tests/integration/test_backups.py."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dynod.addons import backups, schedule
from dynod.control import pg
from dynod.control.audit import Audit
from dynod.errors import DynodError, FailedPrecondition, InvalidArgument, NotFound
from dynod.model.addons import (
    POSTGRES,
    Addon,
    AddonState,
    Attachment,
    Backup,
    BackupStatus,
    Credentials,
)
from dynod.model.apps import App
from dynod.model.events import BackupFailed, EventBus
from dynod.store.protocol import Store
from dynod.system import timers
from tests.unit.conftest import open_store

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _b(i: str, minutes: int, status: BackupStatus = BackupStatus.VERIFIED,
       scheduled: bool = False) -> Backup:
    return Backup(i, "postgresql-a", "shop", NOW + timedelta(minutes=minutes), None, 1,
                  "x", status, "", {}, scheduled)


# --- pure parts ---------------------------------------------------------------------


def test_ids_follow_herokus_prefixes_and_never_repeat() -> None:
    assert pg.next_backup_id([], scheduled=False) == "b001"
    assert pg.next_backup_id([], scheduled=True) == "a001"
    assert pg.next_backup_id(["b001", "a004", "b009"], scheduled=False) == "b010"
    assert pg.next_backup_id(["b001", "a004", "b009"], scheduled=True) == "a005"
    assert pg.next_backup_id([f"b{i:03d}" for i in range(1, 1000)], False) == "b1000"


def test_retention_keeps_the_plans_manual_count_and_seven_scheduled() -> None:
    assert pg.manual_keep("essential-0") == 2
    assert pg.manual_keep("standard-0") == 5
    manual = [_b(f"b{i:03d}", i) for i in range(1, 5)]
    scheduled = [_b(f"a{i:03d}", i, scheduled=True) for i in range(1, 10)]
    gone = {b.id for b in pg.expired(manual + scheduled, "essential-0")}
    assert gone == {"b001", "b002", "a001", "a002"}
    assert {b.id for b in pg.expired(manual, "standard-0")} == set()


def test_retention_never_removes_running_ones_nor_the_last_verified() -> None:
    good = _b("b001", 1)
    bad = [_b(f"b00{i}", i, BackupStatus.FAILED_VERIFICATION) for i in (2, 3, 4)]
    running = _b("b005", 5, BackupStatus.RUNNING)
    gone = {b.id for b in pg.expired([good, *bad, running], "essential-0")}
    assert gone == {"b002", "b003"}  # b001 stays: the only backup that restores


def test_verification_names_each_difference() -> None:
    captured = {"orders": 42, "users": 3, "gone": 1}
    restored = {"orders": 41, "users": 3, "extra": 0}
    assert backups.compare_tables(captured, restored) == [
        "table extra: restored but not captured",
        "table gone: not restored (1 rows captured)",
        "table orders: 41 rows restored, 42 captured",
    ]
    assert backups.verdict([]) == (BackupStatus.VERIFIED, "")
    assert backups.verdict(["a", "b"]) == (BackupStatus.FAILED_VERIFICATION, "a; b")


def test_the_reason_is_the_tools_error_line() -> None:
    stderr = ("pg_restore: connecting to database\n"
              "pg_restore: error: could not read from input file: end of file\n")
    assert backups.first_error(stderr) == (
        "pg_restore: error: could not read from input file: end of file")
    assert backups.first_error("last words\n") == "last words"
    assert backups.parse_counts(["orders\x1f42", "", "s.t\x1f0"]) == {"orders": 42, "s.t": 0}
    assert backups.quote_ident('a"b') == '"a""b"'


def test_at_is_a_time_of_day_in_a_zone() -> None:
    assert schedule.parse_at("02:00 Europe/Paris") == (2, 0, "Europe/Paris")
    assert schedule.parse_at("7:30") == (7, 30, "UTC")
    assert schedule.on_calendar(2, 0, "Europe/Paris") == "*-*-* 02:00:00 Europe/Paris"
    for bad, says in (("25:00", "not a time of day"), ("noon", "use HH:MM"),
                      ("02:00 Mars/Olympus", 'unknown time zone "Mars/Olympus"')):
        with pytest.raises(InvalidArgument, match=says):
            schedule.parse_at(bad)


def test_a_schedule_is_a_persistent_timer_asking_the_daemon_for_a_backup() -> None:
    spec = schedule.timer_spec("shop", "postgresql-a-1", "DATABASE", "02:00 Europe/Paris",
                               socket_path=Path("/run/dynod/dynod.sock"),
                               python="/usr/lib/dynod/venv/bin/python")
    assert spec.name == "dynod-backup-shop.postgresql-a-1"
    timer = timers.timer_text(spec)
    assert "OnCalendar=*-*-* 02:00:00 Europe/Paris\n" in timer
    assert "Persistent=true\n" in timer
    assert "WantedBy=timers.target" in timer
    service = timers.service_text(spec)
    assert ("ExecStart=/usr/lib/dynod/venv/bin/python -m dynod.cli.main "
            "pg:backups:capture --scheduled postgresql-a-1 -a shop\n") in service
    assert "Environment=DYNOD_SOCKET=/run/dynod/dynod.sock\n" in service
    assert timers.parse_fields(timer) == {
        "App": "shop", "Addon": "postgresql-a-1", "Attachment": "DATABASE",
        "At": "02:00 Europe/Paris", "OnCalendar": "*-*-* 02:00:00 Europe/Paris"}
    with pytest.raises(InvalidArgument, match="needs quoting"):
        timers.service_text(timers.TimerSpec("x", "d", "daily", ("echo", "a b")))


# --- the use cases ------------------------------------------------------------------


@dataclass(frozen=True)
class Taken:
    size: int
    sha256: str
    tables: Mapping[str, int]


@dataclass
class FakeFiles:
    """What the engine would do; ``verdicts`` are the next verifications' results."""

    verdicts: list[tuple[BackupStatus, str]] = field(default_factory=list)
    files: dict[tuple[str, str], bytes] = field(default_factory=dict)
    restored: list[tuple[str, str, str]] = field(default_factory=list)
    corrupt: set[str] = field(default_factory=set)
    cleaned: int = 0

    def capture(self, app: str, backup_id: str, database: str) -> Taken:
        self.files[(app, backup_id)] = b"PGDMP" + backup_id.encode()
        return Taken(10, f"sum-{backup_id}", {"orders": 42})

    def verify(self, app: str, backup_id: str, sha256: str,
               tables: Mapping[str, int]) -> tuple[BackupStatus, str]:
        return self.verdicts.pop(0) if self.verdicts else (BackupStatus.VERIFIED, "")

    def restore(self, backup: Backup, database: str, role: str) -> None:
        if backup.id in self.corrupt:
            raise FailedPrecondition(f"backup {backup.id} is corrupt; the database was not "
                                     "touched")
        self.restored.append((backup.id, database, role))

    def chunks(self, app: str, backup_id: str) -> Iterator[bytes]:
        yield self.files[(app, backup_id)]

    def delete(self, app: str, backup_id: str) -> None:
        self.files.pop((app, backup_id), None)

    def remove_app(self, app: str) -> None:
        for key in [k for k in self.files if k[0] == app]:
            del self.files[key]

    def cleanup(self) -> list[str]:
        self.cleaned += 1
        return []


@dataclass(frozen=True)
class FakeSchedule:
    app: str
    addon: str
    attachment: str
    at: str
    next_run: str = ""


@dataclass
class FakeTimers:
    made: dict[tuple[str, str], FakeSchedule] = field(default_factory=dict)

    def schedule(self, app: str, addon: str, attachment: str, at: str) -> FakeSchedule:
        schedule.parse_at(at)
        self.made[(app, addon)] = FakeSchedule(app, addon, attachment, at)
        return self.made[(app, addon)]

    def unschedule(self, app: str, addon: str) -> bool:
        return self.made.pop((app, addon), None) is not None

    def schedules(self, app: str | None = None) -> Sequence[FakeSchedule]:
        return [s for s in self.made.values() if app is None or s.app == app]

    def remove_app(self, app: str, addons: Sequence[str] | None = None) -> None:
        for key in [k for k in self.made if k[0] == app and (addons is None
                                                              or k[1] in addons)]:
            del self.made[key]


@dataclass
class World:
    store: Store
    databases: pg.Databases
    files: FakeFiles
    timers: FakeTimers
    lines: list[tuple[str, str]]

    def state(self) -> object:
        with self.store.read() as tx:
            return (tx.list_backups("shop"), tx.get_addon("postgresql-a-1"))


@pytest.fixture
def world(tmp_path: Path, store_kind: str, request: pytest.FixtureRequest) -> Iterator[World]:
    """Each kind of store (SQLite, etcd) with shop's Postgres add-on, and fakes around."""
    store = open_store(store_kind, tmp_path, request)
    creds = Credentials("10.213.0.1", 5432, "postgresql_a_1", "pw", "postgresql_a_1")
    with store.write() as tx:
        tx.add_app(App("shop", "jane", NOW))
        tx.add_app(App("other", "jane", NOW))
        tx.insert_addon(Addon("postgresql-a-1", POSTGRES, "essential-0", "shop",
                              AddonState.CREATED, NOW, creds))
        tx.insert_attachment(Attachment("postgresql-a-1", "shop", "DATABASE", NOW))
    events = EventBus()
    lines: list[tuple[str, str]] = []
    events.subscribe(BackupFailed, Audit(lambda app, line: lines.append((app, line))))
    files, fake_timers = FakeFiles(), FakeTimers()
    yield World(store, pg.Databases(store, events, None, files, fake_timers), files,
                fake_timers, lines)
    store.close()


def test_capture_records_verified_backups_b001_b002(world: World) -> None:
    first = world.databases.capture("shop", "", "jane")
    second = world.databases.capture("shop", "DATABASE_URL", "jane")
    assert (first.id, first.status, dict(first.tables)) == ("b001", BackupStatus.VERIFIED,
                                                            {"orders": 42})
    assert second.id == "b002" and second.finished_at is not None
    scheduled = world.databases.capture("shop", "postgresql-a-1", "scheduler", scheduled=True)
    assert scheduled.id == "a001" and scheduled.scheduled
    assert [b.id for b in world.databases.backups("shop")] == ["a001", "b002", "b001"]
    assert world.lines == []


def test_a_failed_verification_is_recorded_and_an_app_api_line(world: World) -> None:
    world.files.verdicts.append((BackupStatus.FAILED_VERIFICATION,
                                 "table orders: 41 rows restored, 42 captured"))
    b = world.databases.capture("shop", "", "jane")
    assert b.status is BackupStatus.FAILED_VERIFICATION
    assert world.databases.backup("shop", "b001").reason == (
        "table orders: 41 rows restored, 42 captured")
    assert world.lines == [("shop", "Backup b001 of DATABASE failed verification: table "
                                    "orders: 41 rows restored, 42 captured by user jane")]
    # Only a Verified backup restores, or downloads.
    with pytest.raises(FailedPrecondition, match="did not complete successfully"):
        world.databases.restore("shop", "b001", "", "shop", "jane")
    with pytest.raises(NotFound, match="No verified backups"):
        world.databases.download("shop", "")


def test_retention_deletes_the_oldest_manual_backup_and_its_file(world: World) -> None:
    for _ in range(3):
        world.databases.capture("shop", "", "jane")
    assert [b.id for b in world.databases.backups("shop")] == ["b003", "b002"]
    assert ("shop", "b001") not in world.files.files


def test_bad_input_names_the_fix_and_changes_nothing(world: World) -> None:
    world.databases.capture("shop", "", "jane")
    before = world.state()
    cases: list[tuple[Callable[[], object], type[DynodError], str]] = [
        (lambda: world.databases.restore("shop", "b999", "", "shop", "jane"), NotFound,
         "Backup b999 not found for ⬢ shop; list them with `dynoctl pg:backups -a shop`"),
        (lambda: world.databases.restore("shop", "b001", "", "", "jane"), FailedPrecondition,
         "re-run this command with --confirm shop"),
        (lambda: world.databases.restore("shop", "b001", "", "shopp", "jane"), InvalidArgument,
         "Confirmation shopp did not match shop. Aborted."),
        (lambda: world.databases.restore("shop", "b001", "HEROKU_POSTGRESQL_RED", "shop", "j"),
         NotFound, 'app "shop" has no add-on or attachment named "HEROKU_POSTGRESQL_RED"'),
        (lambda: world.databases.capture("other", "", "jane"), NotFound,
         "⬢ other has no heroku-postgresql databases; add one with `dynoctl addons:create "
         "heroku-postgresql -a other`"),
        (lambda: world.databases.delete("shop", "b001", "other"), InvalidArgument,
         "did not match"),
        (lambda: world.databases.capture("nope", "", "jane"), NotFound, 'app "nope" not found'),
    ]
    for call, error, message in cases:
        with pytest.raises(error) as exc:
            call()
        assert message in exc.value.message
        assert world.state() == before
    assert world.files.restored == []


def test_restore_uses_the_addons_database_and_role(world: World) -> None:
    world.databases.capture("shop", "", "jane")
    backup, db = world.databases.restore("shop", "", "DATABASE_URL", "shop", "jane")
    assert (backup.id, db.addon.name) == ("b001", "postgresql-a-1")
    assert world.files.restored == [("b001", "postgresql_a_1", "postgresql_a_1")]
    world.files.corrupt.add("b001")
    with pytest.raises(FailedPrecondition, match="corrupt; the database was not touched"):
        world.databases.restore("shop", "b001", "", "shop", "jane")


def test_schedules_follow_the_addon(world: World) -> None:
    made, db = world.databases.schedule("shop", "DATABASE_URL", "02:00 Europe/Paris")
    assert (made.addon, made.attachment, db.name) == ("postgresql-a-1", "DATABASE", "DATABASE")
    assert [s.at for s in world.databases.list_schedules("shop")] == ["02:00 Europe/Paris"]
    with pytest.raises(InvalidArgument, match="unknown time zone"):
        world.databases.schedule("shop", "", "02:00 Nowhere/City")
    with world.store.write() as tx:
        tx.delete_attachment("postgresql-a-1", "shop")
        tx.delete_addon("postgresql-a-1")
    world.databases.prune_schedules("shop")
    assert world.databases.list_schedules("shop") == []
    with pytest.raises(NotFound, match="No schedules on ⬢ shop"):
        world.databases.unschedule("shop", "")


def test_a_dump_that_fails_is_recorded_failed_never_left_running(world: World) -> None:
    def full(app: str, backup_id: str, database: str) -> Taken:
        raise OSError(28, "No space left on device")

    world.files.capture = full  # type: ignore[method-assign]
    b = world.databases.capture("shop", "", "jane")
    assert b.status is BackupStatus.FAILED
    assert b.reason == "cannot write the backup file: [Errno 28] No space left on device"
    assert world.databases.backup("shop", "b001").status is BackupStatus.FAILED
    assert world.lines == [("shop", "Backup b001 of DATABASE failed: cannot write the backup "
                                    "file: [Errno 28] No space left on device by user jane")]
    with pytest.raises(FailedPrecondition, match="nothing to verify"):
        world.databases.verify("shop", "b001", "jane")


def test_backups_a_stop_interrupted_are_failed_at_start(world: World) -> None:
    done = world.databases.capture("shop", "", "jane")
    with world.store.write() as tx:
        tx.insert_backup(_b("b002", 10, BackupStatus.RUNNING))
        tx.insert_backup(_b("b003", 11, BackupStatus.VERIFYING))
    world.databases.recover()
    assert world.databases.backup("shop", "b001") == done
    for bid, was in (("b002", "running"), ("b003", "verifying")):
        b = world.databases.backup("shop", bid)
        assert b.status is BackupStatus.FAILED and b.finished_at is not None
        assert b.reason == f"dynod stopped while it was {was}; capture another"
    assert world.files.cleaned == 1


def test_schedules_are_kept_in_the_store_and_their_timers_made_from_it(world: World) -> None:
    world.databases.schedule("shop", "DATABASE_URL", "02:00 Europe/Paris")
    with world.store.read() as tx:
        assert [(s.app, s.addon, s.attachment, s.at) for s in tx.list_backup_schedules()] == \
            [("shop", "postgresql-a-1", "DATABASE", "02:00 Europe/Paris")]
    # A bad time records nothing.
    with pytest.raises(InvalidArgument, match="not a time of day"):
        world.databases.schedule("shop", "DATABASE_URL", "25:00")
    assert len(world.databases.list_schedules("shop")) == 1

    # At start the timers follow the store: a lost timer is made again, a timer the store
    # does not know (a schedule removed while dynod was down) is removed.
    world.timers.made.clear()
    world.timers.schedule("ghost", "postgresql-x-9", "DATABASE", "03:00")
    world.databases.reconcile_schedules()
    assert sorted(world.timers.made) == [("shop", "postgresql-a-1")]
    assert world.timers.made[("shop", "postgresql-a-1")].at == "02:00 Europe/Paris"

    # The add-on destroyed: its record goes with it, and the prune removes the timer.
    with world.store.write() as tx:
        tx.delete_addon("postgresql-a-1")
        assert tx.list_backup_schedules("shop") == []
    world.databases.prune_schedules("shop")
    assert world.timers.made == {}
    with pytest.raises(NotFound, match="No schedules on ⬢ shop"):
        world.databases.unschedule("shop", "")
