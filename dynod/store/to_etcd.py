"""Moving a machine's SQLite state into etcd (``cluster:init``), with nothing lost.

Every record the protocol reads is copied, then both stores are read back whole
(:func:`snapshot`) and compared; the migration fails, naming what differs, unless they
are equal. etcd caps a txn's operations (128 by default), so the copy is committed in
batches under the write lock and marked done by a last key: a migration interrupted
half-way is wiped and redone by the next attempt, and an etcd store that already holds
a finished migration or apps of its own is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dynod.errors import FailedPrecondition
from dynod.model.slugs import Slug
from dynod.store.etcd import EtcdStore, EtcdTx
from dynod.store.etcd_kv import GUARD, LOCK, KvTx
from dynod.store.protocol import Tx
from dynod.store.sqlite import SqliteStore, SqliteTx

BATCH = 100  # operations per etcd txn, under etcd's default --max-txn-ops of 128
MIGRATED = "meta/migrated-from-sqlite"


def snapshot(tx: Tx) -> dict[str, Any]:
    """Everything the store holds, as the protocol reads it."""
    apps: dict[str, Any] = {}
    for app in tx.apps():
        n = app.name
        apps[n] = {
            "app": app, "uid": tx.app_uid(n), "generation": tx.generation(n),
            "maintenance": tx.maintenance(n), "acm": tx.acm(n),
            "features": sorted(tx.features(n)), "build_settings": tx.app_build_settings(n),
            "releases": tx.releases(n, None), "formation": tx.processes(n),
            "builds": tx.builds(n, None), "backups": tx.list_backups(n),
            "collaborators": tx.collaborators(n),
            "slugs": sorted((s for s in _slugs(tx) if s.app == n), key=lambda s: s.id),
        }
    users = [(u, tx.tokens(u.email), tx.collaborated_apps(u.email)) for u in tx.users()]
    return {"apps": apps, "users": users, "keys": tx.ssh_keys(), "domains": tx.domains(None),
            "acm_domains": tx.acm_domains(None), "acm_certs": tx.acm_certs(),
            "drains": tx.drains(None),
            "addons": tx.list_addons(None), "attachments": tx.list_attachments(),
            "backup_schedules": tx.list_backup_schedules(None)}


def _slugs(tx: Tx) -> list[Slug]:
    """Every app's slugs (the protocol reads them one by one, by id)."""
    if isinstance(tx, SqliteTx):
        rows = tx.db.execute("SELECT a.name, s.id FROM slugs s JOIN apps a"
                             " ON a.id = s.app_id ORDER BY s.created_at, s.id").fetchall()
        return [s for s in (tx.slug(r[0], r[1]) for r in rows) if s is not None]
    assert isinstance(tx, EtcdTx)
    return tx.all_slugs()


@dataclass(frozen=True)
class Migrated:
    apps: int
    releases: int
    keys: int  # etcd keys written


def _copy(src: SqliteTx, dst: EtcdTx) -> None:
    for app in src.apps():
        n = app.name
        dst.import_app(app, src.app_uid(n) or dst.next_uid())
        dst.set_generation(n, src.generation(n) or 1)
        dst.set_maintenance(n, bool(src.maintenance(n)))
        dst.set_acm(n, bool(src.acm(n)))
        for feature in src.features(n):
            dst.set_feature(n, feature, True)
        settings = src.app_build_settings(n)
        if settings is not None:
            dst.set_app_build_settings(n, settings)
        for release in reversed(src.releases(n, None)):
            dst.add_release(release)
        for process in src.processes(n):
            dst.put_process(n, process)
        for build in reversed(src.builds(n, None)):
            dst.put_build(build)
        for backup in src.list_backups(n):
            dst.insert_backup(backup)
    next_uid = int(src.db.execute("SELECT next FROM app_uids").fetchone()[0])
    dst.kv.put("meta/next-uid", str(max(next_uid, dst.next_uid())))
    for slug in _slugs(src):
        dst.put_slug(slug)
    for user in src.users():
        dst.put_user(user)
        for token in src.tokens(user.email):
            dst.add_token(token)
    for app in src.apps():
        for collaborator in src.collaborators(app.name):
            dst.add_collaborator(collaborator)
    for key in src.ssh_keys():
        dst.add_key(key)
    for domain in src.domains(None):
        dst.add_domain(domain)
    for acm in src.acm_domains(None):
        dst.put_acm_domain(acm)
    for hostname, bundle in src.acm_certs().items():
        dst.put_acm_cert(hostname, bundle)
    for drain in src.drains(None):
        dst.add_drain(drain)
    for addon in src.list_addons(None):
        dst.insert_addon(addon)
    for att in src.list_attachments():
        dst.insert_attachment(att)
    for schedule in src.list_backup_schedules(None):
        dst.put_backup_schedule(schedule)


def migrate(sqlite: SqliteStore, etcd: EtcdStore) -> Migrated:
    """Copy ``sqlite``'s state into ``etcd`` (empty, or holding a half-done migration).

    Raises FailedPrecondition if etcd already holds state, or if a read-back differs
    (then the etcd copy is wiped); Unavailable if etcd fails (rerun to finish).
    """
    kv = etcd.kv
    with etcd.lock.held(), sqlite.write() as src:  # nobody changes the source meanwhile
        assert isinstance(src, SqliteTx)
        dst_kv = KvTx(kv)
        dst_kv.start()
        if dst_kv.get(MIGRATED) is not None:
            raise FailedPrecondition("the etcd store already holds a migrated state; "
                                     "a cluster is initialised once (cluster:init)")
        if dst_kv.scan("apps/") and dst_kv.get("meta/migrating") is None:
            raise FailedPrecondition("the etcd store already holds apps of its own; "
                                     "migrate into an empty etcd (a new cluster)")
        _wipe(etcd, keep={LOCK})  # a half-done migration of an earlier attempt
        dst_kv = KvTx(kv)
        dst_kv.start()
        dst_kv.put("meta/migrating", "1")
        dst = EtcdTx(dst_kv)
        _copy(src, dst)
        ops = dst_kv.ops()
        for i in range(0, len(ops), BATCH):
            if not kv.txn([kv.compare_value(LOCK, etcd.lock.owner)], ops[i:i + BATCH]):
                raise FailedPrecondition("lost the etcd store's write lock while "
                                         "migrating; run it again")
        check = KvTx(kv)
        check.start()
        want, got = snapshot(src), snapshot(EtcdTx(check))
        if want != got:
            _wipe(etcd, keep={LOCK})
            differ = sorted(k for k in want if want[k] != got.get(k))
            raise FailedPrecondition(f"the etcd copy differs from SQLite in {differ}; "
                                     "nothing was migrated (a bug: report it)")
        kv.txn([kv.compare_value(LOCK, etcd.lock.owner)],
               [kv.put_op(MIGRATED, "1"), kv.delete_op("meta/migrating"),
                kv.put_op(GUARD, "migrated")])
        return Migrated(len(want["apps"]),
                        sum(len(a["releases"]) for a in want["apps"].values()), len(ops))


def _wipe(etcd: EtcdStore, keep: set[str]) -> None:
    for key, _ in etcd.kv.everything():
        if key not in keep:
            etcd.kv.txn([], [etcd.kv.delete_op(key)])
