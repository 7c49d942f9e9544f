"""The durable desired state: the only truth that survives a restart or a reboot.

The domain modules (apps, config, releases, formation, slugs) see two small protocols:
:class:`Store` hands out transactions, :class:`Tx` reads and writes whole records as
frozen dataclasses. Nothing outside this module writes SQL, so a different backend (etcd,
when dynod spans machines) implements these two protocols and nothing else changes.

The SQLite backend: WAL (readers never block the writer), foreign keys on, FULL sync
(a committed change survives a power cut), one ``BEGIN IMMEDIATE`` transaction per
change, so a crash leaves the state before or after a change, never between. The schema
evolves through the ordered :data:`MIGRATIONS`; ``schema_version`` records how many ran.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Protocol

from dynod.errors import FailedPrecondition, Unavailable
from dynod.model.apps import App
from dynod.model.domains import Domain
from dynod.model.formation import Process
from dynod.model.releases import Release, ReleaseStatus
from dynod.model.slugs import Slug


class Tx(Protocol):
    """One transaction. Records are keyed by app name; reads see this transaction's
    own writes. Methods never check domain rules; the domain modules do."""

    def app(self, name: str) -> App | None: ...
    def apps(self) -> list[App]: ...
    def add_app(self, app: App) -> None: ...
    def remove_app(self, name: str) -> list[str]:
        """Delete the app and all it owns; return checksums no slug uses any more."""
        ...

    def release(self, app: str, version: int) -> Release | None: ...
    def latest_release(self, app: str) -> Release | None: ...
    def latest_succeeded_release(self, app: str) -> Release | None: ...
    def set_release_status(self, app: str, version: int, status: ReleaseStatus) -> None: ...
    def releases(self, app: str, limit: int | None) -> list[Release]:
        """Newest first."""
        ...

    def add_release(self, release: Release) -> None: ...

    def processes(self, app: str) -> list[Process]: ...
    def put_process(self, app: str, process: Process) -> None: ...

    def slug(self, app: str, slug_id: str) -> Slug | None: ...
    def put_slug(self, slug: Slug) -> None: ...
    # dynos: the app's own uid/gid and its rollout generation
    def app_uid(self, name: str) -> int | None: ...
    def generation(self, name: str) -> int | None: ...
    def set_generation(self, name: str, generation: int) -> None: ...
    # router: custom domains and maintenance mode
    def domain(self, hostname: str) -> Domain | None: ...
    def domains(self, app: str | None) -> list[Domain]:
        """By host name; every app's if ``app`` is None."""
        ...

    def add_domain(self, domain: Domain) -> None: ...
    def remove_domain(self, hostname: str) -> None: ...
    def maintenance(self, name: str) -> bool | None: ...
    def set_maintenance(self, name: str, on: bool) -> None: ...
    # builds and keys (JSON documents owned by dynod.build.pipeline and dynod.control.keys)
    def app_build_settings(self, name: str) -> tuple[str, list[str]] | None: ...
    def set_app_build_settings(self, name: str, stack: str, buildpacks: list[str]) -> None: ...
    def build_doc(self, app: str, build_id: str) -> str | None: ...
    def build_docs(self, app: str, limit: int | None) -> list[str]: ...
    def put_build_doc(self, app: str, build_id: str, created_at: str, doc: str) -> None: ...
    def key_docs(self) -> list[str]: ...
    def put_key_doc(self, key_id: str, owner: str, fingerprint: str, doc: str) -> None: ...
    def remove_key_doc(self, key_id: str) -> bool: ...


class Store(Protocol):
    def read(self) -> AbstractContextManager[Tx]:
        """A consistent snapshot for reading."""
        ...

    def write(self) -> AbstractContextManager[Tx]:
        """Exclusive: committed if the block returns, rolled back if it raises."""
        ...

    def close(self) -> None: ...


Migration = Callable[[sqlite3.Connection], None]


def _v1(db: sqlite3.Connection) -> None:
    for statement in (
        """CREATE TABLE apps (
            id         INTEGER PRIMARY KEY,
            name       TEXT NOT NULL UNIQUE,
            owner      TEXT NOT NULL,
            created_at TEXT NOT NULL
        )""",
        """CREATE TABLE slugs (
            id            TEXT PRIMARY KEY,
            app_id        INTEGER NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
            checksum      TEXT NOT NULL,
            size          INTEGER NOT NULL,
            process_types TEXT NOT NULL,
            commit_id     TEXT NOT NULL,
            created_at    TEXT NOT NULL,
            uploaded      INTEGER NOT NULL DEFAULT 0
        )""",
        "CREATE INDEX slugs_app ON slugs(app_id)",
        "CREATE INDEX slugs_checksum ON slugs(checksum)",
        """CREATE TABLE releases (
            app_id      INTEGER NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
            version     INTEGER NOT NULL CHECK (version >= 1),
            description TEXT NOT NULL,
            user        TEXT NOT NULL,
            created_at  TEXT NOT NULL,
            slug_id     TEXT REFERENCES slugs(id) DEFERRABLE INITIALLY DEFERRED,
            config      TEXT NOT NULL,
            status      TEXT NOT NULL,
            PRIMARY KEY (app_id, version)
        ) WITHOUT ROWID""",
        """CREATE TABLE formation (
            app_id   INTEGER NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
            type     TEXT NOT NULL,
            quantity INTEGER NOT NULL CHECK (quantity >= 0),
            size     TEXT NOT NULL,
            PRIMARY KEY (app_id, type)
        ) WITHOUT ROWID""",
    ):
        db.execute(statement)


# Apps get their own unprivileged uid (= gid), never reused after a delete, so a new app
# can never own an old app's files; and a rollout generation (unit names carry it, so
# old and new dynos of one app can run side by side during a rollout).
FIRST_APP_UID = 70000


def _v2(db: sqlite3.Connection) -> None:
    db.execute("ALTER TABLE apps ADD COLUMN uid INTEGER")
    db.execute("ALTER TABLE apps ADD COLUMN generation INTEGER NOT NULL DEFAULT 1")
    db.execute("UPDATE apps SET uid = ? + id - 1", (FIRST_APP_UID,))
    db.execute("CREATE UNIQUE INDEX apps_uid ON apps(uid)")
    db.execute("CREATE TABLE app_uids (next INTEGER NOT NULL)")
    db.execute("INSERT INTO app_uids (next) SELECT COALESCE(MAX(uid) + 1, ?) FROM apps",
               (FIRST_APP_UID,))


def _v3(db: sqlite3.Connection) -> None:
    # Builds (issue 4): an app's stack and buildpack list, its builds, and the ssh keys
    # that may push (git user dynod).
    db.execute("ALTER TABLE apps ADD COLUMN stack TEXT NOT NULL DEFAULT 'debian-13'")
    db.execute("ALTER TABLE apps ADD COLUMN buildpacks TEXT NOT NULL DEFAULT '[]'")
    db.execute("""CREATE TABLE builds (
        id         TEXT PRIMARY KEY,
        app_id     INTEGER NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
        doc        TEXT NOT NULL,
        created_at TEXT NOT NULL
    )""")
    db.execute("CREATE INDEX builds_app ON builds(app_id, created_at)")
    db.execute("""CREATE TABLE ssh_keys (
        id          TEXT PRIMARY KEY,
        owner       TEXT NOT NULL,
        fingerprint TEXT NOT NULL UNIQUE,
        doc         TEXT NOT NULL
    )""")


def _v4(db: sqlite3.Connection) -> None:
    # Router (issue 6): maintenance mode and custom domains.
    db.execute("ALTER TABLE apps ADD COLUMN maintenance INTEGER NOT NULL DEFAULT 0")
    db.execute("""CREATE TABLE domains (
        hostname   TEXT PRIMARY KEY,
        app_id     INTEGER NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
        created_at TEXT NOT NULL
    )""")


# Append only: never edit a migration that has shipped; add the next one.
MIGRATIONS: list[Migration] = [_v1, _v2, _v3, _v4]


def migrate(db: sqlite3.Connection, migrations: list[Migration] = MIGRATIONS) -> int:
    """Run the migrations not yet applied, each in its own transaction; return the
    schema version. Raises FailedPrecondition for a database newer than this code."""
    db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    while True:
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute("SELECT version FROM schema_version").fetchone()
            if row is None:
                db.execute("INSERT INTO schema_version (version) VALUES (0)")
                version = 0
            else:
                version = int(row[0])
            if version > len(migrations):
                raise FailedPrecondition(
                    f"state database has schema version {version}, newer than this dynod "
                    f"knows ({len(migrations)}); upgrade dynod"
                )
            if version == len(migrations):
                db.execute("COMMIT")
                return version
            migrations[version](db)
            db.execute("UPDATE schema_version SET version = ?", (version + 1,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text)


class SqliteTx:
    """:class:`Tx` over one SQLite connection inside an open transaction."""

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
        for table in ("releases", "formation", "slugs", "builds", "domains"):
            self.db.execute(f"DELETE FROM {table} WHERE app_id = ?", (app_id,))  # noqa: S608
        self.db.execute("DELETE FROM apps WHERE id = ?", (app_id,))
        return [c for c in checksums if self.db.execute(
            "SELECT 1 FROM slugs WHERE checksum = ? AND uploaded LIMIT 1", (c,)
        ).fetchone() is None]

    # releases
    _RELEASE = ("SELECT r.version, r.description, r.user, r.created_at, r.slug_id, r.config, "
                "r.status FROM releases r JOIN apps a ON a.id = r.app_id WHERE a.name = ?")

    @staticmethod
    def _release(app: str, row: sqlite3.Row | tuple[object, ...]) -> Release:
        return Release(
            app=app, version=int(str(row[0])), description=str(row[1]), user=str(row[2]),
            created_at=_time(str(row[3])), slug_id=None if row[4] is None else str(row[4]),
            config=MappingProxyType(json.loads(str(row[5]))), status=ReleaseStatus(str(row[6])),
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

    def set_release_status(self, app: str, version: int, status: ReleaseStatus) -> None:
        self.db.execute(
            "UPDATE releases SET status = ? WHERE version = ? AND app_id = "
            "(SELECT id FROM apps WHERE name = ?)", (str(status), version, app))

    def releases(self, app: str, limit: int | None) -> list[Release]:
        rows = self.db.execute(self._RELEASE + " ORDER BY r.version DESC LIMIT ?",
                               (app, -1 if limit is None else limit))
        return [self._release(app, r) for r in rows]

    def add_release(self, release: Release) -> None:
        self.db.execute(
            "INSERT INTO releases (app_id, version, description, user, created_at, slug_id,"
            " config, status) SELECT id, ?, ?, ?, ?, ?, ?, ? FROM apps WHERE name = ?",
            (release.version, release.description, release.user,
             release.created_at.isoformat(), release.slug_id,
             json.dumps(dict(release.config), sort_keys=True), str(release.status),
             release.app),
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
            " s.uploaded FROM slugs s JOIN apps a ON a.id = s.app_id"
            " WHERE a.name = ? AND s.id = ?", (app, slug_id)).fetchone()
        if row is None:
            return None
        return Slug(id=row[0], app=app, checksum=row[1], size=int(row[2]),
                    created_at=_time(row[3]),
                    process_types=MappingProxyType(json.loads(row[4])), commit=row[5],
                    uploaded=bool(row[6]))

    def put_slug(self, slug: Slug) -> None:
        self.db.execute(
            "INSERT INTO slugs (id, app_id, checksum, size, process_types, commit_id,"
            " created_at, uploaded) SELECT ?, id, ?, ?, ?, ?, ?, ? FROM apps WHERE name = ?"
            " ON CONFLICT (id) DO UPDATE SET uploaded = excluded.uploaded",
            (slug.id, slug.checksum, slug.size, json.dumps(dict(slug.process_types)),
             slug.commit, slug.created_at.isoformat(), int(slug.uploaded), slug.app),
        )


    # dynos
    def app_uid(self, name: str) -> int | None:
        row = self.db.execute("SELECT uid FROM apps WHERE name = ?", (name,)).fetchone()
        return None if row is None else int(row[0])

    def generation(self, name: str) -> int | None:
        row = self.db.execute("SELECT generation FROM apps WHERE name = ?", (name,)).fetchone()
        return None if row is None else int(row[0])

    def set_generation(self, name: str, generation: int) -> None:
        self.db.execute("UPDATE apps SET generation = ? WHERE name = ?", (generation, name))

    # router
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
        self.db.execute("DELETE FROM domains WHERE hostname = ?", (hostname,))

    def maintenance(self, name: str) -> bool | None:
        row = self.db.execute("SELECT maintenance FROM apps WHERE name = ?", (name,)).fetchone()
        return None if row is None else bool(row[0])

    def set_maintenance(self, name: str, on: bool) -> None:
        self.db.execute("UPDATE apps SET maintenance = ? WHERE name = ?", (int(on), name))

    # builds (issue 4): records are JSON documents the builds and keys modules own.
    def app_build_settings(self, name: str) -> tuple[str, list[str]] | None:
        """The app's (stack, buildpack list)."""
        row = self.db.execute("SELECT stack, buildpacks FROM apps WHERE name = ?",
                              (name,)).fetchone()
        return None if row is None else (str(row[0]), list(json.loads(row[1])))

    def set_app_build_settings(self, name: str, stack: str, buildpacks: list[str]) -> None:
        self.db.execute("UPDATE apps SET stack = ?, buildpacks = ? WHERE name = ?",
                        (stack, json.dumps(buildpacks), name))

    def build_doc(self, app: str, build_id: str) -> str | None:
        row = self.db.execute(
            "SELECT b.doc FROM builds b JOIN apps a ON a.id = b.app_id"
            " WHERE a.name = ? AND b.id = ?", (app, build_id)).fetchone()
        return None if row is None else str(row[0])

    def build_docs(self, app: str, limit: int | None) -> list[str]:
        """Newest first."""
        rows = self.db.execute(
            "SELECT b.doc FROM builds b JOIN apps a ON a.id = b.app_id WHERE a.name = ?"
            " ORDER BY b.created_at DESC, b.rowid DESC LIMIT ?",
            (app, -1 if limit is None else limit))
        return [str(r[0]) for r in rows]

    def put_build_doc(self, app: str, build_id: str, created_at: str, doc: str) -> None:
        self.db.execute(
            "INSERT INTO builds (id, app_id, doc, created_at) SELECT ?, id, ?, ? FROM apps"
            " WHERE name = ? ON CONFLICT (id) DO UPDATE SET doc = excluded.doc",
            (build_id, doc, created_at, app))

    def key_docs(self) -> list[str]:
        return [str(r[0]) for r in self.db.execute("SELECT doc FROM ssh_keys ORDER BY id")]

    def put_key_doc(self, key_id: str, owner: str, fingerprint: str, doc: str) -> None:
        self.db.execute("INSERT INTO ssh_keys (id, owner, fingerprint, doc) VALUES (?, ?, ?, ?)",
                        (key_id, owner, fingerprint, doc))

    def remove_key_doc(self, key_id: str) -> bool:
        return self.db.execute("DELETE FROM ssh_keys WHERE id = ?", (key_id,)).rowcount > 0


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
