"""An in-process dynod API on a temporary Unix socket, and helpers to drive it."""

from __future__ import annotations

import gzip
import hashlib
import io
import sqlite3
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc

from dynod.api.daemon import Daemon
from dynod.api.server import make_server
from dynod.settings import Settings
from dynod.store.etcd import EtcdStore
from dynod.store.etcd_kv import GUARD, LOCK
from dynod.store.sqlite import SqliteStore
from dynod.v1 import (
    apps_pb2,
    apps_pb2_grpc,
    config_pb2_grpc,
    formation_pb2_grpc,
    releases_pb2,
    releases_pb2_grpc,
    slugs_pb2,
    slugs_pb2_grpc,
)


def make_slug(files: dict[str, bytes] | None = None) -> bytes:
    """A small tar.gz of ./app."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in (files or {"app/Procfile": b"web: true\n"}).items():
            info = tarfile.TarInfo(f"./{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0)


@dataclass
class Api:
    """Stubs on one channel to an in-process server, and the store behind it."""

    channel: grpc.Channel
    socket: Path
    store: SqliteStore | EtcdStore
    daemon: Daemon

    def __post_init__(self) -> None:
        self.apps = apps_pb2_grpc.AppsStub(self.channel)
        self.config = config_pb2_grpc.ConfigStub(self.channel)
        self.releases = releases_pb2_grpc.ReleasesStub(self.channel)
        self.formation = formation_pb2_grpc.FormationStub(self.channel)
        self.slugs = slugs_pb2_grpc.SlugsStub(self.channel)

    def create_app(self, name: str) -> None:
        self.apps.Create(apps_pb2.CreateAppRequest(name=name))

    def deploy(self, app: str, process_types: dict[str, str], tgz: bytes | None = None) -> int:
        """Create, upload and release a slug; return the release's version."""
        tgz = tgz if tgz is not None else make_slug({"app/x": app.encode()})
        slug = self.slugs.Create(slugs_pb2.CreateSlugRequest(
            app=app, checksum="sha256:" + hashlib.sha256(tgz).hexdigest(), size=len(tgz),
            process_types=process_types)).slug
        self.slugs.Upload(iter([slugs_pb2.UploadSlugRequest(app=app, id=slug.id, data=tgz)]))
        release = self.releases.Create(releases_pb2.CreateReleaseRequest(app=app, slug_id=slug.id))
        return release.release.version

    def dump(self) -> str:
        """Every row of the state database (every key of the etcd store), for "state
        unchanged" checks."""
        if isinstance(self.store, EtcdStore):
            return "\n".join(f"{k}={v}" for k, v in self.store.kv.everything()
                             if k not in (GUARD, LOCK))
        db = sqlite3.connect(self.store.path)
        try:
            return "\n".join(db.iterdump())
        finally:
            db.close()


def start(tmp_path: Path, store: SqliteStore | EtcdStore | None = None
          ) -> tuple[Api, grpc.Server]:
    """A server on ``store`` (a SQLite store in ``tmp_path`` if None)."""
    store = store or SqliteStore.open(tmp_path / "state" / "state.db")
    daemon = Daemon(store, Settings(state_dir=tmp_path / "state", runtime_dir=tmp_path / "run"))
    server, _ = make_server(daemon, max_workers=32)
    sock = tmp_path / "api.sock"
    server.add_insecure_port(f"unix:{sock}")
    server.start()
    return Api(grpc.insecure_channel(f"unix:{sock}"), sock, store, daemon), server


@contextmanager
def serving(tmp_path: Path, store: SqliteStore | EtcdStore | None = None) -> Iterator[Api]:
    """``start``, then the teardown every user needs: the channel closed, the server
    stopped, the store closed (also when the block fails)."""
    client, server = start(tmp_path, store)
    try:
        yield client
    finally:
        client.channel.close()
        server.stop(None).wait()
        client.store.close()
