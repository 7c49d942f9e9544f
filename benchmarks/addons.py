"""Add-ons (issue 15): provisioning, and backups that are verified by a restore.

- ``addons:create`` -> DATABASE_URL usable: in a sandbox machine running dynod, the time
  from invoking ``dynoctl addons:create heroku-postgresql`` until a one-off dyno of the
  app gets an answer to ``psql "$URL" -c 'select 1'``. Baseline in the same run, on the
  same cluster: ``createdb`` then ``psql -c 'select 1'`` as its superuser over the unix
  socket (no role, no access rules, no release, no dyno). A one-off dyno's start is
  part of the figure: that is when the app can use it.
- backup and restore of a 1 GB database (``pgbench -i -s 70``) on a throwaway cluster:
  dynod's capture (snapshot counts + ``pg_dump -Fc --snapshot``, checksum) beside a plain
  ``pg_dump -Fc``; its verification (checksum, ``pg_restore`` into a scratch database,
  counts compared) and its restore (a fresh database, counts, swap) beside a plain
  ``pg_restore`` into an empty database. Figures in seconds; the size is printed.

    .venv/bin/python -m benchmarks.addons [--scale 0.1] [--json FILE]
"""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.common import Figure, Summary, write
from dynod.addons.backups import BackupEngine, LocalCluster
from dynod.model.addons import Backup, BackupStatus

STACK = Path("/var/lib/dynod/stacks/debian-13")
CACHE = Path("/var/cache/dynod/test-state/stacks/debian-13")
APP = "bench"


def _bindir() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                   key=lambda p: int(p.parent.parent.name))
    if not found:
        raise SystemExit("benchmark: Debian's postgresql is not installed")
    return found[-1].parent


@contextmanager
def throwaway_cluster() -> Iterator[tuple[LocalCluster, Path]]:
    bindir = _bindir()
    pw = pwd.getpwnam("postgres")
    root = Path(tempfile.mkdtemp(prefix="dynod-pgbench-", dir="/var/tmp"))
    os.chown(root, pw.pw_uid, pw.pw_gid)
    port = 55000 + os.getpid() % 1000

    def as_postgres(*argv: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *argv], check=True,
                       capture_output=True, timeout=600)

    try:
        as_postgres(str(bindir / "initdb"), "-D", str(root / "data"), "-A", "peer",
                    "-U", "postgres")
        as_postgres(str(bindir / "pg_ctl"), "-D", str(root / "data"), "-l",
                    str(root / "log"), "-w", "-o",
                    f"-k {root} -c listen_addresses= -p {port} -c max_wal_size=4GB", "start")
        yield LocalCluster(bindir, root, port), root
    finally:
        subprocess.run(["runuser", "-u", "postgres", "--", str(bindir / "pg_ctl"), "-D",
                        str(root / "data"), "-m", "immediate", "-w", "stop"],
                       capture_output=True, timeout=120, check=False)
        shutil.rmtree(root, ignore_errors=True)


def _run(argv: list[str], **kw: object) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=3600, **kw)  # type: ignore[call-overload]


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def backup_figures(scale: float) -> list[Figure]:
    """Capture/verify/restore of a pgbench database beside plain pg_dump/pg_restore."""
    factor = 70 if scale >= 1 else max(1, round(70 * scale))
    n = max(1, round(3 * scale))
    with throwaway_cluster() as (cluster, root):
        engine = BackupEngine(cluster, root / "backups")
        engine.sql("postgres", "CREATE ROLE bench LOGIN; CREATE DATABASE bench OWNER bench;")
        # pgbench's -d is --debug: its database is the last argument.
        _run(["runuser", "-u", "postgres", "--", str(cluster.bindir / "pgbench"), "-h",
              str(cluster.socket_dir), "-p", str(cluster.port), "-U", "postgres", "-i", "-q",
              "-s", str(factor), "bench"])
        engine.sql("bench", "ALTER TABLE pgbench_accounts OWNER TO bench; "
                            "ALTER TABLE pgbench_branches OWNER TO bench; "
                            "ALTER TABLE pgbench_tellers OWNER TO bench; "
                            "ALTER TABLE pgbench_history OWNER TO bench; VACUUM ANALYZE;")
        size = int(engine.sql("postgres", "SELECT pg_database_size('bench');")[0])
        print(f"   database: {size / 2**30:.2f} GiB (pgbench -s {factor})", file=sys.stderr)
        plain = root / "plain.dump"
        dump_s = [_timed(lambda: _run([*cluster.argv("pg_dump", "bench"), "-Fc",
                                       "--no-owner", "--no-acl", "-f", str(plain)]))
                  for _ in range(n)]
        capture_s, verify_s, restore_s, plain_restore_s = [], [], [], []
        for i in range(n):
            bid = f"b{i + 1:03d}"
            t0 = time.perf_counter()
            taken = engine.capture(APP, bid, "bench")
            capture_s.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            status, reason = engine.verify(APP, bid, taken.sha256, taken.tables)
            verify_s.append(time.perf_counter() - t0)
            if status is not BackupStatus.VERIFIED:
                raise SystemExit(f"benchmark: backup did not verify: {reason}")
            backup = Backup(bid, "bench", APP, datetime.now(UTC), None, taken.size,
                            taken.sha256, status, "", dict(taken.tables))
            t0 = time.perf_counter()
            engine.restore(backup, "bench", "bench")
            restore_s.append(time.perf_counter() - t0)
            engine.sql("postgres", "DROP DATABASE IF EXISTS plain_restore WITH (FORCE);")
            engine.sql("postgres", "CREATE DATABASE plain_restore;")
            plain_restore_s.append(_timed(lambda: _run(
                [*cluster.argv("pg_restore", "plain_restore"), "--no-owner", "--no-acl",
                 str(plain)])))
            print(f"   dump file {taken.size / 2**20:.0f} MiB", file=sys.stderr)
    gib = f"{size / 2**30:.1f} GiB"
    return [
        Figure(f"pg:backups:capture ({gib}, counts+dump+sha)", Summary.of(capture_s, "s"),
               "pg_dump -Fc", Summary.of(dump_s, "s")),
        Figure(f"backup verification ({gib}, scratch restore)", Summary.of(verify_s, "s"),
               "pg_restore into an empty db", Summary.of(plain_restore_s, "s")),
        Figure(f"pg:backups:restore ({gib}, fresh db + swap)", Summary.of(restore_s, "s"),
               "pg_restore into an empty db", Summary.of(plain_restore_s, "s")),
    ]


def provision_figures(scale: float) -> list[Figure]:
    from tests.sandbox.machine import Machine  # noqa: PLC0415 - host side only

    n = max(2, round(5 * scale))
    with tempfile.TemporaryDirectory(prefix="dynod-bench-") as tmp:
        m = Machine(state_dir=Path(tmp) / "state", binds=[(str(CACHE), f"{STACK}:ro")])
        m.boot()
        try:
            def sh(script: str, check: bool = True) -> subprocess.CompletedProcess[str]:
                proc = m.run(["bash", "-c", script], cwd="/tmp", timeout=600)
                if check and proc.returncode != 0:
                    raise SystemExit(f"benchmark: {script}: {proc.stdout}{proc.stderr}")
                return proc

            # A slug for one-off dynos to run on (no web process: nothing to route).
            sh(f"dynoctl apps:create {APP} && mkdir -p /tmp/s/app && "
               "tar -C /tmp/s -czf /tmp/s.tgz ./app && dynoctl slugs:deploy --no-wait "
               f"-a {APP} /tmp/s.tgz --process-type 'worker=sleep infinity'")
            # The cluster exists from the first add-on on; keep one so it stays up.
            sh(f"dynoctl addons:create heroku-postgresql -a {APP} --as KEEP")
            psql = ("psql -X -h /run/dynod-postgresql -U postgres -qAt -v ON_ERROR_STOP=1 ")
            usable: list[float] = []
            returned: list[float] = []
            created: list[float] = []
            for i in range(n):
                name = f"BENCH{i}"
                t0 = time.perf_counter()
                sh(f"dynoctl addons:create heroku-postgresql -a {APP} --as {name}")
                returned.append(time.perf_counter() - t0)
                # Single quotes: $..._URL is the dyno's, expanded by the dyno's bash.
                deadline = t0 + 120
                while sh(f"dynoctl run -a {APP} --no-tty -- 'psql \"${name}_URL\" -Atc "
                         "\"select 1\"'", check=False).stdout.strip() != "1":
                    if time.perf_counter() > deadline:
                        raise SystemExit(f"benchmark: {name}_URL never answered select 1")
                    time.sleep(0.1)
                usable.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                sh(f"createdb -h /run/dynod-postgresql -U postgres bench_plain_{i} && "
                   f"{psql} -d bench_plain_{i} -c 'select 1'")
                created.append(time.perf_counter() - t0)
            baseline = Summary.of(created, "s")
            return [Figure("addons:create returns (db, role, release)",
                           Summary.of(returned, "s"), "createdb + psql select 1", baseline),
                    Figure("addons:create -> URL usable (one-off)", Summary.of(usable, "s"),
                           "createdb + psql select 1", baseline)]
        finally:
            m.shutdown()


def collect(scale: float = 1.0) -> list[Figure]:
    return provision_figures(scale) + backup_figures(scale)


def main() -> int:
    parser = argparse.ArgumentParser(prog="benchmarks.addons")
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--only", choices=("provision", "backups"), default=None)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.only == "provision":
        figures = provision_figures(args.scale)
    elif args.only == "backups":
        figures = backup_figures(args.scale)
    else:
        figures = collect(args.scale)
    write(figures, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
