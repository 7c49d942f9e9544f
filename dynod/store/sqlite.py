"""The SQLite store: the embedded default backend of :mod:`dynod.store.protocol`.

WAL (readers never block the writer), foreign keys on, FULL sync (a committed change
survives a power cut), one ``BEGIN IMMEDIATE`` transaction per change, so a crash leaves
the state before or after a change, never between. The schema is
:mod:`dynod.store.migrations`. Only the composition root (``dynod.__main__``) and tests
import this module; everyone else types against the protocol.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from types import MappingProxyType

from dynod.errors import Unavailable
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
from dynod.store.migrations import migrate
from dynod.store.protocol import Tx
from dynod.store.sqlite_acm import SqliteAcmTx
from dynod.store.sqlite_users import SqliteUsersTx


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _layers(text: str) -> tuple[str, ...]:
    return tuple(filter(None, text.split(",")))


class SqliteTx(SqliteUsersTx, SqliteAcmTx):
    """:class:`~dynod.store.protocol.Tx` over one SQLite connection inside an open
    transaction; its methods are grouped by the protocol's aggregates."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def _app_id(self, name: str) -> int | None:
        row = self.db.execute("SELECT id FROM apps WHERE name = ?", (name,)).fetchone()
        return None if row is None else int(row[0])

    # apps
    def app(self, name: str) -> App | None:
        row = self.db.execute(
            "SELECT name, owner, created_at FROM apps WHERE name = ?", (name,)
        ).fetchone()
        return None if row is None else App(row[0], row[1], _time(row[2]))

    def apps(self) -> list[App]:
        rows = self.db.execute("SELECT name, owner, created_at FROM apps ORDER BY name")
        return [App(r[0], r[1], _time(r[2])) for r in rows]

    def add_app(self, app: App) -> None:
        uid = int(self.db.execute("SELECT next FROM app_uids").fetchone()[0])
        self.db.execute("UPDATE app_uids SET next = next + 1")
        self.db.execute(
            "INSERT INTO apps (name, owner, created_at, uid) VALUES (?, ?, ?, ?)",
            (app.name, app.owner, app.created_at.isoformat(), uid),
        )

    def remove_app(self, name: str) -> list[str]:
        app_id = self._app_id(name)
        if app_id is None:
            return []
        checksums = [r[0] for r in self.db.execute(
            "SELECT DISTINCT checksum FROM slugs WHERE app_id = ? AND uploaded", (app_id,))]
        self.db.execute("DELETE FROM addon_attachments WHERE app_id = ? OR addon IN"
                        " (SELECT name FROM addons WHERE app_id = ?)", (app_id, app_id))
        self.remove_acm_domains(name)
        for table in ("addon_backup_schedules", "addons", "addon_backups", "releases",
                      "formation", "slugs", "builds", "domains"):
            self.db.execute(f"DELETE FROM {table} WHERE app_id = ?", (app_id,))  # noqa: S608
        self.db.execute("DELETE FROM apps WHERE id = ?", (app_id,))
        return [c for c in checksums if self.db.execute(
            "SELECT 1 FROM slugs WHERE checksum = ? AND uploaded LIMIT 1", (c,)
        ).fetchone() is None]

    # releases
    _RELEASE = ("SELECT r.version, r.description, r.user, r.created_at, r.slug_id, r.config, "
                "r.status, r.failure FROM releases r JOIN apps a ON a.id = r.app_id"
                " WHERE a.name = ?")

    @staticmethod
    def _release(app: str, row: sqlite3.Row | tuple[object, ...]) -> Release:
        return Release(
            app=app, version=int(str(row[0])), description=str(row[1]), user=str(row[2]),
            created_at=_time(str(row[3])), slug_id=None if row[4] is None else str(row[4]),
            config=MappingProxyType(json.loads(str(row[5]))), status=ReleaseStatus(str(row[6])),
            failure=str(row[7]),
        )

    def release(self, app: str, version: int) -> Release | None:
        row = self.db.execute(self._RELEASE + " AND r.version = ?", (app, version)).fetchone()
        return None if row is None else self._release(app, row)

    def latest_release(self, app: str) -> Release | None:
        row = self.db.execute(self._RELEASE + " ORDER BY r.version DESC LIMIT 1", (app,)
                              ).fetchone()
        return None if row is None else self._release(app, row)

    def latest_succeeded_release(self, app: str) -> Release | None:
        row = self.db.execute(self._RELEASE + " AND r.status = 'succeeded'"
                              " ORDER BY r.version DESC LIMIT 1", (app,)).fetchone()
        return None if row is None else self._release(app, row)

    def set_release_status(self, app: str, version: int, status: ReleaseStatus,
                           failure: str = "") -> None:
        self.db.execute(
            "UPDATE releases SET status = ?, failure = ? WHERE version = ? AND app_id = "
            "(SELECT id FROM apps WHERE name = ?)", (str(status), failure, version, app))

    def releases(self, app: str, limit: int | None) -> list[Release]:
        rows = self.db.execute(self._RELEASE + " ORDER BY r.version DESC LIMIT ?",
                               (app, -1 if limit is None else limit))
        return [self._release(app, r) for r in rows]

    def add_release(self, release: Release) -> None:
        self.db.execute(
            "INSERT INTO releases (app_id, version, description, user, created_at, slug_id,"
            " config, status, failure) SELECT id, ?, ?, ?, ?, ?, ?, ?, ? FROM apps"
            " WHERE name = ?",
            (release.version, release.description, release.user,
             release.created_at.isoformat(), release.slug_id,
             json.dumps(dict(release.config), sort_keys=True), str(release.status),
             release.failure, release.app),
        )

    # formation
    def processes(self, app: str) -> list[Process]:
        rows = self.db.execute(
            "SELECT f.type, f.quantity, f.size FROM formation f JOIN apps a ON a.id = f.app_id"
            " WHERE a.name = ? ORDER BY f.type", (app,))
        return [Process(r[0], int(r[1]), r[2]) for r in rows]

    def put_process(self, app: str, process: Process) -> None:
        self.db.execute(
            "INSERT INTO formation (app_id, type, quantity, size) SELECT id, ?, ?, ? FROM apps"
            " WHERE name = ? ON CONFLICT (app_id, type) DO UPDATE SET"
            " quantity = excluded.quantity, size = excluded.size",
            (process.type, process.quantity, process.size, app),
        )

    # slugs
    def slug(self, app: str, slug_id: str) -> Slug | None:
        row = self.db.execute(
            "SELECT s.id, s.checksum, s.size, s.created_at, s.process_types, s.commit_id,"
            " s.uploaded, s.stack, s.layers FROM slugs s JOIN apps a ON a.id = s.app_id"
            " WHERE a.name = ? AND s.id = ?", (app, slug_id)).fetchone()
        if row is None:
            return None
        return Slug(id=row[0], app=app, checksum=row[1], size=int(row[2]),
                    created_at=_time(row[3]),
                    process_types=MappingProxyType(json.loads(row[4])), commit=row[5],
                    uploaded=bool(row[6]), stack=row[7], layers=_layers(row[8]))

    def slug_layers(self, checksum: str) -> tuple[str, ...] | None:
        row = self.db.execute("SELECT layers FROM slugs WHERE checksum = ? AND uploaded"
                              " ORDER BY created_at DESC LIMIT 1", (checksum,)).fetchone()
        return None if row is None else _layers(row[0])

    def put_slug(self, slug: Slug) -> None:
        self.db.execute(
            "INSERT INTO slugs (id, app_id, checksum, size, process_types, commit_id,"
            " created_at, uploaded, stack, layers) SELECT ?, id, ?, ?, ?, ?, ?, ?, ?, ?"
            " FROM apps WHERE name = ?"
            " ON CONFLICT (id) DO UPDATE SET uploaded = excluded.uploaded",
            (slug.id, slug.checksum, slug.size, json.dumps(dict(slug.process_types)),
             slug.commit, slug.created_at.isoformat(), int(slug.uploaded), slug.stack,
             ",".join(slug.layers), slug.app),
        )

    # apps: uid; settings: rollout generation
    def app_uid(self, name: str) -> int | None:
        row = self.db.execute("SELECT uid FROM apps WHERE name = ?", (name,)).fetchone()
        return None if row is None else int(row[0])

    def generation(self, name: str) -> int | None:
        row = self.db.execute("SELECT generation FROM apps WHERE name = ?", (name,)).fetchone()
        return None if row is None else int(row[0])

    def set_generation(self, name: str, generation: int) -> None:
        self.db.execute("UPDATE apps SET generation = ? WHERE name = ?", (generation, name))

    # domains; settings: maintenance mode
    _DOMAIN = ("SELECT d.hostname, a.name, d.created_at FROM domains d "
               "JOIN apps a ON a.id = d.app_id")

    def domain(self, hostname: str) -> Domain | None:
        row = self.db.execute(self._DOMAIN + " WHERE d.hostname = ?", (hostname,)).fetchone()
        return None if row is None else Domain(row[0], row[1], _time(row[2]))

    def domains(self, app: str | None) -> list[Domain]:
        if app is None:
            rows = self.db.execute(self._DOMAIN + " ORDER BY d.hostname")
        else:
            rows = self.db.execute(self._DOMAIN + " WHERE a.name = ? ORDER BY d.hostname",
                                   (app,))
        return [Domain(r[0], r[1], _time(r[2])) for r in rows]

    def add_domain(self, domain: Domain) -> None:
        self.db.execute(
            "INSERT INTO domains (hostname, app_id, created_at) VALUES (?, ?, ?)",
            (domain.hostname, self._app_id(domain.app), domain.created_at.isoformat()),
        )

    def remove_domain(self, hostname: str) -> None:
        for table in ("acm_domains", "acm_certs", "acm_challenges"):
            self.db.execute(f"DELETE FROM {table} WHERE hostname = ?", (hostname,))  # noqa: S608
        self.db.execute("DELETE FROM domains WHERE hostname = ?", (hostname,))

    def maintenance(self, name: str) -> bool | None:
        row = self.db.execute("SELECT maintenance FROM apps WHERE name = ?", (name,)).fetchone()
        return None if row is None else bool(row[0])

    def set_maintenance(self, name: str, on: bool) -> None:
        self.db.execute("UPDATE apps SET maintenance = ? WHERE name = ?", (int(on), name))

    def features(self, name: str) -> set[str]:
        rows = self.db.execute("SELECT f.name FROM app_features f JOIN apps a "
                               "ON a.id = f.app_id WHERE a.name = ?", (name,))
        return {str(r[0]) for r in rows}

    def set_feature(self, name: str, feature: str, on: bool) -> None:
        if on:
            self.db.execute("INSERT OR IGNORE INTO app_features (app_id, name) "
                            "SELECT id, ? FROM apps WHERE name = ?", (feature, name))
        else:
            self.db.execute("DELETE FROM app_features WHERE name = ? AND app_id = "
                            "(SELECT id FROM apps WHERE name = ?)", (feature, name))

    # builds and the app's build settings
    def app_build_settings(self, name: str) -> BuildSettings | None:
        row = self.db.execute("SELECT stack, buildpacks FROM apps WHERE name = ?",
                              (name,)).fetchone()
        return None if row is None else BuildSettings(str(row[0]), tuple(json.loads(row[1])))

    def set_app_build_settings(self, name: str, settings: BuildSettings) -> None:
        self.db.execute("UPDATE apps SET stack = ?, buildpacks = ? WHERE name = ?",
                        (settings.stack, json.dumps(list(settings.buildpacks)), name))

    _BUILD = ("SELECT b.id, b.status, b.user, b.created_at, b.finished_at, b.stack,"
              " b.commit_id, b.buildpacks, b.slug_id, b.release, b.error, b.source_bytes"
              " FROM builds b JOIN apps a ON a.id = b.app_id WHERE a.name = ?")

    @staticmethod
    def _build(app: str, row: tuple[object, ...]) -> Build:
        return Build(
            id=str(row[0]), app=app, status=BuildStatus(str(row[1])), user=str(row[2]),
            created_at=_time(str(row[3])),
            finished_at=None if row[4] is None else _time(str(row[4])),
            stack=str(row[5]), commit=str(row[6]), buildpacks=tuple(json.loads(str(row[7]))),
            slug_id=str(row[8]), release=int(str(row[9])), error=str(row[10]),
            source_bytes=int(str(row[11])),
        )

    def build(self, app: str, build_id: str) -> Build | None:
        row = self.db.execute(self._BUILD + " AND b.id = ?", (app, build_id)).fetchone()
        return None if row is None else self._build(app, row)

    def builds(self, app: str, limit: int | None) -> list[Build]:
        rows = self.db.execute(
            self._BUILD + " ORDER BY b.created_at DESC, b.rowid DESC LIMIT ?",
            (app, -1 if limit is None else limit))
        return [self._build(app, r) for r in rows]

    def put_build(self, build: Build) -> None:
        self.db.execute(
            "INSERT INTO builds (id, app_id, status, user, created_at, finished_at, stack,"
            " commit_id, buildpacks, slug_id, release, error, source_bytes)"
            " SELECT ?, id, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ? FROM apps WHERE name = ?"
            " ON CONFLICT (id) DO UPDATE SET status = excluded.status,"
            " finished_at = excluded.finished_at, buildpacks = excluded.buildpacks,"
            " slug_id = excluded.slug_id, release = excluded.release,"
            " error = excluded.error, source_bytes = excluded.source_bytes",
            (build.id, str(build.status), build.user, build.created_at.isoformat(),
             None if build.finished_at is None else build.finished_at.isoformat(),
             build.stack, build.commit, json.dumps(list(build.buildpacks)), build.slug_id,
             build.release, build.error, build.source_bytes, build.app))

    # keys
    def ssh_keys(self) -> list[Key]:
        rows = self.db.execute("SELECT id, owner, type, blob, comment, fingerprint, created_at"
                               " FROM ssh_keys ORDER BY id")
        return [Key(id=r[0], owner=r[1], type=r[2], blob=r[3], comment=r[4],
                    fingerprint=r[5], created_at=_time(r[6])) for r in rows]

    def add_key(self, key: Key) -> None:
        self.db.execute(
            "INSERT INTO ssh_keys (id, owner, type, blob, comment, fingerprint, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (key.id, key.owner, key.type, key.blob, key.comment, key.fingerprint,
             key.created_at.isoformat()))

    def remove_key(self, key_id: str) -> bool:
        return self.db.execute("DELETE FROM ssh_keys WHERE id = ?", (key_id,)).rowcount > 0

    # log drains
    def drains(self, app: str | None = None) -> list[Drain]:
        sql = ("SELECT a.name, d.token, d.url, d.created_at FROM drains d"
               " JOIN apps a ON a.id = d.app_id")
        args: tuple[str, ...] = ()
        if app is not None:
            sql += " WHERE a.name = ?"
            args = (app,)
        rows = self.db.execute(sql + " ORDER BY a.name, d.created_at, d.token", args)
        return [Drain(str(r[0]), str(r[1]), str(r[2]), _time(str(r[3]))) for r in rows]

    def add_drain(self, drain: Drain) -> None:
        self.db.execute("INSERT INTO drains (token, app_id, url, created_at)"
                        " SELECT ?, id, ?, ? FROM apps WHERE name = ?",
                        (drain.token, drain.url, drain.created_at.isoformat(), drain.app))

    def remove_drain(self, app: str, token: str) -> bool:
        return self.db.execute(
            "DELETE FROM drains WHERE token = ? AND app_id = (SELECT id FROM apps"
            " WHERE name = ?)", (token, app)).rowcount > 0

    # add-ons, their attachments and backups
    _ADDON = ("SELECT x.name, x.service, x.plan, a.name, x.state, x.created_at, x.host,"
              " x.port, x.user, x.password, x.database FROM addons x"
              " JOIN apps a ON a.id = x.app_id")

    @staticmethod
    def _addon(row: tuple[object, ...]) -> Addon:
        return Addon(
            name=str(row[0]), service=str(row[1]), plan=str(row[2]), app=str(row[3]),
            state=AddonState(str(row[4])), created_at=_time(str(row[5])),
            credentials=Credentials(host=str(row[6]), port=int(str(row[7])),
                                    user=str(row[8]), password=str(row[9]),
                                    database=str(row[10])))

    def insert_addon(self, addon: Addon) -> None:
        c = addon.credentials
        self.db.execute(
            "INSERT INTO addons (name, app_id, service, plan, state, created_at, host, port,"
            " user, password, database) SELECT ?, id, ?, ?, ?, ?, ?, ?, ?, ?, ? FROM apps"
            " WHERE name = ?",
            (addon.name, addon.service, addon.plan, str(addon.state),
             addon.created_at.isoformat(), c.host, c.port, c.user, c.password, c.database,
             addon.app))

    def update_addon(self, addon: Addon) -> None:
        c = addon.credentials
        self.db.execute(
            "UPDATE addons SET app_id = (SELECT id FROM apps WHERE name = ?), service = ?,"
            " plan = ?, state = ?, host = ?, port = ?, user = ?, password = ?, database = ?"
            " WHERE name = ? AND EXISTS (SELECT 1 FROM apps WHERE name = ?)",
            (addon.app, addon.service, addon.plan, str(addon.state), c.host, c.port, c.user,
             c.password, c.database, addon.name, addon.app))

    def delete_addon(self, name: str) -> None:
        self.db.execute("DELETE FROM addon_attachments WHERE addon = ?", (name,))
        self.db.execute("DELETE FROM addon_backup_schedules WHERE addon = ?", (name,))
        self.db.execute("DELETE FROM addons WHERE name = ?", (name,))

    def get_addon(self, name: str) -> Addon | None:
        row = self.db.execute(self._ADDON + " WHERE x.name = ?", (name,)).fetchone()
        return None if row is None else self._addon(row)

    def list_addons(self, app: str | None = None) -> list[Addon]:
        if app is None:
            rows = self.db.execute(self._ADDON + " ORDER BY x.name")
        else:
            rows = self.db.execute(self._ADDON + " WHERE a.name = ? ORDER BY x.name", (app,))
        return [self._addon(r) for r in rows]

    def insert_attachment(self, att: Attachment) -> None:
        self.db.execute(
            "INSERT INTO addon_attachments (addon, app_id, name, created_at)"
            " SELECT ?, id, ?, ? FROM apps WHERE name = ?",
            (att.addon, att.name, att.created_at.isoformat(), att.app))

    def delete_attachment(self, addon: str, app: str) -> None:
        self.db.execute(
            "DELETE FROM addon_attachments WHERE addon = ? AND app_id ="
            " (SELECT id FROM apps WHERE name = ?)", (addon, app))

    def list_attachments(self, app: str | None = None,
                         addon: str | None = None) -> list[Attachment]:
        query = ("SELECT t.addon, a.name, t.name, t.created_at FROM addon_attachments t"
                 " JOIN apps a ON a.id = t.app_id WHERE (? IS NULL OR a.name = ?)"
                 " AND (? IS NULL OR t.addon = ?) ORDER BY a.name, t.created_at, t.name")
        rows = self.db.execute(query, (app, app, addon, addon))
        return [Attachment(addon=r[0], app=r[1], name=r[2], created_at=_time(r[3]))
                for r in rows]

    _BACKUP = ("SELECT b.id, b.addon, a.name, b.created_at, b.finished_at, b.size, b.sha256,"
               " b.status, b.reason, b.tables, b.scheduled FROM addon_backups b"
               " JOIN apps a ON a.id = b.app_id WHERE a.name = ?")

    @staticmethod
    def _backup(row: tuple[object, ...]) -> Backup:
        return Backup(
            id=str(row[0]), addon=str(row[1]), app=str(row[2]), created_at=_time(str(row[3])),
            finished_at=None if row[4] is None else _time(str(row[4])), size=int(str(row[5])),
            sha256=str(row[6]), status=BackupStatus(str(row[7])), reason=str(row[8]),
            tables=MappingProxyType({str(k): int(v) for k, v in
                                     json.loads(str(row[9])).items()}),
            scheduled=bool(row[10]))

    def _backup_values(self, b: Backup) -> tuple[object, ...]:
        return (b.addon, b.created_at.isoformat(),
                None if b.finished_at is None else b.finished_at.isoformat(), b.size,
                b.sha256, str(b.status), b.reason, json.dumps(dict(b.tables), sort_keys=True),
                int(b.scheduled))

    def insert_backup(self, backup: Backup) -> None:
        self.db.execute(
            "INSERT INTO addon_backups (app_id, id, addon, created_at, finished_at, size,"
            " sha256, status, reason, tables, scheduled)"
            " SELECT id, ?, ?, ?, ?, ?, ?, ?, ?, ?, ? FROM apps WHERE name = ?",
            (backup.id, *self._backup_values(backup), backup.app))

    def update_backup(self, backup: Backup) -> None:
        self.db.execute(
            "UPDATE addon_backups SET addon = ?, created_at = ?, finished_at = ?, size = ?,"
            " sha256 = ?, status = ?, reason = ?, tables = ?, scheduled = ?"
            " WHERE id = ? AND app_id = (SELECT id FROM apps WHERE name = ?)",
            (*self._backup_values(backup), backup.id, backup.app))

    def get_backup(self, app: str, backup_id: str) -> Backup | None:
        row = self.db.execute(self._BACKUP + " AND b.id = ?", (app, backup_id)).fetchone()
        return None if row is None else self._backup(row)

    def list_backups(self, app: str) -> list[Backup]:
        rows = self.db.execute(self._BACKUP + " ORDER BY b.created_at, b.id", (app,))
        return [self._backup(r) for r in rows]

    def delete_backup(self, app: str, backup_id: str) -> None:
        self.db.execute(
            "DELETE FROM addon_backups WHERE id = ? AND app_id ="
            " (SELECT id FROM apps WHERE name = ?)", (backup_id, app))

    def put_backup_schedule(self, schedule: BackupScheduleRecord) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO addon_backup_schedules (app_id, addon, attachment, at)"
            " SELECT id, ?, ?, ? FROM apps WHERE name = ?",
            (schedule.addon, schedule.attachment, schedule.at, schedule.app))

    def delete_backup_schedule(self, app: str, addon: str) -> bool:
        return self.db.execute(
            "DELETE FROM addon_backup_schedules WHERE addon = ? AND app_id ="
            " (SELECT id FROM apps WHERE name = ?)", (addon, app)).rowcount > 0

    def list_backup_schedules(self, app: str | None = None) -> list[BackupScheduleRecord]:
        rows = self.db.execute(
            "SELECT a.name, s.addon, s.attachment, s.at FROM addon_backup_schedules s"
            " JOIN apps a ON a.id = s.app_id WHERE ? IS NULL OR a.name = ?"
            " ORDER BY a.name, s.addon", (app, app))
        return [BackupScheduleRecord(str(r[0]), str(r[1]), str(r[2]), str(r[3]))
                for r in rows]


class SqliteStore:
    """:class:`Store` on a SQLite file; one connection per thread.

    Writers also take an in-process lock, so the daemon's own threads queue in order
    instead of spinning in SQLite's busy handler; ``BEGIN IMMEDIATE`` still guards
    against another process (e.g. a `dynod` started twice).
    """

    def __init__(self, path: Path, *, timeout: float = 30.0) -> None:
        self.path = path
        self.timeout = timeout
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self.schema_version = migrate(self._connection())

    @classmethod
    def open(cls, path: Path) -> SqliteStore:
        """Open (creating and migrating if needed) the store at ``path``.

        Raises Unavailable if the file cannot be opened, FailedPrecondition if its schema
        is newer than this code.
        """
        try:
            path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            return cls(path)
        except (sqlite3.Error, OSError) as exc:
            raise Unavailable(f"state database {path}: {exc}; check the disk and its "
                              "permissions") from exc

    def _connection(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            # isolation_level=None: no implicit transactions; we issue BEGIN ourselves.
            db = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None,
                                 check_same_thread=False)
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = FULL")
            db.execute("PRAGMA foreign_keys = ON")
            with contextlib.suppress(OSError):
                self.path.chmod(0o600)
            self._local.db = db
            with self._all_lock:
                self._all.append(db)
        return db

    @contextlib.contextmanager
    def _transaction(self, begin: str) -> Iterator[Tx]:
        db = self._connection()
        db.execute(begin)
        try:
            yield SqliteTx(db)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    @contextlib.contextmanager
    def read(self) -> Iterator[Tx]:
        with self._transaction("BEGIN DEFERRED") as tx:
            yield tx

    @contextlib.contextmanager
    def write(self) -> Iterator[Tx]:
        with self._write_lock, self._transaction("BEGIN IMMEDIATE") as tx:
            yield tx

    def close(self) -> None:
        with self._all_lock:
            for db in self._all:
                db.close()
            self._all.clear()
        self._local = threading.local()
