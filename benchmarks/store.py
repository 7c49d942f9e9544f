"""The API on the etcd store beside the same API on SQLite, in the same run: config:set
(a write: a new release), releases (15 newest) and ps's formation read, on an app with
some releases, through dynod's real gRPC handlers in this process over a Unix socket.
etcd is Debian's etcd-server on 127.0.0.1 (one member, a temporary data dir): the
store's cost without the network a cluster adds between its machines.

    .venv/bin/python -m benchmarks.store [--releases 200] [-n 100] [--json FILE]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from benchmarks.api import release_calls
from benchmarks.common import Figure, Summary, timed, write
from dynod.store.etcd import EtcdSettings, EtcdStore
from dynod.store.sqlite import SqliteStore
from dynod.v1 import formation_pb2
from tests.etcd.server import running_etcd
from tests.unit.control_plane.harness import serving


def measure(store: SqliteStore | EtcdStore, tmp: Path, releases: int,
            n: int) -> dict[str, list[float]]:
    tmp.mkdir(parents=True, exist_ok=True)
    with serving(tmp, store) as api:
        api.create_app("bench")
        return {
            **release_calls(api.config, api.releases, releases, n),
            "formation": timed(lambda: api.formation.Get(formation_pb2.GetFormationRequest(
                app="bench")), n),
        }


def collect(scale: float = 1.0, releases: int | None = None,
            n: int | None = None) -> list[Figure]:
    """scale 1 = the full run, 0.1 = --quick, 0.01 = the suite's smoke test."""
    releases = releases or max(5, round(200 * scale))
    n = n or max(3, round(100 * scale))
    with tempfile.TemporaryDirectory(prefix="dynod-bench-store-") as tmp, running_etcd() as etcd:
        base = Path(tmp)
        sqlite = measure(SqliteStore.open(base / "s" / "state.db"), base / "s", releases, n)
        on_etcd = measure(EtcdStore(EtcdSettings((etcd.endpoint,))), base / "e", releases, n)
    return [
        Figure(f"etcd store: {label}, {releases}+ releases", Summary.of(on_etcd[key], "ms"),
               "the same on the SQLite store", Summary.of(sqlite[key], "ms"))
        for key, label in (("config_set", "API config:set"),
                           ("releases_15", "API releases (15)"),
                           ("formation", "API ps (formation)"))]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--releases", type=int)
    parser.add_argument("-n", type=int)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    write(collect(args.scale, args.releases, args.n), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
