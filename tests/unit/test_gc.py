"""gc's retention: the slugs of each app's last deploys, counted as distinct slugs, so
that config changes and restarts (releases too) never take older code out of reach of a
rollback; older slugs go."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from pathlib import Path

from dynod.control import apps, config_vars, releases, slugs
from dynod.model.events import EventBus
from dynod.runtime import gc
from dynod.store.sqlite import SqliteStore


def _tgz(text: str) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        data = text.encode()
        info = tarfile.TarInfo("./app/index.html")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0)


def _deploy(store: SqliteStore, events: EventBus, slugs_dir: Path, text: str) -> str:
    blob = _tgz(text)
    checksum = "sha256:" + hashlib.sha256(blob).hexdigest()
    slug = slugs.create_slug(store, "shop", checksum=checksum, size=len(blob),
                             process_types={"web": "true"})
    slugs.upload_slug(store, slugs_dir, "shop", slug.id, iter([blob]))
    releases.create_release(store, events, "shop", slug.id, "jane")
    return checksum.removeprefix("sha256:")


def test_config_changes_keep_every_recent_deploy_in_reach(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path / "state.db")
    events = EventBus()
    apps.create_app(store, events, "shop", "jane")
    deployed = [_deploy(store, events, tmp_path / "slugs", f"d{i}") for i in range(4)]
    for i in range(12):  # more releases than the retention, none with new code
        config_vars.set_config(store, events, "shop", {"ROUND": str(i)}, "jane")
    kept, referenced = gc.checksums(store, keep=3)
    assert referenced == set(deployed)
    assert kept == set(deployed[1:])  # the three newest deploys; d0 goes
    assert gc.checksums(store, keep=1)[0] == {deployed[-1]}
