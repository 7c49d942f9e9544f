"""The use cases behind ``pg:*`` and ``redis:*``: database info, backups (captured,
scheduled, verified, restored, downloaded, deleted), credential rotation and reset.

Heroku (heroku/cli ``pg:backups``): captured backups are ``b001``, ``b002``..., scheduled
ones ``a001``...; ``pg:backups:restore b001 DATABASE_URL --confirm APP``. dynod adds
what Heroku does not show: every backup is restored into a scratch database right after
it is taken and compared with the source at capture time, so ``pg:backups`` says
``Verified`` or ``Failed verification`` with the reason, and a failed verification is an
``app[api]`` line.

The backup files, the servers and the schedule timers are given by the composition root
as the protocols below (``dynod.addons.backups``, ``dynod.addons.manager``,
``dynod.addons.schedule`` implement them); the records are the store's
(:class:`~dynod.store.protocol.AddonsTx`). A backup is recorded ``Running`` before its
dump starts, so ``pg:backups`` shows it in progress, and its id is taken in that write
transaction, so two captures never share one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Protocol

from dynod.control import addons as addons_control
from dynod.control import releases
from dynod.errors import DynodError, FailedPrecondition, InvalidArgument, NotFound
from dynod.model.addons import (
    POSTGRES,
    REDIS,
    Addon,
    AddonServices,
    Backup,
    BackupScheduleRecord,
    BackupStatus,
)
from dynod.model.events import AddonsChanged, BackupFailed, EventBus
from dynod.model.releases import Release
from dynod.store import reads
from dynod.store.protocol import Store, Tx

log = logging.getLogger(__name__)

SERVICE_LABEL = {POSTGRES: "heroku-postgresql", REDIS: "heroku-redis"}
DEFAULT_ATTACHMENT = {POSTGRES: "DATABASE", REDIS: "REDIS"}
MANUAL_KEEP = {"essential": 2, "standard": 5, "premium": 10}
SCHEDULED_KEEP = 7


class CaptureResult(Protocol):
    @property
    def size(self) -> int: ...
    @property
    def sha256(self) -> str: ...
    @property
    def tables(self) -> Mapping[str, int]: ...


class BackupFiles(Protocol):
    """The backup engine (``dynod.addons.backups.BackupEngine``)."""

    def capture(self, app: str, backup_id: str, database: str) -> CaptureResult: ...
    def verify(self, app: str, backup_id: str, sha256: str,
               tables: Mapping[str, int]) -> tuple[BackupStatus, str]: ...
    def restore(self, backup: Backup, database: str, role: str) -> None: ...
    def chunks(self, app: str, backup_id: str) -> Iterator[bytes]: ...
    def delete(self, app: str, backup_id: str) -> None: ...
    def remove_app(self, app: str) -> None: ...
    def cleanup(self) -> list[str]: ...


class Schedule(Protocol):
    @property
    def app(self) -> str: ...
    @property
    def addon(self) -> str: ...
    @property
    def attachment(self) -> str: ...
    @property
    def at(self) -> str: ...
    @property
    def next_run(self) -> str: ...


@dataclass(frozen=True)
class ScheduleView:
    """A recorded schedule whose timer systemd does not list (yet)."""

    app: str
    addon: str
    attachment: str
    at: str
    next_run: str


class BackupSchedules(Protocol):
    """Daily backup timers (``dynod.addons.schedule.Scheduler``)."""

    def schedule(self, app: str, addon: str, attachment: str, at: str) -> Schedule: ...
    def unschedule(self, app: str, addon: str) -> bool: ...
    def schedules(self, app: str | None = None) -> Sequence[Schedule]: ...
    def remove_app(self, app: str, addons: Sequence[str] | None = None) -> None: ...


@dataclass(frozen=True)
class Database:
    """An add-on as one app sees it: the add-on and the app's attachment names of it."""

    addon: Addon
    attachments: tuple[str, ...]

    @property
    def name(self) -> str:
        """The attachment name Heroku shows (``DATABASE``), else the add-on's name."""
        return self.attachments[0] if self.attachments else self.addon.name


# --- pure parts ---------------------------------------------------------------------


def next_backup_id(existing: Sequence[str], scheduled: bool) -> str:
    """``b001``, ``b002``... for captured backups, ``a001``... for scheduled ones."""
    prefix = "a" if scheduled else "b"
    numbers = [int(i[1:]) for i in existing if i[:1] == prefix and i[1:].isdigit()]
    return f"{prefix}{max(numbers, default=0) + 1:03d}"


def manual_keep(plan: str) -> int:
    """Manual backups a plan keeps (Heroku: Essential 2, Standard 5, Premium 10)."""
    return MANUAL_KEEP.get(plan.split("-", 1)[0], MANUAL_KEEP["essential"])


def expired(backups: Sequence[Backup], plan: str) -> list[Backup]:
    """What retention removes from one database's backups: beyond the plan's count of
    manual ones and beyond 7 scheduled ones (7 daily), oldest first. Running ones are
    never counted or removed, and neither is the newest Verified backup of a kind (a
    run of failed backups never pushes out the last good one)."""
    out: list[Backup] = []
    for scheduled, keep in ((False, manual_keep(plan)), (True, SCHEDULED_KEEP)):
        kind = sorted((b for b in backups if b.scheduled == scheduled and b.status not in
                       (BackupStatus.RUNNING, BackupStatus.VERIFYING)),
                      key=lambda b: (b.created_at, b.id))
        verified = [b for b in kind if b.status is BackupStatus.VERIFIED]
        last_good = verified[-1] if verified else None
        extra = len(kind) - keep
        for b in kind:
            if extra <= 0:
                break
            if b is last_good:
                continue
            out.append(b)
            extra -= 1
    return out


def check_confirm(app: str, confirm: str, what: str) -> None:
    """heroku/cli's ConfirmCommand. Raises FailedPrecondition (no --confirm) or
    InvalidArgument (another name)."""
    if not confirm:
        raise FailedPrecondition(
            f"Destructive Action: {what}. This command will affect the app ⬢ {app}; to "
            f"proceed, re-run this command with --confirm {app}")
    if confirm != app:
        raise InvalidArgument(f"Confirmation {confirm} did not match {app}. Aborted. "
                              f"(re-run with --confirm {app})")


# --- the use cases ------------------------------------------------------------------


class Databases:
    """pg:* and redis:* for the API. ``services`` and ``files`` may be None in a daemon
    that runs no add-on servers (then the verbs say so)."""

    def __init__(self, store: Store, events: EventBus, services: AddonServices | None,
                 files: BackupFiles | None, schedules: BackupSchedules | None) -> None:
        self.store = store
        self.events = events
        self.services = services
        self.files = files
        self.schedules_ = schedules

    # -- lookups

    def _resolve(self, tx: Tx, app: str, ref: str, service: str) -> Database:
        reads.require_app(tx, app)
        mine = [a for a in tx.list_attachments(app=app)]
        if not ref:
            ref = DEFAULT_ATTACHMENT[service]
            named = [a for a in mine if a.name == ref]
            if not named:
                of_service = [a for a in mine
                              if (x := tx.get_addon(a.addon)) and x.service == service]
                if not of_service:
                    raise NotFound(
                        f"⬢ {app} has no {SERVICE_LABEL[service]} databases; add one with "
                        f"`dynoctl addons:create {SERVICE_LABEL[service]} -a {app}`")
                ref = of_service[0].name
        addon = addons_control.resolve(tx, ref, app)
        if addon.service != service:
            raise InvalidArgument(
                f"{ref} is a {SERVICE_LABEL[addon.service]} add-on ({addon.name}), not "
                f"{SERVICE_LABEL[service]}; see `dynoctl addons -a {app}`")
        names = tuple(a.name for a in mine if a.addon == addon.name)
        if not names and addon.app != app:
            raise NotFound(f"{addon.name} is not attached to ⬢ {app}; attach it with "
                           f"`dynoctl addons:attach {addon.name} -a {app}`")
        return Database(addon, names)

    def database(self, app: str, ref: str, service: str = POSTGRES) -> Database:
        """The app's database ``ref`` (an attachment name such as ``DATABASE_URL``, an
        add-on name, or "" for the default one). Raises NotFound, InvalidArgument."""
        with self.store.read() as tx:
            return self._resolve(tx, app, ref, service)

    def databases(self, app: str, service: str) -> list[Database]:
        """Every add-on of ``service`` attached to ``app``, the default one first."""
        with self.store.read() as tx:
            reads.require_app(tx, app)
            names: dict[str, list[str]] = {}
            for att in tx.list_attachments(app=app):
                names.setdefault(att.addon, []).append(att.name)
            found = [Database(a, tuple(names[n])) for n in names
                     if (a := tx.get_addon(n)) is not None and a.service == service]
        return sorted(found, key=lambda d: (DEFAULT_ATTACHMENT[service] not in d.attachments,
                                            d.name))

    def info(self, app: str, ref: str, service: str) -> list[tuple[Database, Mapping[str, str]]]:
        """``pg:info`` / ``redis:info``: each database (or just ``ref``) with what its
        server says. Raises NotFound, FailedPrecondition, Unavailable."""
        dbs = [self.database(app, ref, service)] if ref else self.databases(app, service)
        return [(db, self._services().info(db.addon.name, service)) for db in dbs]

    def _services(self) -> AddonServices:
        if self.services is None:
            raise FailedPrecondition("this daemon runs no add-on servers; start dynod with "
                                     "its add-on services")
        return self.services

    def _files(self) -> BackupFiles:
        if self.files is None:
            raise FailedPrecondition("this daemon keeps no backups (no PostgreSQL cluster); "
                                     "install postgresql and restart dynod")
        return self.files

    # -- backups

    def capture(self, app: str, ref: str, user: str, scheduled: bool = False) -> Backup:
        """Capture and verify a backup of the app's database ``ref``; the finished
        record (``Failed`` when the dump failed: its reason says why). Retention then
        removes the oldest beyond the plan's count. Raises NotFound, FailedPrecondition."""
        files = self._files()
        with self.store.write() as tx:
            db = self._resolve(tx, app, ref, POSTGRES)
            backup = Backup(
                id=next_backup_id([b.id for b in tx.list_backups(app)], scheduled),
                addon=db.addon.name, app=app, created_at=datetime.now(UTC),
                finished_at=None, size=0, sha256="", status=BackupStatus.RUNNING,
                reason="", tables={}, scheduled=scheduled)
            tx.insert_backup(backup)
        try:
            taken = files.capture(app, backup.id, db.addon.credentials.database)
        except DynodError as exc:
            return self._finish(replace(backup, status=BackupStatus.FAILED,
                                        reason=exc.message), db.name, user)
        except OSError as exc:  # the backups' disk (full, gone): never left Running
            return self._finish(replace(backup, status=BackupStatus.FAILED,
                                        reason=f"cannot write the backup file: {exc}"),
                                db.name, user)
        backup = replace(backup, size=taken.size, sha256=taken.sha256,
                         tables=dict(taken.tables), status=BackupStatus.VERIFYING)
        with self.store.write() as tx:
            tx.update_backup(backup)
        backup = self._verified(backup)
        done = self._finish(backup, db.name, user)
        self._retain(app, db.addon)
        return done

    def _verified(self, backup: Backup) -> Backup:
        try:
            status, reason = self._files().verify(backup.app, backup.id, backup.sha256,
                                                  backup.tables)
        except DynodError as exc:
            status, reason = BackupStatus.FAILED_VERIFICATION, f"could not verify: {exc.message}"
        return replace(backup, status=status, reason=reason)

    def _finish(self, backup: Backup, label: str, user: str) -> Backup:
        """Record the verdict; a failure is an app[api] line naming the database by
        ``label`` (its attachment name)."""
        backup = replace(backup, finished_at=datetime.now(UTC))
        with self.store.write() as tx:
            tx.update_backup(backup)
        if backup.status is BackupStatus.FAILED_VERIFICATION:
            self._line(backup, user, f"Backup {backup.id} of {label} failed "
                                     f"verification: {backup.reason}")
        elif backup.status is BackupStatus.FAILED:
            self._line(backup, user, f"Backup {backup.id} of {label} failed: {backup.reason}")
        return backup

    def _line(self, backup: Backup, user: str, line: str) -> None:
        # The audit writes it as an app[api] line; no dyno or access changes.
        log.warning("app %s: %s", backup.app, line)
        self.events.publish(BackupFailed(backup.app, f"{line} by user {user}"))

    def _retain(self, app: str, addon: Addon) -> None:
        with self.store.write() as tx:
            mine = [b for b in tx.list_backups(app) if b.addon == addon.name]
            gone = expired(mine, addon.plan)
            for b in gone:
                tx.delete_backup(app, b.id)
        for b in gone:
            self._files().delete(app, b.id)

    def backups(self, app: str) -> list[Backup]:
        """Newest first. Raises NotFound."""
        with self.store.read() as tx:
            reads.require_app(tx, app)
            return sorted(tx.list_backups(app), key=lambda b: (b.created_at, b.id),
                          reverse=True)

    def backup(self, app: str, backup_id: str) -> Backup:
        """``backup_id``, or the newest backup for "". Raises NotFound."""
        with self.store.read() as tx:
            reads.require_app(tx, app)
            if not backup_id:
                found = sorted(tx.list_backups(app), key=lambda b: (b.created_at, b.id))
                if not found:
                    raise NotFound(f"No backups on ⬢ {app}. Capture one with "
                                   f"`dynoctl pg:backups:capture -a {app}`")
                return found[-1]
            backup = tx.get_backup(app, backup_id)
        if backup is None:
            raise NotFound(f"Backup {backup_id} not found for ⬢ {app}; list them with "
                           f"`dynoctl pg:backups -a {app}`")
        return backup

    def _restorable(self, app: str, backup_id: str) -> Backup:
        if backup_id:
            backup = self.backup(app, backup_id)
            if backup.status is not BackupStatus.VERIFIED:
                why = f": {backup.reason}" if backup.reason else ""
                raise FailedPrecondition(
                    f"Backup {backup.id} for ⬢ {app} did not complete successfully "
                    f"({backup.status}{why}); restore a Verified one (see `dynoctl "
                    f"pg:backups -a {app}`)")
            return backup
        verified = [b for b in self.backups(app) if b.status is BackupStatus.VERIFIED]
        if not verified:
            raise NotFound(f"No verified backups for ⬢ {app}. Capture one with "
                           f"`dynoctl pg:backups:capture -a {app}`")
        return verified[0]

    def verify(self, app: str, backup_id: str, user: str) -> Backup:
        """Verify an existing backup again (its file may have changed since it was
        taken). Raises NotFound, FailedPrecondition (still running, or failed at
        capture: nothing to verify)."""
        backup = self.backup(app, backup_id)
        if backup.status in (BackupStatus.RUNNING, BackupStatus.VERIFYING):
            raise FailedPrecondition(f"backup {backup.id} is still {backup.status.lower()}; "
                                     "wait for it to finish")
        if backup.status is BackupStatus.FAILED:
            raise FailedPrecondition(f"backup {backup.id} failed at capture ({backup.reason}); "
                                     "there is nothing to verify")
        with self.store.read() as tx:
            names = [a.name for a in tx.list_attachments(app=app) if a.addon == backup.addon]
        return self._finish(self._verified(backup), names[0] if names else backup.addon, user)

    def restore(self, app: str, backup_id: str, ref: str, confirm: str,
                user: str) -> tuple[Backup, Database]:
        """Restore a Verified backup (the newest for "") into the app's database ``ref``
        (its default for ""), after ``--confirm APP``. Raises NotFound (backup,
        database), FailedPrecondition (confirmation, a backup that is not Verified, a
        file that no longer matches its checksum: the database is then untouched),
        InvalidArgument (wrong confirmation)."""
        backup = self._restorable(app, backup_id)
        db = self.database(app, ref, POSTGRES)
        check_confirm(app, confirm, f"{db.addon.name} will be overwritten with backup "
                                    f"{backup.id}")
        self._files().restore(backup, db.addon.credentials.database,
                              db.addon.credentials.user)
        log.info("app %s: restored %s into %s by %s", app, backup.id, db.addon.name, user)
        return backup, db

    def delete(self, app: str, backup_id: str, confirm: str) -> Backup:
        backup = self.backup(app, backup_id)
        check_confirm(app, confirm, f"backup {backup.id} will be deleted")
        with self.store.write() as tx:
            tx.delete_backup(app, backup.id)
        self._files().delete(app, backup.id)
        return backup

    def download(self, app: str, backup_id: str) -> tuple[Backup, Iterator[bytes]]:
        """A Verified backup's file (the newest for ""), in chunks."""
        backup = self._restorable(app, backup_id)
        return backup, self._files().chunks(app, backup.id)

    # -- schedules

    def _scheduler(self) -> BackupSchedules:
        if self.schedules_ is None:
            raise FailedPrecondition("this daemon schedules no backups")
        return self.schedules_

    def schedule(self, app: str, ref: str, at: str) -> tuple[Schedule, Database]:
        """The store records the schedule; its timer is made from the record (the timer
        validates ``at`` first: InvalidArgument, nothing recorded)."""
        db = self.database(app, ref, POSTGRES)
        made = self._scheduler().schedule(app, db.addon.name, db.name, at)
        try:
            with self.store.write() as tx:
                reads.require_app(tx, app)
                tx.put_backup_schedule(BackupScheduleRecord(app, db.addon.name, db.name,
                                                            made.at))
        except BaseException:
            self._scheduler().unschedule(app, db.addon.name)
            raise
        return made, db

    def unschedule(self, app: str, ref: str) -> Schedule:
        """Raises NotFound (no schedule), InvalidArgument (several and no ``ref``)."""
        mine = self.list_schedules(app)
        if not ref:
            if not mine:
                raise NotFound(f"No schedules on ⬢ {app}")
            if len(mine) > 1:
                raise InvalidArgument(
                    f"Specify schedule on ⬢ {app}. Existing schedules: "
                    + ", ".join(f"{s.attachment}_URL" for s in mine))
            found = mine[0]
        else:
            db = self.database(app, ref, POSTGRES)
            match = [s for s in mine if s.addon == db.addon.name]
            if not match:
                raise NotFound(f"No daily backups found for {db.addon.name}")
            found = match[0]
        with self.store.write() as tx:
            tx.delete_backup_schedule(app, found.addon)
        self._scheduler().unschedule(app, found.addon)
        return found

    def reconcile_schedules(self) -> None:
        """The timers from the store's schedules (at dynod's start): each recorded one
        installed, any other ``dynod-backup-*`` timer removed."""
        if self.schedules_ is None:
            return
        with self.store.read() as tx:
            wanted = tx.list_backup_schedules()
        keep = {(s.app, s.addon) for s in wanted}
        for timer in self.schedules_.schedules():
            if (timer.app, timer.addon) not in keep:
                self.schedules_.unschedule(timer.app, timer.addon)
        for s in wanted:
            self.schedules_.schedule(s.app, s.addon, s.attachment, s.at)

    def recover(self) -> None:
        """At dynod's start: a backup still Running or Verifying was interrupted by the
        stop (its RPC is gone); record it Failed, and drop the scratch databases it
        left. Raises Unavailable when the cluster cannot be reached."""
        with self.store.write() as tx:
            stale = [b for a in tx.apps() for b in tx.list_backups(a.name)
                     if b.status in (BackupStatus.RUNNING, BackupStatus.VERIFYING)]
            for b in stale:
                tx.update_backup(replace(
                    b, status=BackupStatus.FAILED, finished_at=datetime.now(UTC),
                    reason=f"dynod stopped while it was {b.status.lower()}; capture "
                           "another"))
        self.reconcile_schedules()
        if stale:
            log.warning("backups interrupted by a stop, now Failed: %s",
                        ", ".join(f"{b.app}/{b.id}" for b in stale))
        if self.files is not None and any(
                a.service == POSTGRES for a in self._all_addons()):
            dropped = self.files.cleanup()
            if dropped:
                log.info("dropped scratch databases left by a stop: %s", ", ".join(dropped))

    def _all_addons(self) -> list[Addon]:
        with self.store.read() as tx:
            return tx.list_addons()

    def forget_app(self, app: str) -> None:
        """The app is gone: its backup files and schedules go too (its records went
        with it)."""
        if self.files is not None:
            self.files.remove_app(app)
        if self.schedules_ is not None:
            self.schedules_.remove_app(app)

    def prune_schedules(self, app: str) -> None:
        """Remove the app's schedules of add-ons it no longer has (destroyed or
        detached), so no timer fires for a database that is not there."""
        if self.schedules_ is None:
            return
        with self.store.write() as tx:
            if tx.app(app) is None:
                recorded = None
            else:
                attached = {a.addon for a in tx.list_attachments(app=app)}
                attached |= {a.name for a in tx.list_addons(app)}
                for s in tx.list_backup_schedules(app):
                    if s.addon not in attached:
                        tx.delete_backup_schedule(app, s.addon)
                recorded = {s.addon for s in tx.list_backup_schedules(app)}
        if recorded is None:
            self.schedules_.remove_app(app)
            return
        gone = [t.addon for t in self.schedules_.schedules(app) if t.addon not in recorded]
        if gone:
            self.schedules_.remove_app(app, gone)

    def list_schedules(self, app: str) -> list[Schedule]:
        """The store's schedules of the app, with when their timers fire next."""
        with self.store.read() as tx:
            reads.require_app(tx, app)
            recorded = tx.list_backup_schedules(app)
        timers = {s.addon: s for s in self._scheduler().schedules(app)}
        return [timers.get(s.addon) or ScheduleView(s.app, s.addon, s.attachment, s.at, "")
                for s in recorded]

    # -- credentials and reset

    def rotate(self, app: str, ref: str, confirm: str, user: str,
               service: str = POSTGRES) -> tuple[Database, dict[str, Release]]:
        """A new password (open sessions end), and in every app it is attached to a
        release setting its URL vars (Heroku: "Connections will be reset and
        applications will be restarted"). Returns the releases by app."""
        db = self.database(app, ref, service)
        check_confirm(app, confirm, f"the password of {db.addon.name} will rotate; "
                                    "connections will be reset and applications restarted")
        credentials = self._services().rotate_credentials(db.addon.name, service)
        made: dict[str, Release] = {}
        with self.store.write() as tx:
            addon = addons_control.require_addon(tx, db.addon.name)
            addon = replace(addon, credentials=credentials)
            tx.update_addon(addon)
            by_app: dict[str, list[str]] = {}
            for att in tx.list_attachments(addon=addon.name):
                by_app.setdefault(att.app, []).append(att.name)
            for other, names in by_app.items():
                latest = reads.latest_release(tx, other)
                config = dict(latest.config)
                config.update({f"{n}_URL": addon.url for n in names})
                made[other] = releases.append_release(
                    tx, other, description=f"Update {', '.join(names)} by "
                                           f"{SERVICE_LABEL[service]}",
                    user=user, slug_id=latest.slug_id, config=config, release_phase=False)
        for other, release in made.items():
            self.events.publish(AddonsChanged(other, addon.name, user, release))
        return Database(addon, db.attachments), made

    def reset(self, app: str, ref: str, confirm: str, user: str,
              service: str = POSTGRES) -> Database:
        """Empty the database (Heroku pg:reset). Raises FailedPrecondition/
        InvalidArgument (confirmation), NotFound."""
        db = self.database(app, ref, service)
        check_confirm(app, confirm, f"{db.addon.name} will lose all of its data")
        self._services().reset(db.addon.name, service)
        log.info("app %s: %s reset by %s", app, db.addon.name, user)
        return db
