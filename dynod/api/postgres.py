"""The Databases service: pg:* and redis:* (``dynod.control.pg``)."""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from dynod.api.daemon import Daemon, timestamp
from dynod.api.peer import caller_of
from dynod.control.pg import Database, Databases, Schedule
from dynod.errors import FailedPrecondition, InvalidArgument
from dynod.model.addons import POSTGRES, SERVICE_ALIASES, Backup
from dynod.v1 import postgres_pb2, postgres_pb2_grpc


def backup_to_proto(b: Backup, database: str = "") -> postgres_pb2.Backup:
    out = postgres_pb2.Backup(id=b.id, addon=b.addon, created_at=timestamp(b.created_at),
                              size=b.size, sha256=b.sha256, status=str(b.status),
                              reason=b.reason, tables=dict(b.tables), scheduled=b.scheduled,
                              database=database)
    if b.finished_at is not None:
        out.finished_at.CopyFrom(timestamp(b.finished_at))
    return out


def database_to_proto(db: Database) -> postgres_pb2.Database:
    a = db.addon
    return postgres_pb2.Database(addon=a.name, attachments=list(db.attachments),
                                 plan=f"{a.service}:{a.plan}", owner=a.app,
                                 created_at=timestamp(a.created_at))


def schedule_to_proto(s: Schedule) -> postgres_pb2.Schedule:
    return postgres_pb2.Schedule(addon=s.addon, attachment=s.attachment, at=s.at,
                                 next_run=s.next_run)


def service_of(ref: postgres_pb2.DatabaseRef) -> str:
    if not ref.service:
        return POSTGRES
    service = SERVICE_ALIASES.get(ref.service)
    if service is None:
        raise InvalidArgument(f'unknown service "{ref.service}"; use heroku-postgresql or '
                              "heroku-redis")
    return service


class DatabasesServicer(postgres_pb2_grpc.DatabasesServicer):
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    @property
    def pg(self) -> Databases:
        if self.daemon.databases is None:
            raise FailedPrecondition("this daemon runs no add-on servers; databases are "
                                     "not available")
        return self.daemon.databases

    def Info(self, request: postgres_pb2.DatabaseInfoRequest,
             context: grpc.ServicerContext) -> postgres_pb2.DatabaseInfoResponse:
        caller_of(context)
        found = self.pg.info(request.ref.app, request.ref.database, service_of(request.ref))
        return postgres_pb2.DatabaseInfoResponse(databases=[
            postgres_pb2.DatabaseInfo(database=database_to_proto(db), fields=[
                postgres_pb2.InfoField(name=k, value=v) for k, v in fields.items()])
            for db, fields in found])

    def Resolve(self, request: postgres_pb2.ResolveDatabaseRequest,
                context: grpc.ServicerContext) -> postgres_pb2.ResolveDatabaseResponse:
        caller_of(context)
        db = self.pg.database(request.ref.app, request.ref.database, service_of(request.ref))
        if not db.attachments:
            raise FailedPrecondition(
                f"{db.addon.name} is not attached to ⬢ {request.ref.app}, so its dynos have "
                f"no URL for it; attach it with `dynoctl addons:attach {db.addon.name} "
                f"-a {request.ref.app}`")
        wanted = request.ref.database.upper().removesuffix("_URL")
        name = wanted if wanted in db.attachments else db.attachments[0]
        return postgres_pb2.ResolveDatabaseResponse(database=database_to_proto(db),
                                                    config_var=f"{name}_URL")

    def CaptureBackup(self, request: postgres_pb2.CaptureBackupRequest,
                      context: grpc.ServicerContext) -> postgres_pb2.CaptureBackupResponse:
        user = caller_of(context).name
        db = self.pg.database(request.ref.app, request.ref.database)
        backup = self.pg.capture(request.ref.app, request.ref.database,
                                 "scheduler" if request.scheduled else user,
                                 scheduled=request.scheduled)
        return postgres_pb2.CaptureBackupResponse(backup=backup_to_proto(backup, db.name),
                                                  database=database_to_proto(db))

    def ListBackups(self, request: postgres_pb2.ListBackupsRequest,
                    context: grpc.ServicerContext) -> postgres_pb2.ListBackupsResponse:
        caller_of(context)
        names = self._names(request.app)
        return postgres_pb2.ListBackupsResponse(backups=[
            backup_to_proto(b, names.get(b.addon, "")) for b in self.pg.backups(request.app)])

    def _names(self, app: str) -> dict[str, str]:
        return {db.addon.name: db.name for db in self.pg.databases(app, POSTGRES)}

    def GetBackup(self, request: postgres_pb2.GetBackupRequest,
                  context: grpc.ServicerContext) -> postgres_pb2.GetBackupResponse:
        caller_of(context)
        backup = self.pg.backup(request.app, request.id)
        return postgres_pb2.GetBackupResponse(
            backup=backup_to_proto(backup, self._names(request.app).get(backup.addon, "")))

    def VerifyBackup(self, request: postgres_pb2.VerifyBackupRequest,
                     context: grpc.ServicerContext) -> postgres_pb2.VerifyBackupResponse:
        user = caller_of(context).name
        return postgres_pb2.VerifyBackupResponse(
            backup=backup_to_proto(self.pg.verify(request.app, request.id, user)))

    def RestoreBackup(self, request: postgres_pb2.RestoreBackupRequest,
                      context: grpc.ServicerContext) -> postgres_pb2.RestoreBackupResponse:
        user = caller_of(context).name
        backup, db = self.pg.restore(request.ref.app, request.id, request.ref.database,
                                     request.confirm, user)
        return postgres_pb2.RestoreBackupResponse(backup=backup_to_proto(backup, db.name),
                                                  database=database_to_proto(db))

    def DeleteBackup(self, request: postgres_pb2.DeleteBackupRequest,
                     context: grpc.ServicerContext) -> postgres_pb2.DeleteBackupResponse:
        caller_of(context)
        self.pg.delete(request.app, request.id, request.confirm)
        return postgres_pb2.DeleteBackupResponse()

    def DownloadBackup(self, request: postgres_pb2.DownloadBackupRequest,
                       context: grpc.ServicerContext
                       ) -> Iterator[postgres_pb2.DownloadBackupChunk]:
        caller_of(context)
        backup, chunks = self.pg.download(request.app, request.id)
        yield postgres_pb2.DownloadBackupChunk(backup=backup_to_proto(backup))
        for data in chunks:
            yield postgres_pb2.DownloadBackupChunk(data=data)

    def ScheduleBackups(self, request: postgres_pb2.ScheduleBackupsRequest,
                        context: grpc.ServicerContext
                        ) -> postgres_pb2.ScheduleBackupsResponse:
        caller_of(context)
        schedule, db = self.pg.schedule(request.ref.app, request.ref.database, request.at)
        return postgres_pb2.ScheduleBackupsResponse(schedule=schedule_to_proto(schedule),
                                                    database=database_to_proto(db))

    def UnscheduleBackups(self, request: postgres_pb2.UnscheduleBackupsRequest,
                          context: grpc.ServicerContext
                          ) -> postgres_pb2.UnscheduleBackupsResponse:
        caller_of(context)
        schedule = self.pg.unschedule(request.ref.app, request.ref.database)
        return postgres_pb2.UnscheduleBackupsResponse(schedule=schedule_to_proto(schedule))

    def ListSchedules(self, request: postgres_pb2.ListSchedulesRequest,
                      context: grpc.ServicerContext) -> postgres_pb2.ListSchedulesResponse:
        caller_of(context)
        return postgres_pb2.ListSchedulesResponse(
            schedules=[schedule_to_proto(s) for s in self.pg.list_schedules(request.app)])

    def RotateCredentials(self, request: postgres_pb2.RotateCredentialsRequest,
                          context: grpc.ServicerContext
                          ) -> postgres_pb2.RotateCredentialsResponse:
        user = caller_of(context).name
        db, made = self.pg.rotate(request.ref.app, request.ref.database, request.confirm,
                                  user, service_of(request.ref))
        return postgres_pb2.RotateCredentialsResponse(
            database=database_to_proto(db),
            releases={app: r.version for app, r in made.items()})

    def ResetDatabase(self, request: postgres_pb2.ResetDatabaseRequest,
                      context: grpc.ServicerContext) -> postgres_pb2.ResetDatabaseResponse:
        user = caller_of(context).name
        db = self.pg.reset(request.ref.app, request.ref.database, request.confirm, user,
                           service_of(request.ref))
        return postgres_pb2.ResetDatabaseResponse(database=database_to_proto(db))


def register(server: grpc.Server, daemon: Daemon) -> str:
    postgres_pb2_grpc.add_DatabasesServicer_to_server(DatabasesServicer(daemon), server)
    return str(postgres_pb2.DESCRIPTOR.services_by_name["Databases"].full_name)
