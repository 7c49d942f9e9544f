"""Backups that are known to restore, against a real PostgreSQL.

The engine tests (``dynod.addons.backups``) start a throwaway cluster of their own
(Debian's postgresql: ``initdb`` and ``pg_ctl`` as the postgres user, in a temporary
directory, on a unix socket only, stopped and removed even when a test fails), so they
need no dynod and no other part of the add-ons. The last tests go through ``dynoctl`` in
a sandbox machine (capture -> ``pg:backups`` shows Verified; a schedule fires ``a001``).
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shlex
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from dynod.addons.backups import BackupEngine, Capture, LocalCluster
from dynod.errors import FailedPrecondition
from dynod.model.addons import Backup, BackupStatus
from tests.integration.test_dynos import wait_for
from tests.sandbox.machine import Machine

pytestmark = pytest.mark.integration

VERSIONS = Path("/usr/lib/postgresql")


def _bindir() -> Path:
    found = sorted(VERSIONS.glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    if not found:
        pytest.skip("Debian's postgresql is not installed (.ci/prereqs installs it)")
    return found[-1].parent


@dataclass
class Cluster:
    cluster: LocalCluster
    engine: BackupEngine
    root: Path

    def sql(self, database: str, text: str) -> list[str]:
        return self.engine.sql(database, text)

    def make_database(self, name: str) -> None:
        """A database owned by role ``name``, PUBLIC kept out, as the add-on servers
        make them."""
        self.sql("postgres", f"CREATE ROLE {name} LOGIN PASSWORD 'pw';")
        self.sql("postgres", f"CREATE DATABASE {name} OWNER {name};")
        self.sql("postgres", f"REVOKE ALL ON DATABASE {name} FROM PUBLIC;\n"
                             f"GRANT ALL ON DATABASE {name} TO {name};\n"
                             f"ALTER DATABASE {name} CONNECTION LIMIT 20;\n"
                             f"ALTER DATABASE {name} SET statement_timeout TO '31s';")

    def as_role(self, database: str, text: str) -> list[str]:
        return self.sql(database, f"SET ROLE {database};\n{text}")

    def databases(self) -> set[str]:
        return set(self.sql("postgres", "SELECT datname FROM pg_database;"))


@pytest.fixture(scope="module")
def pg() -> Iterator[Cluster]:
    if os.geteuid() != 0:
        pytest.skip("needs root (the cluster runs as the postgres user)")
    bindir = _bindir()
    pw = pwd.getpwnam("postgres")
    root = Path(tempfile.mkdtemp(prefix="dynod-pgtest-", dir="/var/tmp"))
    os.chown(root, pw.pw_uid, pw.pw_gid)
    data, sock = root / "data", root
    port = 54000 + os.getpid() % 1000

    def as_postgres(*argv: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *argv], check=True,
                       capture_output=True, timeout=120)

    try:
        as_postgres(str(bindir / "initdb"), "-D", str(data), "-A", "peer", "-U", "postgres",
                    "--no-sync")
        as_postgres(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w",
                    "-o", f"-k {sock} -c listen_addresses= -p {port} -c fsync=off", "start")
        cluster = LocalCluster(bindir, sock, port)
        yield Cluster(cluster, BackupEngine(cluster, root / "backups"), root)
    finally:
        subprocess.run(["runuser", "-u", "postgres", "--", str(bindir / "pg_ctl"), "-D",
                        str(data), "-m", "immediate", "-w", "stop"], capture_output=True,
                       timeout=120, check=False)
        shutil.rmtree(root, ignore_errors=True)


def _backup(app: str, backup_id: str, taken: Capture) -> Backup:
    return Backup(backup_id, "postgresql-test", app, datetime.now(UTC), None,
                  taken.size, taken.sha256, BackupStatus.VERIFIED, "", dict(taken.tables))


def _fill(pg: Cluster, db: str) -> None:
    pg.make_database(db)
    pg.as_role(db, "CREATE TABLE orders (id serial PRIMARY KEY, item text NOT NULL);\n"
                   "INSERT INTO orders (item) SELECT 'item ' || g FROM generate_series(1, 42) g;\n"
                   "CREATE SCHEMA billing;\n"
                   "CREATE TABLE billing.invoices (n int);\n"
                   "INSERT INTO billing.invoices SELECT generate_series(1, 7);\n"
                   "CREATE TABLE empty_one (x int);")


def test_a_captured_backup_is_verified_with_the_snapshot_counts(pg: Cluster) -> None:
    _fill(pg, "verified_db")
    taken = pg.engine.capture("shop", "b001", "verified_db")
    assert dict(taken.tables) == {"orders": 42, "billing.invoices": 7, "empty_one": 0}
    assert taken.path == pg.root / "backups" / "shop" / "b001.dump"
    assert taken.path.read_bytes()[:5] == b"PGDMP"  # pg_dump -Fc
    assert not list(taken.path.parent.glob("*.partial"))
    before = pg.databases()
    assert pg.engine.verify("shop", "b001", taken.sha256, taken.tables) == (
        BackupStatus.VERIFIED, "")
    assert pg.databases() == before  # the scratch database is gone


def test_counts_are_the_dumps_even_while_rows_are_being_written(pg: Cluster) -> None:
    """The counts and the dump share one snapshot, so a backup taken under writes
    still verifies (counted before or after pg_dump, it would not)."""
    pg.make_database("busy_db")
    pg.as_role("busy_db", "CREATE TABLE events (id bigserial PRIMARY KEY, at timestamptz "
                          "DEFAULT now());\nINSERT INTO events DEFAULT VALUES;")
    pg.as_role("busy_db", "INSERT INTO events (at) SELECT now() FROM generate_series(1, 200000);")
    stop = threading.Event()
    wrote = []

    def writer() -> None:
        while not stop.is_set():
            pg.as_role("busy_db", "INSERT INTO events (at) SELECT now() FROM "
                                  "generate_series(1, 500);")
            wrote.append(1)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        time.sleep(0.3)
        taken = pg.engine.capture("busy", "b001", "busy_db")
    finally:
        stop.set()
        thread.join()
    assert len(wrote) >= 2
    final = int(pg.sql("busy_db", "SELECT count(*) FROM events;")[0])
    assert 200001 <= taken.tables["events"] < final
    assert pg.engine.verify("busy", "b001", taken.sha256, taken.tables) == (
        BackupStatus.VERIFIED, "")


def test_a_backup_damaged_before_verification_fails_verification(pg: Cluster) -> None:
    _fill(pg, "damaged_db")
    taken = pg.engine.capture("shop", "b002", "damaged_db")
    os.truncate(taken.path, taken.size // 2)
    status, reason = pg.engine.verify("shop", "b002", taken.sha256, taken.tables)
    assert status is BackupStatus.FAILED_VERIFICATION
    assert "checksum mismatch" in reason
    assert "pg_restore: error: could not read from input file: end of file" in reason


def test_a_dump_missing_rows_fails_verification_naming_the_table(pg: Cluster) -> None:
    _fill(pg, "short_db")
    taken = pg.engine.capture("shop", "b003", "short_db")
    claimed = {**taken.tables, "orders": 43}  # what the source held, say
    status, reason = pg.engine.verify("shop", "b003", taken.sha256, claimed)
    assert status is BackupStatus.FAILED_VERIFICATION
    assert reason == "table orders: 42 rows restored, 43 captured"


def test_restore_brings_back_exactly_the_captured_rows(pg: Cluster) -> None:
    _fill(pg, "trip_db")
    rows = "SELECT id, item FROM orders ORDER BY id;"
    captured_rows = pg.sql("trip_db", rows)
    taken = pg.engine.capture("trip", "b001", "trip_db")
    pg.as_role("trip_db", "DELETE FROM orders WHERE id <= 10;\n"
                          "UPDATE orders SET item = 'changed' WHERE id = 20;\n"
                          "INSERT INTO orders (item) VALUES ('new');\n"
                          "CREATE TABLE after_capture (x int);\n"
                          "TRUNCATE billing.invoices;")
    assert pg.sql("trip_db", rows) != captured_rows
    acl = "SELECT datacl::text, datconnlimit FROM pg_database WHERE datname = 'trip_db';"
    acl_before = pg.sql("postgres", acl)
    before = pg.databases()

    pg.engine.restore(_backup("trip", "b001", taken), "trip_db", "trip_db")

    assert pg.sql("trip_db", rows) == captured_rows
    assert pg.engine.counts("trip_db") == {"orders": 42, "billing.invoices": 7, "empty_one": 0}
    # Exactly the capture: a table made after it is gone; the objects are the role's.
    assert pg.sql("trip_db", "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname "
                             "IN ('public', 'billing');") == ["trip_db"]
    assert pg.sql("postgres", acl) == acl_before
    assert pg.sql("trip_db", "SHOW statement_timeout;") == ["31s"]
    assert pg.databases() == before
    # The role still owns and writes it (sequences restored too).
    pg.as_role("trip_db", "INSERT INTO orders (item) VALUES ('after restore');")
    assert pg.sql("trip_db", "SELECT max(id) FROM orders;") == ["43"]


def test_a_corrupt_file_is_refused_and_the_database_untouched(pg: Cluster) -> None:
    _fill(pg, "corrupt_db")
    taken = pg.engine.capture("corrupt", "b001", "corrupt_db")
    pg.as_role("corrupt_db", "INSERT INTO orders (item) VALUES ('kept');")
    data = bytearray(taken.path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    taken.path.write_bytes(bytes(data))
    rows = "SELECT id, item FROM orders ORDER BY id;"
    before_rows, before_dbs = pg.sql("corrupt_db", rows), pg.databases()

    with pytest.raises(FailedPrecondition) as exc:
        pg.engine.restore(_backup("corrupt", "b001", taken), "corrupt_db", "corrupt_db")

    assert "backup b001 is corrupt" in exc.value.message
    assert "the database was not touched" in exc.value.message
    assert pg.sql("corrupt_db", rows) == before_rows
    assert pg.databases() == before_dbs


def test_cleanup_drops_what_a_stop_left_but_never_the_data_before_a_restore(
        pg: Cluster) -> None:
    for name in ("dynod_verify_b001_0123abcd", "shop_restore_89abcdef", "shop_old_01234567"):
        pg.sql("postgres", f"CREATE DATABASE {name};")
    assert sorted(pg.engine.cleanup()) == ["dynod_verify_b001_0123abcd",
                                           "shop_restore_89abcdef"]
    left = pg.databases()
    assert "shop_old_01234567" in left
    assert not {"dynod_verify_b001_0123abcd", "shop_restore_89abcdef"} & left
    pg.sql("postgres", "DROP DATABASE shop_old_01234567;")


# --- through dynoctl, in a sandbox machine ------------------------------------------


def _sh(m: Machine, script: str, ok: bool = True) -> tuple[int, str]:
    proc = m.run(["bash", "-c", script], cwd="/tmp", timeout=600)
    out = proc.stdout + proc.stderr
    if ok:
        assert proc.returncode == 0, f"{script}:\n{out}"
    return proc.returncode, out


def _as_role(m: Machine, db: str, text: str) -> str:
    """SQL in the add-on's database as its role (dynod's superuser socket, SET ROLE)."""
    return _sh(m, f"psql -X -qAt -v ON_ERROR_STOP=1 -h /run/dynod-postgresql -U postgres "
                  f"-d {db} <<'SQL'\nSET ROLE {db};\n{text}\nSQL")[1]


def test_backups_through_dynoctl_verified_restored_refused_and_scheduled(
        machine: Machine) -> None:
    m = machine
    app = "shop"
    _sh(m, f"dynoctl apps:create {app}")
    _sh(m, f"dynoctl addons:create heroku-postgresql -a {app}")
    url = _sh(m, f"dynoctl config:get DATABASE_URL -a {app}")[1].strip()
    db = url.rsplit("/", 1)[-1]
    _as_role(m, db, "CREATE TABLE orders (id serial PRIMARY KEY, item text);\n"
                    "INSERT INTO orders (item) SELECT 'item ' || g FROM generate_series(1, 42) g;")
    rows = "SELECT count(*), coalesce(sum(length(item)), 0) FROM orders;"
    captured = _as_role(m, db, rows)

    out = _sh(m, f"dynoctl pg:backups:capture -a {app} 2>&1")[1]
    assert "Backing up DATABASE to b001... done\n" in out, out
    assert "1 table compared)... Verified " in out, out
    listing = _sh(m, f"dynoctl pg:backups -a {app}")[1]
    assert listing.startswith("=== Backups\n"), listing
    assert re.search(r"^b001  \S+ \S+ \S+  Verified .*DATABASE$", listing, re.M), listing

    # Round trip: rows changed, the restore brings back exactly the captured ones.
    _as_role(m, db, "DELETE FROM orders WHERE id < 5; UPDATE orders SET item = 'x';")
    assert _as_role(m, db, rows) != captured
    out = _sh(m, f"dynoctl pg:backups:restore b001 DATABASE_URL --confirm {app} -a {app} 2>&1")[1]
    assert "Restoring b001... done" in out, out
    assert _as_role(m, db, rows) == captured

    # Bad input: each says what to do, and the database stays as it is.
    _as_role(m, db, "INSERT INTO orders (item) VALUES ('kept');")
    kept = _as_role(m, db, rows)
    for command, says in (
            (f"pg:backups:restore b009 --confirm {app}",
             f"Backup b009 not found for ⬢ {app}"),
            ("pg:backups:restore b001 </dev/null", f"re-run this command with --confirm {app}"),
            ("pg:backups:restore b001 --confirm blog", f"Confirmation blog did not match {app}"),
            ("pg:backups:schedule --at '02:00 Mars/Base'", 'unknown time zone "Mars/Base"')):
        code, out = _sh(m, f"dynoctl {command} -a {app} 2>&1", ok=False)
        assert code == 1 and says in out, (command, out)
    assert _as_role(m, db, rows) == kept

    # A file damaged after capture: refused before the database is touched, and
    # verifying it again says Failed verification (and the app's log says so).
    _sh(m, f"dynoctl pg:backups:capture -a {app}")
    dump = f"/var/lib/dynod/addons/backups/{app}/b002.dump"
    _sh(m, f"truncate -s 100 {dump}")
    code, out = _sh(m, f"dynoctl pg:backups:restore b002 --confirm {app} -a {app} 2>&1", ok=False)
    assert code == 1 and "backup b002 is corrupt" in out, out
    assert "the database was not touched" in out, out
    assert _as_role(m, db, rows) == kept
    code, out = _sh(m, f"dynoctl pg:backups:verify b002 -a {app} 2>&1", ok=False)
    assert code == 1 and "Failed verification: checksum mismatch" in out, out
    listing = _sh(m, f"dynoctl pg:backups -a {app}")[1]
    assert re.search(r"^b002  .*Failed verification: checksum mismatch", listing, re.M), listing
    logs = _sh(m, f"dynoctl logs -a {app} -n 50")[1]
    assert "app[api]: Backup b002 of DATABASE failed verification: checksum mismatch" in logs

    # Download: Heroku's latest.dump, a pg_dump archive.
    _sh(m, f"cd /tmp && dynoctl pg:backups:download b001 -a {app}")
    assert "TABLE public orders" in _sh(m, "pg_restore -l /tmp/latest.dump")[1]

    # A schedule is a persistent timer; set a minute ahead, it fires a001, verified.
    at = _sh(m, "date -u -d '+90 sec' +%H:%M")[1].strip()
    out = _sh(m, f"dynoctl pg:backups:schedule DATABASE_URL --at '{at} UTC' -a {app} 2>&1")[1]
    assert re.search(rf"^Scheduling automatic daily backups of postgresql-\S+ at {at} UTC"
                     r"\.\.\. done$", out, re.M), out
    timer = f"/etc/systemd/system/dynod-backup-{app}.*.timer"
    assert "Persistent=true" in _sh(m, f"cat {timer}")[1]
    assert _sh(m, f"dynoctl pg:backups:schedules -a {app}")[1] == (
        f"=== Backup Schedules\nDATABASE_URL: daily at {at} UTC\n")

    def scheduled() -> bool:
        found = json.loads(_sh(m, f"dynoctl pg:backups -a {app} --json")[1])
        return any(b["id"] == "a001" and b["status"] == "Verified" and b["scheduled"]
                   for b in found)

    wait_for("the scheduled backup a001, verified", scheduled, timeout=200)
    out = _sh(m, f"dynoctl pg:backups:unschedule -a {app} 2>&1")[1]
    assert "Unscheduling DATABASE_URL daily backups... done" in out, out
    assert _sh(m, f"ls {timer}", ok=False)[0] != 0


def _psql(m: Machine, app: str, sql: str, ok: bool = True) -> tuple[int, str]:
    """``dynoctl pg:psql -c SQL``: psql in a one-off dyno of the app."""
    return _sh(m, f"dynoctl pg:psql -a {app} --no-tty -c {shlex.quote(sql)} 2>&1", ok=ok)


def test_pg_and_redis_tools_through_dynoctl(stack_machine: Machine) -> None:
    """pg:info, pg:psql and redis:cli in one-off dynos, redis:info, and the destructive
    verbs: pg:credentials:rotate (the old URL stops working, a release sets the new
    one), pg:reset (the data is gone), each refused without --confirm."""
    m = stack_machine
    app = "tools"
    _sh(m, f"dynoctl apps:create {app} && mkdir -p /tmp/s/app && "
           "tar -C /tmp/s -czf /tmp/s.tgz ./app && dynoctl slugs:deploy --no-wait "
           f"-a {app} /tmp/s.tgz --process-type 'worker=sleep infinity'")
    _sh(m, f"dynoctl addons:create heroku-postgresql -a {app}")
    _sh(m, f"dynoctl addons:create heroku-redis -a {app}")

    info = _sh(m, f"dynoctl pg:info -a {app}")[1]
    assert info.startswith("=== DATABASE_URL\nPlan:"), info
    assert re.search(r"^Connections: +\d+/20$", info, re.M), info
    assert re.search(r"^Add-on: +postgresql-[a-z]+-\d{5}$", info, re.M), info
    out = _psql(m, app, "CREATE TABLE t (x int); INSERT INTO t VALUES (42); "
                        "SELECT sum(x) FROM t")[1]
    assert "--> Connecting to postgresql-" in out and "\n  42\n(1 row)" in out, out

    redis = _sh(m, f"dynoctl redis:info -a {app}")[1]
    assert re.search(r"^=== redis-[a-z]+-\d{5} \(REDIS_URL\)$", redis, re.M), redis
    assert re.search(r"^Plan: +mini$", redis, re.M), redis
    out = _sh(m, f"dynoctl redis:cli -a {app} --no-tty -c 'SET k v' 2>&1 && "
                 f"dynoctl redis:cli -a {app} --no-tty -c 'GET k' 2>&1")[1]
    assert "Connecting to redis-" in out and "\nv\n" in out, out

    # Rotation: refused without --confirm; then a new release holds the new URL.
    old = _sh(m, f"dynoctl config:get DATABASE_URL -a {app}")[1].strip()
    code, out = _sh(m, f"dynoctl pg:credentials:rotate -a {app} </dev/null 2>&1", ok=False)
    assert code == 1 and f"--confirm {app}" in out, out
    assert _sh(m, f"dynoctl config:get DATABASE_URL -a {app}")[1].strip() == old
    out = _sh(m, f"dynoctl pg:credentials:rotate -a {app} --confirm {app} 2>&1")[1]
    assert "Rotating default on postgresql-" in out, out
    new = _sh(m, f"dynoctl config:get DATABASE_URL -a {app}")[1].strip()
    assert new != old and new.rsplit("@", 1)[1] == old.rsplit("@", 1)[1]
    releases = _sh(m, f"dynoctl releases -a {app}")[1]
    assert "Update DATABASE by heroku-postgresql" in releases, releases
    out = _sh(m, f"dynoctl run -a {app} --no-tty -- 'psql \"{old}\" -Atc \"select 1\"' 2>&1",
              ok=False)[1]
    assert "password authentication failed" in out, out
    out = _psql(m, app, "SELECT sum(x) FROM t")[1]
    assert "\n  42\n(1 row)" in out, out

    # Reset: the data is gone, the database is still there and usable.
    code, out = _sh(m, f"dynoctl pg:reset -a {app} --confirm nope 2>&1", ok=False)
    assert code == 1 and f"Confirmation nope did not match {app}" in out, out
    out = _sh(m, f"dynoctl pg:reset -a {app} --confirm {app} 2>&1")[1]
    assert re.search(r"^Resetting postgresql-[a-z]+-\d{5}\.\.\. done$", out, re.M), out
    code, out = _psql(m, app, "SELECT sum(x) FROM t", ok=False)
    assert code != 0 and 'relation "t" does not exist' in out, out


def test_schedules_and_backups_survive_a_reboot(persistent_machine: Machine) -> None:
    """The timer is enabled in /etc/systemd/system, so the schedule is there after a
    reboot; the backups and their files are too, and still restore."""
    m = persistent_machine
    app = "kept"
    _sh(m, f"dynoctl apps:create {app} && dynoctl addons:create heroku-postgresql -a {app}")
    db = _sh(m, f"dynoctl config:get DATABASE_URL -a {app}")[1].strip().rsplit("/", 1)[-1]
    _as_role(m, db, "CREATE TABLE t (x int); INSERT INTO t SELECT generate_series(1, 5);")
    _sh(m, f"dynoctl pg:backups:capture -a {app}")
    _sh(m, f"dynoctl pg:backups:schedule --at '03:30 Europe/Paris' -a {app}")
    timer = _sh(m, f"basename /etc/systemd/system/dynod-backup-{app}.*.timer")[1].strip()

    m.reboot()

    assert _sh(m, f"systemctl is-enabled {timer}")[1].strip() == "enabled"
    assert _sh(m, f"systemctl is-active {timer}")[1].strip() == "active"
    assert _sh(m, f"dynoctl pg:backups:schedules -a {app}")[1] == (
        "=== Backup Schedules\nDATABASE_URL: daily at 03:30 Europe/Paris\n")
    assert re.search(r"^b001  .*  Verified ", _sh(m, f"dynoctl pg:backups -a {app}")[1], re.M)
    _as_role(m, db, "DELETE FROM t;")
    _sh(m, f"dynoctl pg:backups:restore b001 --confirm {app} -a {app}")
    assert _as_role(m, db, "SELECT count(*) FROM t;").strip() == "5"
