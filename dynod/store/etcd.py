"""The etcd store: :mod:`dynod.store.protocol` on etcd, for a dynod spanning machines.

Every record is one key under the store's root prefix, its value the record's JSON
(:mod:`dynod.store.etcd_codec`); keys group records by app so a transaction reads
one app's releases, formation... with one range. Transactions are
:mod:`dynod.store.etcd_kv`'s: a snapshot at one revision, writes committed by one
compare-and-swap txn under the store's write lock, so release versions stay gap-free
and a change is all or nothing, as with SQLite. Unique constraints SQLite enforces
(a domain's host name, a key's fingerprint) are keys here or checked by
``dynod.control`` before it writes.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from etcd3gw.client import Etcd3Client

from dynod.model.acm import AcmChallenge, AcmDomain
from dynod.model.addons import Addon, Attachment, Backup, BackupScheduleRecord
from dynod.model.apps import App
from dynod.model.builds import Build, BuildSettings
from dynod.model.domains import Domain
from dynod.model.drains import Drain
from dynod.model.formation import Process
from dynod.model.keys import Key
from dynod.model.releases import Release, ReleaseStatus
from dynod.model.slugs import Slug
from dynod.store.etcd_codec import decode, encode
from dynod.store.etcd_kv import Kv, KvTx, WriteLock, commit
from dynod.store.etcd_users import EtcdUsersTx
from dynod.store.migrations import FIRST_APP_UID

DEFAULT_STACK = "debian-13"  # SQLite's column default (migration v4)


@dataclass(frozen=True)
class AppRow:
    """What the store keeps on an app beside its records."""

    name: str
    owner: str
    created_at: str
    uid: int
    generation: int = 1
    maintenance: bool = False
    acm: bool = False
    stack: str = DEFAULT_STACK
    buildpacks: tuple[str, ...] = ()


def _row(text: str) -> AppRow:
    doc = json.loads(text)
    doc["buildpacks"] = tuple(doc.get("buildpacks", ()))
    return AppRow(**doc)


def _row_text(row: AppRow) -> str:
    return json.dumps({**row.__dict__, "buildpacks": list(row.buildpacks)}, sort_keys=True)


class EtcdTx(EtcdUsersTx):
    """:class:`~dynod.store.protocol.Tx` over one :class:`KvTx`."""

    def __init__(self, kv: KvTx) -> None:
        self.kv = kv

    def _app_row(self, name: str) -> AppRow | None:
        text = self.kv.get(f"apps/{name}")
        return None if text is None else _row(text)

    def _update_app(self, name: str, **changes: object) -> None:
        row = self._app_row(name)
        if row is not None:
            self.kv.put(f"apps/{name}", _row_text(replace(row, **changes)))  # type: ignore[arg-type]

    def _exists(self, app: str) -> bool:
        return self.kv.get(f"apps/{app}") is not None

    # apps
    def app(self, name: str) -> App | None:
        row = self._app_row(name)
        return None if row is None else decode(App, _row_text(row))

    def apps(self) -> list[App]:
        return [decode(App, v) for _, v in self.kv.scan("apps/")]

    def next_uid(self) -> int:
        text = self.kv.get("meta/next-uid")
        return FIRST_APP_UID if text is None else int(text)

    def import_app(self, app: App, uid: int) -> None:
        """Add the app with ``uid`` (a migration keeps every app's)."""
        self.kv.put(f"apps/{app.name}", _row_text(AppRow(
            app.name, app.owner, app.created_at.isoformat(), uid)))
        self.kv.put("meta/next-uid", str(max(self.next_uid(), uid + 1)))

    def add_app(self, app: App) -> None:
        self.import_app(app, self.next_uid())

    def remove_app(self, name: str) -> list[str]:
        if not self._exists(name):
            return []
        checksums = {s.checksum for s in self._slugs(f"slugs/{name}/") if s.uploaded}
        owned = [a.name for a in self.list_addons(name)]
        for att in self.list_attachments():
            if att.app == name or att.addon in owned:
                self.delete_attachment(att.addon, att.app)
        for addon in owned:
            self.kv.delete(f"addons/{addon}")
        for domain in self.domains(name):
            self.remove_domain(domain.hostname)
        for table in ("schedules", "backups", "releases", "formation", "slugs", "builds",
                      "features", "drains", "collaborators"):
            self.kv.delete_prefix(f"{table}/{name}/")
        self.kv.delete(f"apps/{name}")
        still = {s.checksum for s in self._slugs("slugs/") if s.uploaded}
        return sorted(checksums - still)

    def app_uid(self, name: str) -> int | None:
        row = self._app_row(name)
        return None if row is None else row.uid

    # settings
    def generation(self, name: str) -> int | None:
        row = self._app_row(name)
        return None if row is None else row.generation

    def set_generation(self, name: str, generation: int) -> None:
        self._update_app(name, generation=generation)

    def maintenance(self, name: str) -> bool | None:
        row = self._app_row(name)
        return None if row is None else row.maintenance

    def set_maintenance(self, name: str, on: bool) -> None:
        self._update_app(name, maintenance=on)

    def features(self, name: str) -> set[str]:
        prefix = f"features/{name}/"
        return {k[len(prefix):] for k, _ in self.kv.scan(prefix)}

    def set_feature(self, name: str, feature: str, on: bool) -> None:
        if not on:
            self.kv.delete(f"features/{name}/{feature}")
        elif self._exists(name):
            self.kv.put(f"features/{name}/{feature}", "1")

    def app_build_settings(self, name: str) -> BuildSettings | None:
        row = self._app_row(name)
        return None if row is None else BuildSettings(row.stack, row.buildpacks)

    def set_app_build_settings(self, name: str, settings: BuildSettings) -> None:
        self._update_app(name, stack=settings.stack, buildpacks=tuple(settings.buildpacks))

    # releases, keyed by zero-padded version so a range is in version order
    def release(self, app: str, version: int) -> Release | None:
        text = self.kv.get(f"releases/{app}/{version:010d}")
        return None if text is None else decode(Release, text)

    def releases(self, app: str, limit: int | None) -> list[Release]:
        prefix = f"releases/{app}/"
        pairs = (list(reversed(self.kv.scan(prefix))) if limit is None
                 else self.kv.newest(prefix, limit))
        return [decode(Release, v) for _, v in pairs]

    def latest_release(self, app: str) -> Release | None:
        return next(iter(self.releases(app, 1)), None)

    def latest_succeeded_release(self, app: str) -> Release | None:
        # The newest few first: the one running is nearly always among them.
        for limit in (4, None):
            releases = self.releases(app, limit)
            found = next((r for r in releases if r.status == ReleaseStatus.SUCCEEDED), None)
            if found is not None or limit is None or len(releases) < limit:
                return found
        return None  # pragma: no cover - the loop returns

    def add_release(self, release: Release) -> None:
        if self._exists(release.app):
            self.kv.put(f"releases/{release.app}/{release.version:010d}", encode(release))

    def set_release_status(self, app: str, version: int, status: ReleaseStatus,
                           failure: str = "") -> None:
        release = self.release(app, version)
        if release is not None:
            self.kv.put(f"releases/{app}/{version:010d}",
                        encode(replace(release, status=status, failure=failure)))

    # formation
    def processes(self, app: str) -> list[Process]:
        return [decode(Process, v) for _, v in self.kv.scan(f"formation/{app}/")]

    def put_process(self, app: str, process: Process) -> None:
        if self._exists(app):
            self.kv.put(f"formation/{app}/{process.type}", encode(replace(process, command="")))

    # slugs
    def all_slugs(self) -> list[Slug]:
        """Every app's (a migration's read-back)."""
        return sorted(self._slugs("slugs/"), key=lambda s: (s.created_at, s.id))

    def _slugs(self, prefix: str) -> list[Slug]:
        return [decode(Slug, v) for _, v in self.kv.scan(prefix)]

    def slug(self, app: str, slug_id: str) -> Slug | None:
        text = self.kv.get(f"slugs/{app}/{slug_id}")
        return None if text is None else decode(Slug, text)

    def slug_layers(self, checksum: str) -> tuple[str, ...] | None:
        uploaded = [s for s in self._slugs("slugs/") if s.checksum == checksum and s.uploaded]
        return max(uploaded, key=lambda s: s.created_at).layers if uploaded else None

    def put_slug(self, slug: Slug) -> None:
        old = self.slug(slug.app, slug.id)
        if old is not None:
            slug = replace(old, uploaded=slug.uploaded)
        if self._exists(slug.app):
            self.kv.put(f"slugs/{slug.app}/{slug.id}", encode(slug))

    # domains
    def domain(self, hostname: str) -> Domain | None:
        text = self.kv.get(f"domains/{hostname}")
        return None if text is None else decode(Domain, text)

    def domains(self, app: str | None) -> list[Domain]:
        found = [decode(Domain, v) for _, v in self.kv.scan("domains/")]
        return [d for d in found if app is None or d.app == app]

    def add_domain(self, domain: Domain) -> None:
        if self._exists(domain.app):
            self.kv.put(f"domains/{domain.hostname}", encode(domain))

    def remove_domain(self, hostname: str) -> None:
        self.kv.delete(f"acm/{hostname}")
        self.remove_acm_cert(hostname)
        for c in self.acm_challenges():
            if c.hostname == hostname:
                self.remove_acm_challenge(hostname, c.token)
        self.kv.delete(f"domains/{hostname}")

    # automated certificate management
    def acm(self, app: str) -> bool | None:
        row = self._app_row(app)
        return None if row is None else row.acm

    def set_acm(self, app: str, on: bool) -> None:
        self._update_app(app, acm=on)

    def acm_domain(self, hostname: str) -> AcmDomain | None:
        text = self.kv.get(f"acm/{hostname}")
        domain = self.domain(hostname)
        if text is None or domain is None:
            return None
        return replace(decode(AcmDomain, text), app=domain.app)

    def acm_domains(self, app: str | None) -> list[AcmDomain]:
        self.kv.scan("acm/")  # one range for all (ACM reads them every second)
        found = (self.acm_domain(d.hostname) for d in self.domains(app))
        return [a for a in found if a is not None]

    def put_acm_domain(self, domain: AcmDomain) -> None:
        # Only for a domain that still exists (a removal may have raced the order).
        if self.domain(domain.hostname) is not None:
            self.kv.put(f"acm/{domain.hostname}", encode(domain))

    def remove_acm_domains(self, app: str) -> None:
        for d in self.domains(app):
            self.kv.delete(f"acm/{d.hostname}")

    # ACM's certificates and the challenges in flight: keys of their own, so reading
    # the records (certs:auto) never fetches the bundles
    def acm_certs(self) -> dict[str, str]:
        return {k.removeprefix("acm-cert/"): v for k, v in self.kv.scan("acm-cert/")}

    def put_acm_cert(self, hostname: str, bundle: str) -> None:
        if self.domain(hostname) is not None:
            self.kv.put(f"acm-cert/{hostname}", bundle)

    def remove_acm_cert(self, hostname: str) -> None:
        self.kv.delete(f"acm-cert/{hostname}")

    def acm_challenges(self) -> list[AcmChallenge]:
        return [decode(AcmChallenge, v) for _, v in self.kv.scan("acm-challenge/")]

    def put_acm_challenge(self, challenge: AcmChallenge) -> None:
        if self.domain(challenge.hostname) is not None:
            self.kv.put(f"acm-challenge/{challenge.hostname}/{challenge.token}",
                        encode(challenge))

    def remove_acm_challenge(self, hostname: str, token: str) -> None:
        self.kv.delete(f"acm-challenge/{hostname}/{token}")

    # builds, in the order they were made (a sequence number beside the record)
    def _build_docs(self, app: str) -> list[tuple[int, Build]]:
        docs = []
        for _, v in self.kv.scan(f"builds/{app}/"):
            doc = json.loads(v)
            docs.append((int(doc.pop("seq")), decode(Build, json.dumps(doc))))
        return docs

    def build(self, app: str, build_id: str) -> Build | None:
        return next((b for _, b in self._build_docs(app) if b.id == build_id), None)

    def builds(self, app: str, limit: int | None) -> list[Build]:
        docs = sorted(self._build_docs(app), key=lambda d: (d[1].created_at, d[0]),
                      reverse=True)
        found = [b for _, b in docs]
        return found if limit is None else found[:limit]

    def put_build(self, build: Build) -> None:
        if not self._exists(build.app):
            return
        key = f"builds/{build.app}/{build.id}"
        old = self.kv.get(key)
        if old is not None:
            doc = json.loads(old)
            build = replace(build, user=doc["user"], created_at=decode(Build, json.dumps(
                {k: v for k, v in doc.items() if k != "seq"})).created_at,
                stack=doc["stack"], commit=doc["commit"])
            seq = int(doc["seq"])
        else:
            seq = int(self.kv.get("meta/build-seq") or "0") + 1
            self.kv.put("meta/build-seq", str(seq))
        self.kv.put(key, json.dumps({**json.loads(encode(build)), "seq": seq}, sort_keys=True))

    # keys
    def ssh_keys(self) -> list[Key]:
        return [decode(Key, v) for _, v in self.kv.scan("keys/")]

    def add_key(self, key: Key) -> None:
        self.kv.put(f"keys/{key.id}", encode(key))

    def remove_key(self, key_id: str) -> bool:
        found = self.kv.get(f"keys/{key_id}") is not None
        self.kv.delete(f"keys/{key_id}")
        return found

    # log drains
    def drains(self, app: str | None = None) -> list[Drain]:
        found = [decode(Drain, v) for _, v in
                 self.kv.scan("drains/" if app is None else f"drains/{app}/")]
        return sorted(found, key=lambda d: (d.app, d.created_at, d.token))

    def add_drain(self, drain: Drain) -> None:
        if self._exists(drain.app):
            self.kv.put(f"drains/{drain.app}/{drain.token}", encode(drain))

    def remove_drain(self, app: str, token: str) -> bool:
        found = self.kv.get(f"drains/{app}/{token}") is not None
        self.kv.delete(f"drains/{app}/{token}")
        return found

    # add-ons, their attachments (keyed by add-on and app), backups and schedules
    def insert_addon(self, addon: Addon) -> None:
        if self._exists(addon.app):
            self.kv.put(f"addons/{addon.name}", encode(addon))

    def update_addon(self, addon: Addon) -> None:
        old = self.get_addon(addon.name)
        if old is not None and self._exists(addon.app):
            self.kv.put(f"addons/{addon.name}", encode(replace(addon, created_at=old.created_at)))

    def delete_addon(self, name: str) -> None:
        self.kv.delete_prefix(f"attachments/{name}/")
        for s in self.list_backup_schedules():
            if s.addon == name:
                self.kv.delete(f"schedules/{s.app}/{s.addon}")
        self.kv.delete(f"addons/{name}")

    def get_addon(self, name: str) -> Addon | None:
        text = self.kv.get(f"addons/{name}")
        return None if text is None else decode(Addon, text)

    def list_addons(self, app: str | None = None) -> list[Addon]:
        found = [decode(Addon, v) for _, v in self.kv.scan("addons/")]
        return [a for a in found if app is None or a.app == app]

    def insert_attachment(self, att: Attachment) -> None:
        if self._exists(att.app):
            self.kv.put(f"attachments/{att.addon}/{att.app}", encode(att))

    def delete_attachment(self, addon: str, app: str) -> None:
        self.kv.delete(f"attachments/{addon}/{app}")

    def list_attachments(self, app: str | None = None,
                         addon: str | None = None) -> list[Attachment]:
        found = [decode(Attachment, v) for _, v in
                 self.kv.scan("attachments/" if addon is None else f"attachments/{addon}/")]
        return sorted((a for a in found if app is None or a.app == app),
                      key=lambda a: (a.app, a.created_at, a.name))

    def insert_backup(self, backup: Backup) -> None:
        if self._exists(backup.app):
            self.kv.put(f"backups/{backup.app}/{backup.id}", encode(backup))

    def update_backup(self, backup: Backup) -> None:
        if self.get_backup(backup.app, backup.id) is not None:
            self.kv.put(f"backups/{backup.app}/{backup.id}", encode(backup))

    def get_backup(self, app: str, backup_id: str) -> Backup | None:
        text = self.kv.get(f"backups/{app}/{backup_id}")
        return None if text is None else decode(Backup, text)

    def list_backups(self, app: str) -> list[Backup]:
        found = [decode(Backup, v) for _, v in self.kv.scan(f"backups/{app}/")]
        return sorted(found, key=lambda b: (b.created_at, b.id))

    def delete_backup(self, app: str, backup_id: str) -> None:
        self.kv.delete(f"backups/{app}/{backup_id}")

    def put_backup_schedule(self, schedule: BackupScheduleRecord) -> None:
        if self._exists(schedule.app):
            self.kv.put(f"schedules/{schedule.app}/{schedule.addon}", encode(schedule))

    def delete_backup_schedule(self, app: str, addon: str) -> bool:
        found = self.kv.get(f"schedules/{app}/{addon}") is not None
        self.kv.delete(f"schedules/{app}/{addon}")
        return found

    def list_backup_schedules(self, app: str | None = None) -> list[BackupScheduleRecord]:
        return [decode(BackupScheduleRecord, v) for _, v in
                self.kv.scan("schedules/" if app is None else f"schedules/{app}/")]


@dataclass(frozen=True)
class EtcdSettings:
    """Where the store's etcd is: ``host:port`` endpoints, and TLS files when set."""

    endpoints: tuple[str, ...]
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    root: str = "/dynod/"
    timeout: float = 30.0


class EtcdStore:
    """:class:`~dynod.store.protocol.Store` on etcd (the first endpoint that answers)."""

    def __init__(self, settings: EtcdSettings) -> None:
        self.settings = settings
        self.kv = self._connect(settings)
        self.lock = WriteLock(self.kv, settings.timeout)

    @staticmethod
    def _connect(settings: EtcdSettings) -> Kv:
        tls = settings.ca_file is not None
        last: Kv | None = None
        for endpoint in settings.endpoints:
            host, _, port = endpoint.rpartition(":")
            client = Etcd3Client(
                host=host.strip("[]"), port=int(port), protocol="https" if tls else "http",
                ca_cert=None if settings.ca_file is None else str(settings.ca_file),
                cert_cert=None if settings.cert_file is None else str(settings.cert_file),
                cert_key=None if settings.key_file is None else str(settings.key_file),
                timeout=settings.timeout)
            last = Kv(client, settings.root, endpoint)
            with contextlib.suppress(Exception):
                last.range("meta/guard", None, None)
                return last
        if last is None:
            raise ValueError("etcd_endpoints is empty: name at least one host:port")
        last.range("meta/guard", None, None)  # raises Unavailable naming the endpoint
        return last

    @contextlib.contextmanager
    def read(self) -> Iterator[EtcdTx]:
        yield EtcdTx(KvTx(self.kv))  # its first range fixes the snapshot's revision

    @contextlib.contextmanager
    def write(self) -> Iterator[EtcdTx]:
        with self.lock.held():
            tx = KvTx(self.kv)
            tx.start()
            yield EtcdTx(tx)
            commit(self.kv, tx, self.lock.owner)

    def close(self) -> None:
        self.lock.close()
