"""The SQLite store's schema, as the ordered list of migrations that make it.

``schema_version`` records how many ran; each runs in its own transaction, so a crash
leaves the schema at one version or the next. Append only: never edit a migration that
has shipped, add the next one (an installed dynod upgrades its database in place).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable

from dynod.errors import FailedPrecondition

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


def _v5(db: sqlite3.Connection) -> None:
    # Builds and ssh keys as typed rows (issue 13): until v4 each was a JSON document
    # owned by the module that wrote it. Existing rows are converted, so an upgraded
    # install keeps its builds and keys; rowids are kept, they order builds made in the
    # same instant.
    db.execute("""CREATE TABLE builds_v5 (
        id           TEXT PRIMARY KEY,
        app_id       INTEGER NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
        status       TEXT NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
        user         TEXT NOT NULL,
        created_at   TEXT NOT NULL,
        finished_at  TEXT,
        stack        TEXT NOT NULL,
        commit_id    TEXT NOT NULL DEFAULT '',
        buildpacks   TEXT NOT NULL DEFAULT '[]',
        slug_id      TEXT NOT NULL DEFAULT '',
        release      INTEGER NOT NULL DEFAULT 0,
        error        TEXT NOT NULL DEFAULT '',
        source_bytes INTEGER NOT NULL DEFAULT 0
    )""")
    rows = db.execute("SELECT rowid, id, app_id, doc, created_at FROM builds ORDER BY rowid")
    for rowid, build_id, app_id, text, created_at in rows.fetchall():
        doc = json.loads(text)
        db.execute(
            "INSERT INTO builds_v5 (rowid, id, app_id, status, user, created_at, finished_at,"
            " stack, commit_id, buildpacks, slug_id, release, error, source_bytes)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (rowid, build_id, app_id, doc["status"], doc["user"], created_at,
             doc.get("finished_at"), doc["stack"], doc.get("commit", ""),
             json.dumps(list(doc.get("buildpacks", ()))), doc.get("slug_id", ""),
             int(doc.get("release", 0)), doc.get("error", ""),
             int(doc.get("source_bytes", 0))))
    db.execute("DROP TABLE builds")
    db.execute("ALTER TABLE builds_v5 RENAME TO builds")
    db.execute("CREATE INDEX builds_app ON builds(app_id, created_at)")
    db.execute("""CREATE TABLE ssh_keys_v5 (
        id          TEXT PRIMARY KEY,
        owner       TEXT NOT NULL,
        type        TEXT NOT NULL,
        blob        TEXT NOT NULL,
        comment     TEXT NOT NULL DEFAULT '',
        fingerprint TEXT NOT NULL UNIQUE,
        created_at  TEXT NOT NULL
    )""")
    for (text,) in db.execute("SELECT doc FROM ssh_keys ORDER BY id").fetchall():
        doc = json.loads(text)
        db.execute(
            "INSERT INTO ssh_keys_v5 (id, owner, type, blob, comment, fingerprint, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (doc["id"], doc["owner"], doc["type"], doc["blob"], doc.get("comment", ""),
             doc["fingerprint"], doc["created_at"]))
    db.execute("DROP TABLE ssh_keys")
    db.execute("ALTER TABLE ssh_keys_v5 RENAME TO ssh_keys")


def _v6(db: sqlite3.Connection) -> None:
    # Add-ons (issue 15): an add-on is owned by one app and has a globally unique name;
    # it is attached to apps under names unique per app (DATABASE -> DATABASE_URL);
    # Postgres backups are numbered per app (b001) and record how they verified.
    db.execute("""CREATE TABLE addons (
        name       TEXT PRIMARY KEY,
        app_id     INTEGER NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
        service    TEXT NOT NULL,
        plan       TEXT NOT NULL,
        state      TEXT NOT NULL,
        created_at TEXT NOT NULL,
        host       TEXT NOT NULL,
        port       INTEGER NOT NULL,
        user       TEXT NOT NULL,
        password   TEXT NOT NULL,
        database   TEXT NOT NULL
    )""")
    db.execute("CREATE INDEX addons_app ON addons(app_id)")
    db.execute("""CREATE TABLE addon_attachments (
        addon      TEXT NOT NULL REFERENCES addons(name) ON DELETE CASCADE,
        app_id     INTEGER NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
        name       TEXT NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (addon, app_id),
        UNIQUE (app_id, name)
    )""")
    db.execute("""CREATE TABLE addon_backups (
        app_id      INTEGER NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
        id          TEXT NOT NULL,
        addon       TEXT NOT NULL,
        created_at  TEXT NOT NULL,
        finished_at TEXT,
        size        INTEGER NOT NULL DEFAULT 0,
        sha256      TEXT NOT NULL DEFAULT '',
        status      TEXT NOT NULL,
        reason      TEXT NOT NULL DEFAULT '',
        tables      TEXT NOT NULL DEFAULT '{}',
        scheduled   INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (app_id, id)
    ) WITHOUT ROWID""")


def _v7(db: sqlite3.Connection) -> None:
    # Backup schedules are desired state like the rest: the store holds them, and the
    # systemd timers that fire them are made from it (at start, too).
    db.execute("""CREATE TABLE addon_backup_schedules (
        app_id     INTEGER NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
        addon      TEXT NOT NULL REFERENCES addons(name) ON DELETE CASCADE,
        attachment TEXT NOT NULL,
        at         TEXT NOT NULL,
        PRIMARY KEY (app_id, addon)
    ) WITHOUT ROWID""")


def _v8(db: sqlite3.Connection) -> None:
    # A slug runs on the stack it was built on (issue 14: a venv made with forky's
    # python3.14 does not run on trixie). Until now every dyno ran on debian-13; a slug
    # made by a build records that build's stack, one uploaded through the API its
    # app's stack, and failing both the default it has run on.
    db.execute("ALTER TABLE slugs ADD COLUMN stack TEXT NOT NULL DEFAULT 'debian-13'")
    db.execute("""UPDATE slugs SET stack = COALESCE(
        (SELECT b.stack FROM builds b WHERE b.slug_id = slugs.id LIMIT 1),
        (SELECT a.stack FROM apps a WHERE a.id = slugs.app_id),
        'debian-13')""")



def _v9(db: sqlite3.Connection) -> None:
    # Slugs name the stack's language layers their dynos run with. Slugs made before
    # layers were built on a stack that had every runtime: they get every layer.
    db.execute("ALTER TABLE slugs ADD COLUMN layers TEXT NOT NULL DEFAULT ''")
    db.execute("UPDATE slugs SET layers = 'ruby,jvm,php,go'")


def _v10(db: sqlite3.Connection) -> None:
    # Automated Certificate Management (issue 16): on or off per app (desired state), and
    # per custom domain what ACME last said (its status, the error, the certificate's
    # validity, the back-off), so a restart neither forgets a failure nor re-orders.
    db.execute("ALTER TABLE apps ADD COLUMN acm INTEGER NOT NULL DEFAULT 0")
    db.execute("""CREATE TABLE acm_domains (
        hostname     TEXT PRIMARY KEY REFERENCES domains(hostname) ON DELETE CASCADE,
        status       TEXT NOT NULL,
        reason       TEXT NOT NULL DEFAULT '',
        updated_at   TEXT NOT NULL,
        not_before   TEXT,
        not_after    TEXT,
        failures     INTEGER NOT NULL DEFAULT 0,
        next_attempt TEXT
    ) WITHOUT ROWID""")


def _v11(db: sqlite3.Connection) -> None:
    # App features (features:enable): a row per feature an app has on.
    db.execute("""CREATE TABLE app_features (
        app_id INTEGER NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
        name   TEXT NOT NULL,
        PRIMARY KEY (app_id, name)
    ) WITHOUT ROWID""")


def _v12(db: sqlite3.Connection) -> None:
    # Users who sign in over TCP (issue 18): their password's scrypt hash, their API
    # tokens' SHA-256 (never a token itself), and the apps they collaborate on (the
    # owner stays apps.owner). A user's tokens go with the user.
    db.execute("""CREATE TABLE users (
        email         TEXT PRIMARY KEY,
        password_hash TEXT NOT NULL,
        created_at    TEXT NOT NULL
    ) WITHOUT ROWID""")
    db.execute("""CREATE TABLE tokens (
        id          TEXT PRIMARY KEY,
        email       TEXT NOT NULL REFERENCES users(email) ON DELETE CASCADE,
        hash        TEXT NOT NULL UNIQUE,
        description TEXT NOT NULL DEFAULT '',
        created_at  TEXT NOT NULL,
        expires_at  TEXT
    ) WITHOUT ROWID""")
    db.execute("""CREATE TABLE collaborators (
        app_id     INTEGER NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
        email      TEXT NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (app_id, email)
    ) WITHOUT ROWID""")


def _v13(db: sqlite3.Connection) -> None:
    # Log drains (drains:add): where an app's stream is also sent. The position each
    # drain has reached in the journal is runtime state, kept beside the shipper.
    db.execute("""CREATE TABLE drains (
        token      TEXT PRIMARY KEY,
        app_id     INTEGER NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
        url        TEXT NOT NULL,
        created_at TEXT NOT NULL,
        UNIQUE (app_id, url)
    )""")


def _v14(db: sqlite3.Connection) -> None:
    # Why a release's rollout failed (its web dynos' cause: R10, an exit, a start
    # error such as ENOSPC), for the deploy's summary and `releases:info`.
    db.execute("ALTER TABLE releases ADD COLUMN failure TEXT NOT NULL DEFAULT ''")


def _v15(db: sqlite3.Connection) -> None:
    # ACM in a cluster (issue 19): the certificate ACM issued for a domain, which every
    # machine's router serves, and the http-01 challenges of the orders in flight, which
    # every machine's router answers. Both go with their domain.
    db.execute("""CREATE TABLE acm_certs (
        hostname TEXT PRIMARY KEY REFERENCES domains(hostname) ON DELETE CASCADE,
        bundle   TEXT NOT NULL
    ) WITHOUT ROWID""")
    db.execute("""CREATE TABLE acm_challenges (
        hostname          TEXT NOT NULL REFERENCES domains(hostname) ON DELETE CASCADE,
        token             TEXT NOT NULL,
        key_authorization TEXT NOT NULL,
        PRIMARY KEY (hostname, token)
    ) WITHOUT ROWID""")


# Append only: never edit a migration that has shipped; add the next one.
MIGRATIONS: list[Migration] = [_v1, _v2, _v3, _v4, _v5, _v6, _v7, _v8, _v9, _v10,
                               _v11, _v12, _v13, _v14, _v15]


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
