"""Backups of Postgres add-ons that are known to restore.

Heroku's ``pg:backups`` are ``pg_dump -Fc`` files; Dokku's users keep finding theirs
empty or unrestorable (dokku-postgres #274, #243). Here every backup is proven:

- **capture**: a ``REPEATABLE READ`` transaction exports its snapshot
  (``pg_export_snapshot()``), counts the rows of every user table in it, and
  ``pg_dump -Fc --no-owner --no-acl --snapshot=ID`` dumps that same snapshot while the
  transaction stays open, so the counts are exactly what the file holds. The file is
  written beside its final name and renamed into place (never half a file under a
  backup's name), then checksummed (sha256).
- **verify** (right after every capture, and on demand): the file is checksummed again,
  restored with ``pg_restore --exit-on-error`` into a scratch database, and its tables
  and row counts are compared with the capture's; the scratch database is dropped.
  The verdict is ``Verified`` or ``Failed verification`` with the reason
  (``table orders: 41 rows restored, 42 captured``).
- **restore**: a file whose checksum no longer matches is refused before the database
  is touched. Otherwise it is restored into a fresh database, checked like a
  verification, and swapped in under the add-on's name (two renames in one
  transaction). Why not ``pg_restore --clean`` in place: ``--clean`` drops only the
  objects the dump has (a table created after the capture would stay), and a failure
  half way leaves the database half restored; a swap leaves the old database as it was
  until the checked copy replaces it, whole. The fresh database gets the old one's
  owner, grants, connection limit and settings, and its objects belong to the add-on's
  role (``--no-owner --role=ROLE``), as after a capture on Heroku.

The engine runs the cluster's own tools as its superuser through a :class:`PgCluster`
(``dynod.addons.postgres`` gives the daemon's; the tests start their own cluster), and
keeps files under ``<root>/<app>/<id>.dump`` (ids are per app, as Heroku's are).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from dynod.errors import FailedPrecondition, NotFound, Unavailable
from dynod.model.addons import Backup, BackupStatus
from dynod.system import processes

_SEP = "\x1f"
_END = "__dynod_end__"
_CHUNK = 1 << 20

# Every user table (not a catalog, not an extension's own) and its row count, counted
# with one statement so that, inside the capture's transaction, all counts come from
# the one snapshot pg_dump also dumps. Partitioned parents have no rows of their own
# (their partitions are counted); ONLY, because pg_dump dumps each table's own rows.
COUNT_SQL = r"""
SELECT CASE WHEN n.nspname = 'public' THEN c.relname ELSE n.nspname || '.' || c.relname END,
       (xpath('/row/n/text()', query_to_xml(
           format('SELECT count(*) AS n FROM ONLY %I.%I', n.nspname, c.relname),
           false, true, '')))[1]::text
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1;
"""


class PgCluster(Protocol):
    """How to run the cluster's client tools as its superuser."""

    def argv(self, tool: str, database: str) -> list[str]:
        """argv running ``tool`` (``psql``, ``pg_dump``, ``pg_restore``) connected to
        ``database`` as the cluster's superuser; the caller appends the tool's options."""
        ...


@dataclass(frozen=True)
class LocalCluster:
    """A cluster on this machine reached over its unix socket; the tools run as
    ``os_user`` (peer authentication) when that is set."""

    bindir: Path
    socket_dir: Path
    port: int
    superuser: str = "postgres"
    os_user: str | None = "postgres"

    def argv(self, tool: str, database: str) -> list[str]:
        prefix = ["runuser", "-u", self.os_user, "--"] if self.os_user else []
        return [*prefix, str(self.bindir / tool), "-h", str(self.socket_dir),
                "-p", str(self.port), "-U", self.superuser, "-d", database]


# --- pure parts ---------------------------------------------------------------------


def compare_tables(captured: Mapping[str, int], restored: Mapping[str, int]) -> list[str]:
    """Why a restore differs from its capture, one reason per table (empty: the same)."""
    problems = []
    for table in sorted(set(captured) | set(restored)):
        want, got = captured.get(table), restored.get(table)
        if got is None:
            problems.append(f"table {table}: not restored ({want} rows captured)")
        elif want is None:
            problems.append(f"table {table}: restored but not captured")
        elif want != got:
            problems.append(f"table {table}: {got} rows restored, {want} captured")
    return problems


def first_error(stderr: str) -> str:
    """The line of a tool's stderr that says what went wrong (``pg_restore: error:
    could not read input file: end of file``), else its last line."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in lines:
        if "error:" in line or "FATAL:" in line or "ERROR:" in line:
            return line
    return lines[-1] if lines else "no output"


def verdict(problems: Sequence[str]) -> tuple[BackupStatus, str]:
    if problems:
        return BackupStatus.FAILED_VERIFICATION, "; ".join(problems)
    return BackupStatus.VERIFIED, ""


def parse_counts(lines: Iterable[str]) -> dict[str, int]:
    out = {}
    for line in lines:
        if not line:
            continue
        table, _, count = line.partition(_SEP)
        out[table] = int(count)
    return out


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# --- the engine ---------------------------------------------------------------------


@dataclass(frozen=True)
class Capture:
    path: Path
    size: int
    sha256: str
    tables: Mapping[str, int]


class BackupEngine:
    """Capture, verify, restore, stream and delete backup files (see the module)."""

    def __init__(self, cluster: PgCluster, root: Path) -> None:
        self.cluster = cluster
        self.root = root

    # -- files

    def path(self, app: str, backup_id: str) -> Path:
        return self.root / app / f"{backup_id}.dump"

    def chunks(self, app: str, backup_id: str) -> Iterator[bytes]:
        """The file, 1 MiB at a time. Raises NotFound."""
        try:
            f = self.path(app, backup_id).open("rb")
        except FileNotFoundError:
            raise NotFound(f"backup {backup_id} has no file any more "
                           f"({self.path(app, backup_id)})") from None
        with f:
            while chunk := f.read(_CHUNK):
                yield chunk

    def delete(self, app: str, backup_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(app, backup_id).unlink()

    def remove_app(self, app: str) -> None:
        """Every backup file of ``app`` (the app is gone)."""
        folder = self.root / app
        for f in folder.glob("*.dump*"):
            with contextlib.suppress(FileNotFoundError):
                f.unlink()
        with contextlib.suppress(OSError):
            folder.rmdir()

    # -- SQL

    def _psql(self, database: str) -> list[str]:
        return [*self.cluster.argv("psql", database), "-X", "-q", "-A", "-t",
                "-F", _SEP, "-v", "ON_ERROR_STOP=1"]

    def sql(self, database: str, script: str, timeout: float = 300.0) -> list[str]:
        """Run ``script`` (one implicit transaction per statement) in ``database``; its
        output lines. Raises Unavailable with the server's error."""
        try:
            out = processes.output(self._psql(database), input=script, timeout=timeout)
        except processes.CommandFailed as exc:
            raise Unavailable(f"PostgreSQL: {first_error(exc.stderr)}") from exc
        return [line for line in out.splitlines() if line]

    def counts(self, database: str) -> dict[str, int]:
        return parse_counts(self.sql(database, COUNT_SQL))

    def _drop(self, database: str) -> None:
        with contextlib.suppress(Unavailable):
            self.sql("postgres", f"DROP DATABASE IF EXISTS {quote_ident(database)} "
                                 "WITH (FORCE);")

    def cleanup(self) -> list[str]:
        """Drop the scratch and half-made databases a verification or restore left when
        dynod stopped in the middle (never the old database a restore had already
        swapped out: that one ends in ``_old_``, and is the data before the restore).
        Returns their names."""
        found = self.sql("postgres", "SELECT datname FROM pg_database WHERE datname ~ "
                                     "'^dynod_verify_[ab][0-9]+_[0-9a-f]{8}$' OR datname ~ "
                                     "'_restore_[0-9a-f]{8}$';")
        for name in found:
            self._drop(name)
        return found

    # -- capture and verify

    def capture(self, app: str, backup_id: str, database: str,
                timeout: float = 6 * 3600.0) -> Capture:
        """Dump ``database`` to the backup's file with the row counts of its snapshot.
        Raises Unavailable (the server, pg_dump), leaving no file behind."""
        final = self.path(app, backup_id)
        final.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        partial = final.with_suffix(".dump.partial")
        try:
            with processes.Session(self._psql(database)) as session:
                session.send("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;\n"
                             f"SELECT pg_export_snapshot();\n\\echo {_END}\n")
                snapshot = session.read_until(_END)[-1].strip()
                session.send(f"{COUNT_SQL}\\echo {_END}\n")
                tables = parse_counts(session.read_until(_END))
                processes.run_files(
                    [*self.cluster.argv("pg_dump", database), "-Fc", "--no-owner",
                     "--no-acl", f"--snapshot={snapshot}"],
                    stdout_path=str(partial), timeout=timeout)
                session.send(f"COMMIT;\n\\echo {_END}\n")
                session.read_until(_END)
            with partial.open("rb") as f:
                os.fsync(f.fileno())
            partial.replace(final)
        except processes.CommandFailed as exc:
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()
            raise Unavailable(f"capture of {database} failed: "
                              f"{first_error(exc.stderr or str(exc))}") from exc
        return Capture(final, final.stat().st_size, sha256_of(final), tables)

    def _restore_into(self, path: Path, database: str, role: str | None) -> str | None:
        """pg_restore ``path`` into the empty ``database``; the error, or None."""
        argv = [*self.cluster.argv("pg_restore", database), "--no-owner", "--no-acl",
                "--exit-on-error"]
        if role is not None:
            argv.append(f"--role={role}")
        try:
            processes.run_files(argv, stdin_path=str(path), timeout=6 * 3600.0)
        except processes.CommandFailed as exc:
            return first_error(exc.stderr or str(exc))
        return None

    def verify(self, app: str, backup_id: str, sha256: str,
               tables: Mapping[str, int]) -> tuple[BackupStatus, str]:
        """Restore the backup into a scratch database and compare it with the capture's
        ``tables``: (Verified, "") or (Failed verification, why). Raises Unavailable
        when the server cannot be reached (that says nothing about the backup)."""
        path = self.path(app, backup_id)
        if not path.exists():
            return BackupStatus.FAILED_VERIFICATION, f"the file {path} is missing"
        problems = []
        actual = sha256_of(path)
        if actual != sha256:
            problems.append(f"checksum mismatch: the file changed after capture (sha256 "
                            f"{actual[:12]}, captured {sha256[:12]})")
        scratch = f"dynod_verify_{backup_id}_{secrets.token_hex(4)}"
        self.sql("postgres", f"CREATE DATABASE {quote_ident(scratch)} TEMPLATE template0;")
        try:
            error = self._restore_into(path, scratch, None)
            if error is not None:
                problems.append(error)
            else:
                problems += compare_tables(tables, self.counts(scratch))
        finally:
            self._drop(scratch)
        return verdict(problems)

    # -- restore

    def restore(self, backup: Backup, database: str, role: str) -> None:
        """Replace ``database`` with the backup's contents, owned by ``role``.

        Raises FailedPrecondition when the file is missing or corrupt (checked before
        the database is touched) or the restored copy does not match the capture (then
        the database is unchanged too), Unavailable when the server fails.
        """
        path = self.path(backup.app, backup.id)
        if not path.exists():
            raise FailedPrecondition(
                f"backup {backup.id} has no file any more ({path}); the database was not "
                "touched. Restore another one (see `dynoctl pg:backups`)")
        actual = sha256_of(path)
        if actual != backup.sha256:
            raise FailedPrecondition(
                f"backup {backup.id} is corrupt: its file no longer matches the checksum "
                f"taken at capture (sha256 {actual[:12]}, captured {backup.sha256[:12]}); "
                "the database was not touched. Restore another backup (see `dynoctl "
                "pg:backups`)")
        fresh = f"{database[:40]}_restore_{secrets.token_hex(4)}"
        self.sql("postgres", f"CREATE DATABASE {quote_ident(fresh)} OWNER "
                             f"{quote_ident(role)} TEMPLATE template0;")
        try:
            self._copy_database_properties(database, fresh)
            error = self._restore_into(path, fresh, role)
            if error is not None:
                raise FailedPrecondition(f"restore of backup {backup.id} failed: {error}; "
                                         "the database was not touched")
            problems = compare_tables(backup.tables, self.counts(fresh))
            if problems:
                raise FailedPrecondition(
                    f"restore of backup {backup.id} does not match its capture: "
                    f"{'; '.join(problems)}; the database was not touched")
            self._swap(database, fresh)
        except BaseException:
            self._drop(fresh)
            raise

    def _copy_database_properties(self, source: str, target: str) -> None:
        """Give ``target`` the grants, connection limit and settings of ``source``."""
        src, dst = quote_literal(source), quote_literal(target)
        statements = self.sql("postgres", f"""
SELECT format('ALTER DATABASE %I CONNECTION LIMIT %s', {dst}, datconnlimit)
  FROM pg_database WHERE datname = {src} AND datconnlimit <> -1
UNION ALL
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', {dst})
  FROM pg_database WHERE datname = {src} AND datacl IS NOT NULL
UNION ALL
SELECT format('GRANT %s ON DATABASE %I TO %s', a.privilege_type, {dst},
              CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(r.rolname) END)
  FROM pg_database d CROSS JOIN LATERAL aclexplode(d.datacl) a
  LEFT JOIN pg_roles r ON r.oid = a.grantee WHERE d.datname = {src}
UNION ALL
SELECT format('ALTER DATABASE %I SET %s TO %L', {dst}, split_part(s, '=', 1),
              substr(s, length(split_part(s, '=', 1)) + 2))
  FROM pg_db_role_setting rs JOIN pg_database d ON d.oid = rs.setdatabase
  CROSS JOIN LATERAL unnest(rs.setconfig) s
  WHERE d.datname = {src} AND rs.setrole = 0;
""")  # noqa: S608 - names quoted by quote_literal
        if statements:
            self.sql("postgres", "".join(f"{s};\n" for s in statements))

    def _swap(self, database: str, fresh: str) -> None:
        """Put ``fresh`` in place of ``database``: new sessions are held off, open ones
        ended, both renames commit together, the old database is dropped."""
        old = f"{database[:40]}_old_{secrets.token_hex(4)}"
        db = quote_ident(database)
        self.sql("postgres", f"ALTER DATABASE {db} WITH ALLOW_CONNECTIONS false;\n"
                             "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                             f"WHERE datname = {quote_literal(database)};")
        try:
            self.sql("postgres", f"BEGIN;\nALTER DATABASE {db} RENAME TO {quote_ident(old)};\n"
                                 f"ALTER DATABASE {quote_ident(fresh)} RENAME TO {db};\n"
                                 "COMMIT;")
        except Unavailable:
            with contextlib.suppress(Unavailable):
                self.sql("postgres", f"ALTER DATABASE {db} WITH ALLOW_CONNECTIONS true;")
            raise
        self._drop(old)
