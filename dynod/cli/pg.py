"""dynoctl pg:* (but pg:promote, in addons.py) and redis:* (heroku/cli src/commands/pg,
src/commands/redis; lib/pg/backups.ts for ids, sizes and statuses).

``pg:psql`` and ``redis:cli`` are ``run``: a one-off dyno of the app running ``psql
"$DATABASE_URL"`` or ``redis-cli -u "$REDIS_URL"`` (the stack has both), attached to
this terminal, so they reach the database exactly as the app's dynos do.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import re
import shlex
import sys
from pathlib import Path

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from dynod.cli import client, output
from dynod.cli import run as run_cli
from dynod.cli.client import CliError, call
from dynod.v1 import postgres_pb2, postgres_pb2_grpc

POSTGRES = "heroku-postgresql"
REDIS = "heroku-redis"
BACKUP_ID = re.compile(r"^[ab][0-9]{3,}$")
# Backups run for as long as the database takes to dump and restore once.
LONG = 6 * 3600.0


def stub() -> postgres_pb2_grpc.DatabasesStub:
    return postgres_pb2_grpc.DatabasesStub(client.channel())


def ref(app: str, database: str | None, service: str = POSTGRES) -> postgres_pb2.DatabaseRef:
    return postgres_pb2.DatabaseRef(app=app, database=database or "", service=service)


def filesize(n: int) -> str:
    """heroku/cli's filesize (the ``bytes`` package, two fixed decimals): ``3.14KB``."""
    value = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1024 or unit == "TB":
            return f"{int(value)}{unit}" if unit == "B" else f"{value:.2f}{unit}"
        value /= 1024
    return f"{n}B"  # pragma: no cover


def moment(ts: Timestamp) -> str:
    return output.when(ts).strftime("%Y-%m-%d %H:%M:%S %z")


def status_text(b: postgres_pb2.Backup) -> str:
    """``Verified 2026-05-01 12:00:05 +0000``, ``Failed verification: why``,
    ``Running``."""
    if b.status == "Verified":
        return f"Verified {moment(b.finished_at)}"
    if b.reason:
        return f"{b.status}: {b.reason}"
    return b.status


def confirmed(app: str, given: str | None, message: str) -> str:
    """heroku/cli's ConfirmCommand: --confirm, or the app's name typed at a prompt."""
    if given is not None:
        return given
    if not (os.isatty(sys.stdin.fileno()) and os.isatty(sys.stderr.fileno())):
        return ""  # the daemon says what to do
    for line in message.splitlines():
        output.warn(line)
    print(file=sys.stderr)
    entered = input(f"To proceed, type {app} or re-run this command with --confirm {app}\n> ")
    if entered.strip() != app:
        raise CliError(f"Confirmation did not match {app}. Aborted.")
    return app


# --- pg:info, redis:info -------------------------------------------------------------


def _info(args: argparse.Namespace, service: str) -> int:
    app = client.app_of(args)
    reply = call(stub().Info, postgres_pb2.DatabaseInfoRequest(
        ref=ref(app, args.database, service)), timeout=60)
    if args.json:
        output.print_json(list(reply.databases))
        return 0
    if not reply.databases:
        print(f"{output.app_label(app)} has no {service} databases.")
        return 0
    for i, info in enumerate(reply.databases):
        db = info.database
        if i:
            print()
        names = ", ".join(f"{n}_URL" for n in db.attachments) or db.addon
        output.header(names if service == POSTGRES else f"{db.addon} ({names})")
        pairs = [("Plan", db.plan.split(":", 1)[-1])]
        pairs += [(f.name, f.value) for f in info.fields]
        pairs += [("Created", moment(db.created_at)), ("Add-on", db.addon)]
        if db.owner != app:
            pairs.append(("Billing App", output.app_label(db.owner)))
        output.styled_object(pairs)
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    return _info(args, POSTGRES)


def cmd_redis_info(args: argparse.Namespace) -> int:
    return _info(args, REDIS)


# --- pg:psql, redis:cli: one-off dynos ------------------------------------------------


def _attached(args: argparse.Namespace, service: str, program: str, extra: list[str],
              banner: str) -> int:
    """``run`` of ``program "$<VAR>_URL" EXTRA...`` in a one-off dyno of the app."""
    app = client.app_of(args)
    reply = call(stub().Resolve, postgres_pb2.ResolveDatabaseRequest(
        ref=ref(app, args.database, service)))
    print(banner.format(addon=reply.database.addon, var=reply.config_var), file=sys.stderr)
    command = " ".join([program, f'"${reply.config_var}"', *(shlex.quote(a) for a in extra)])
    run_args = argparse.Namespace(app=app, remote=args.remote, command=[command], env=None,
                                  size=args.size, no_tty=args.no_tty, exit_code=True)
    return run_cli.cmd_run(run_args)


def cmd_psql(args: argparse.Namespace) -> int:
    extra = ["-c", args.command] if args.command else []
    if args.file:
        try:
            extra = ["-c", Path(args.file).read_text()]
        except OSError as exc:
            raise CliError(f"cannot read {args.file}: {exc}") from exc
    return _attached(args, POSTGRES, "psql", extra, "--> Connecting to {addon}")


def cmd_redis_cli(args: argparse.Namespace) -> int:
    extra = shlex.split(args.command) if args.command else []
    return _attached(args, REDIS, "redis-cli -u", extra, "Connecting to {addon} ({var}):")


# --- pg:backups ----------------------------------------------------------------------


def cmd_backups(args: argparse.Namespace) -> int:
    app = client.app_of(args)
    reply = call(stub().ListBackups, postgres_pb2.ListBackupsRequest(app=app))
    if args.json:
        output.print_json(list(reply.backups))
        return 0
    output.header("Backups")
    if not reply.backups:
        print("No backups. Capture one with `dynoctl pg:backups:capture`")
        return 0
    rows = [["ID", "Created at", "Status", "Size", "Database"]]
    for b in reply.backups:
        rows.append([b.id, moment(b.created_at), status_text(b), filesize(b.size),
                     b.database or b.addon])
    rows.insert(1, ["─" * max(len(r[i]) for r in rows) for i in range(5)])
    output.table(rows)
    return 0


def cmd_capture(args: argparse.Namespace) -> int:
    app = client.app_of(args)
    scheduled = bool(args.scheduled)
    if not scheduled:
        db = call(stub().Resolve, postgres_pb2.ResolveDatabaseRequest(
            ref=ref(app, args.database)))
        print(f"Starting backup of {db.database.addon}... done", file=sys.stderr)
        print("\nUse Ctrl-C at any time to stop monitoring progress; the backup will "
              "continue running.\nUse dynoctl pg:backups:info to check progress.\n",
              file=sys.stderr, flush=True)
    reply = call(stub().CaptureBackup, postgres_pb2.CaptureBackupRequest(
        ref=ref(app, args.database), scheduled=scheduled), timeout=LONG)
    b = reply.backup
    if args.json:
        output.print_json(b)
    elif b.status != "Failed":
        print(f"Backing up {b.database or b.addon} to {b.id}... done", file=sys.stderr)
        tables = f"{len(b.tables)} table" + ("" if len(b.tables) == 1 else "s")
        print(f"Verifying {b.id} (restored into a scratch database, {tables} compared)... "
              f"{status_text(b)}", file=sys.stderr)
    if b.status == "Failed":
        raise CliError(f"An error occurred and the backup did not finish.\n\n{b.reason}\n\n"
                       f"Run dynoctl pg:backups:info {b.id} for more details.")
    if b.status != "Verified":
        raise CliError(f"Backup {b.id} was taken but it does not restore: {b.reason}\n"
                       "Do not rely on it; fix the cause and capture another.")
    return 0


def cmd_backup_info(args: argparse.Namespace) -> int:
    app = client.app_of(args)
    reply = call(stub().GetBackup, postgres_pb2.GetBackupRequest(app=app,
                                                                 id=args.backup_id or ""))
    b = reply.backup
    if args.json:
        output.print_json(b)
        return 0
    output.header(f"Backup {b.id}")
    pairs = [("Database", b.database or b.addon), ("Started at", moment(b.created_at)),
             ("Finished at", moment(b.finished_at) if b.HasField("finished_at") else ""),
             ("Status", b.status), ("Type", "Scheduled" if b.scheduled else "Manual"),
             ("Backup Size", filesize(b.size)), ("SHA-256", b.sha256)]
    if b.reason:
        pairs.append(("Reason", b.reason))
    output.styled_object(pairs)
    if b.tables:
        print()
        output.header("Tables (rows at capture, checked in a restore)")
        output.table([[t, str(n)] for t, n in sorted(b.tables.items())])
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    app = client.app_of(args)
    reply = call(stub().VerifyBackup, postgres_pb2.VerifyBackupRequest(
        app=app, id=args.backup_id or ""), timeout=LONG)
    b = reply.backup
    if args.json:
        output.print_json(b)
    else:
        print(f"Verifying {b.id}... {status_text(b)}", file=sys.stderr)
    return 0 if b.status == "Verified" else 1


def cmd_restore(args: argparse.Namespace) -> int:
    app = client.app_of(args)
    # `pg:backups:restore DATABASE_URL --confirm APP`: a database, not a backup id.
    if args.backup and args.database is None and not BACKUP_ID.match(args.backup):
        args.backup, args.database = None, args.backup
    backup = call(stub().GetBackup, postgres_pb2.GetBackupRequest(
        app=app, id=args.backup or "")).backup if args.backup else None
    db = call(stub().Resolve, postgres_pb2.ResolveDatabaseRequest(ref=ref(app, args.database)))
    confirm = confirmed(app, args.confirm, f"WARNING: Destructive Action\n{db.database.addon} "
                        f"will be overwritten\nThis command will affect the app "
                        f"{output.app_label(app)}")
    what = backup.id if backup is not None else "the newest verified backup"
    print(f"Starting restore of {what} to {db.database.addon}... ", end="", file=sys.stderr,
          flush=True)
    try:
        reply = stub().RestoreBackup(postgres_pb2.RestoreBackupRequest(
            ref=ref(app, args.database), id=args.backup or "", confirm=confirm), timeout=LONG)
    except grpc.RpcError as exc:
        print("!", file=sys.stderr)
        raise client.explain(exc) from exc
    print("done", file=sys.stderr)
    print(f"Restoring {reply.backup.id}... done", file=sys.stderr)
    return 0


def _output_name(given: str | None) -> Path:
    """heroku/cli's defaultFilename: latest.dump, else latest.dump.1, .2 ..."""
    if given:
        return Path(given)
    path, i = Path("latest.dump"), 1
    while path.exists():
        path = Path(f"latest.dump.{i}")
        i += 1
    return path


def cmd_download(args: argparse.Namespace) -> int:
    app = client.app_of(args)
    target = _output_name(args.output)
    tmp = target.with_name(f".{target.name}.part")
    print(f"Getting backup from {output.app_label(app)}... ", end="", file=sys.stderr,
          flush=True)
    digest = hashlib.sha256()
    backup = None
    try:
        with tmp.open("wb") as f:
            for chunk in stub().DownloadBackup(postgres_pb2.DownloadBackupRequest(
                    app=app, id=args.backup_id or ""), timeout=LONG):
                if chunk.WhichOneof("what") == "backup":
                    backup = chunk.backup
                    continue
                digest.update(chunk.data)
                f.write(chunk.data)
    except grpc.RpcError as exc:
        print("!", file=sys.stderr)
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise client.explain(exc) from exc
    if backup is None or digest.hexdigest() != backup.sha256:
        tmp.unlink()
        raise CliError("the download does not match the backup's checksum; nothing was "
                       "written. Try again.")
    tmp.replace(target)
    print(f"done, {backup.id}", file=sys.stderr)
    print(f"{target} ({filesize(backup.size)}, sha256 {backup.sha256[:12]})", file=sys.stderr)
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    app = client.app_of(args)
    confirm = confirmed(app, args.confirm, f"WARNING: Destructive Action\nThis command "
                        f"will affect the app {output.app_label(app)}")
    call(stub().DeleteBackup, postgres_pb2.DeleteBackupRequest(app=app, id=args.backup_id,
                                                               confirm=confirm))
    output.action(f"Deleting backup {args.backup_id} on {output.app_label(app)}")
    return 0


# --- schedules -----------------------------------------------------------------------


def cmd_schedule(args: argparse.Namespace) -> int:
    app = client.app_of(args)
    reply = call(stub().ScheduleBackups, postgres_pb2.ScheduleBackupsRequest(
        ref=ref(app, args.database), at=args.at), timeout=60)
    if args.json:
        output.print_json(reply.schedule)
        return 0
    output.action(f"Scheduling automatic daily backups of {reply.database.addon} at "
                  f"{reply.schedule.at}")
    return 0


def cmd_schedules(args: argparse.Namespace) -> int:
    app = client.app_of(args)
    reply = call(stub().ListSchedules, postgres_pb2.ListSchedulesRequest(app=app))
    if args.json:
        output.print_json(list(reply.schedules))
        return 0
    if not reply.schedules:
        output.warn(f"No backup schedules found on {output.app_label(app)}")
        output.warn("Use dynoctl pg:backups:schedule to set one up")
        return 0
    output.header("Backup Schedules")
    for s in reply.schedules:
        print(f"{s.attachment}_URL: daily at {s.at}")
    return 0


def cmd_unschedule(args: argparse.Namespace) -> int:
    app = client.app_of(args)
    reply = call(stub().UnscheduleBackups, postgres_pb2.UnscheduleBackupsRequest(
        ref=ref(app, args.database)), timeout=60)
    output.action(f"Unscheduling {reply.schedule.attachment}_URL daily backups")
    return 0


# --- credentials, reset ----------------------------------------------------------------


def _rotate(args: argparse.Namespace, service: str) -> int:
    app = client.app_of(args)
    db = call(stub().Resolve, postgres_pb2.ResolveDatabaseRequest(
        ref=ref(app, args.database, service)))
    confirm = confirmed(app, args.confirm, "WARNING: Destructive Action\nThe password for "
                        "the default credential will rotate.\nConnections will be reset "
                        "and applications will be restarted.\nThis command will affect the "
                        f"app {output.app_label(app)}")
    reply = call(stub().RotateCredentials, postgres_pb2.RotateCredentialsRequest(
        ref=ref(app, args.database, service), confirm=confirm), timeout=120)
    if args.json:
        output.print_json(reply)
        return 0
    output.action(f"Rotating default on {db.database.addon}")
    for other, version in sorted(reply.releases.items()):
        print(f"{output.app_label(other)}: v{version} sets the new URL", file=sys.stderr)
    return 0


def cmd_rotate(args: argparse.Namespace) -> int:
    return _rotate(args, POSTGRES)


def _reset(args: argparse.Namespace, service: str) -> int:
    app = client.app_of(args)
    db = call(stub().Resolve, postgres_pb2.ResolveDatabaseRequest(
        ref=ref(app, args.database, service)))
    confirm = confirmed(app, args.confirm, f"Destructive action\n{db.database.addon} will "
                        "lose all of its data")
    call(stub().ResetDatabase, postgres_pb2.ResetDatabaseRequest(
        ref=ref(app, args.database, service), confirm=confirm), timeout=120)
    output.action(f"Resetting {db.database.addon}")
    return 0


def cmd_reset(args: argparse.Namespace) -> int:
    return _reset(args, POSTGRES)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser],
             common: argparse.ArgumentParser) -> None:
    def verb(name: str, help_: str, func: object,
             database: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help_)
        if database:
            p.add_argument("database", nargs="?", metavar="DATABASE",
                           help="attachment (DATABASE_URL) or add-on name; default: the "
                                "app's primary")
        p.set_defaults(func=func)
        return p

    verb("pg:info", "show the app's Postgres databases", cmd_info)
    for name, func, service in (("pg:psql", cmd_psql, "psql"),
                                ("redis:cli", cmd_redis_cli, "redis-cli")):
        p = verb(name, f"open {service} on the database from a one-off dyno", func)
        p.add_argument("-c", "--command", help="run this and exit")
        if name == "pg:psql":
            p.add_argument("-f", "--file", help="run the SQL in this file and exit")
        else:
            p.set_defaults(file=None)
        p.add_argument("-s", "--size", help="the one-off dyno's size")
        p.add_argument("--no-tty", action="store_true", help="no pseudo-terminal")
    verb("pg:backups", "list the app's backups and whether each restores", cmd_backups,
         database=False)
    p = verb("pg:backups:capture", "capture a backup and verify it by a restore", cmd_capture)
    p.add_argument("--scheduled", action="store_true", help=argparse.SUPPRESS)
    p = verb("pg:backups:info", "show one backup (default: the newest)", cmd_backup_info,
             database=False)
    p.add_argument("backup_id", nargs="?", metavar="BACKUP")
    p = verb("pg:backups:verify", "restore a backup into a scratch database again and "
             "check it", cmd_verify, database=False)
    p.add_argument("backup_id", nargs="?", metavar="BACKUP")
    p = sub.add_parser("pg:backups:restore", parents=[common],
                       help="replace a database's contents with a verified backup")
    p.add_argument("backup", nargs="?", metavar="BACKUP",
                   help="b001, a001... (default: the newest verified)")
    p.add_argument("database", nargs="?", metavar="DATABASE")
    p.add_argument("--confirm", help="the app's name, to skip the prompt")
    p.set_defaults(func=cmd_restore)
    p = verb("pg:backups:download", "download a backup (pg_dump -Fc) as latest.dump",
             cmd_download, database=False)
    p.add_argument("backup_id", nargs="?", metavar="BACKUP")
    p.add_argument("-o", "--output", help="file to write (default latest.dump)")
    p = verb("pg:backups:delete", "delete a backup", cmd_delete, database=False)
    p.add_argument("backup_id", metavar="BACKUP")
    p.add_argument("--confirm", help="the app's name, to skip the prompt")
    p = verb("pg:backups:schedule", "take a backup every day at a time", cmd_schedule)
    p.add_argument("--at", required=True, help="'HH:MM TZ', e.g. '02:00 Europe/Paris'")
    verb("pg:backups:schedules", "list the daily backup schedules", cmd_schedules,
         database=False)
    verb("pg:backups:unschedule", "stop daily backups of a database", cmd_unschedule)
    p = verb("pg:credentials:rotate", "give the database a new password", cmd_rotate)
    p.add_argument("--confirm", help="the app's name, to skip the prompt")
    p = verb("pg:reset", "delete every table and row of the database", cmd_reset)
    p.add_argument("--confirm", help="the app's name, to skip the prompt")
    verb("redis:info", "show the app's Redis instances", cmd_redis_info)
