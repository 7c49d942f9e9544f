"""A dyno runs on the stack its slug was built on, not the app's current one nor the
default: a venv made with forky's python3.14 does not run on trixie (issue 14). The
formation, one-off dynos and the release phase alike; a rollback goes back to the old
release's stack."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from dynod.control import apps, builds, releases, slugs
from dynod.model.dynos import DynoMeta, DynoRef
from dynod.model.events import EventBus
from dynod.model.releases import RELEASE_TYPE
from dynod.runtime import oneoff, plan
from dynod.runtime.oneoff import OneOffs, Stdio
from dynod.runtime.supervisor import read_desired
from dynod.settings import Settings
from dynod.store.sqlite import SqliteStore
from dynod.system import journal

CHECKSUM = "sha256:" + "0" * 64


def _release(store: SqliteStore, stack: str | None) -> int:
    slug = slugs.create_slug(store, "shop", checksum=CHECKSUM, size=1,
                             process_types={"web": "gunicorn app:app"}, stack=stack)
    with store.write() as tx:  # uploaded (the tarball itself is not needed here)
        tx.put_slug(replace(slug, uploaded=True))
    return releases.create_release(store, EventBus(), "shop", slug.id, "alice").version


def _start_stack(store: SqliteStore) -> str:
    want = read_desired(store)["shop"]
    starts = [a for a in plan.plan_app(want, [], plan.Observed(0.0, 0.0))
              if isinstance(a, plan.Start)]
    assert len(starts) == 1  # web.1
    return starts[0].stack


def test_the_formation_runs_each_release_on_its_slugs_stack(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path / "state.db")
    apps.create_app(store, EventBus(), "shop", "alice")
    old = _release(store, None)  # built on the app's stack: debian-13
    assert _start_stack(store) == "debian-13"
    # stack:set changes the next build's stack; the running release stays where it is
    builds.set_stack(store, "shop", "debian-14")
    assert _start_stack(store) == "debian-13"
    _release(store, "debian-14")  # the build on forky, released
    assert _start_stack(store) == "debian-14"
    releases.rollback(store, EventBus(), "shop", old, "alice")
    assert _start_stack(store) == "debian-13"
    store.close()


class RecordingHost:
    def __init__(self) -> None:
        self.stacks: list[str] = []

    def start(self, ref: DynoRef, **kw: Any) -> DynoMeta:
        self.stacks.append(kw["stack"])
        return DynoMeta(ref.app, ref.process_type, ref.number, ref.generation,
                        kw["release"], kw["command"], kw["size"], "10.0.0.2", 5000)


def test_one_off_dynos_and_the_release_phase_run_on_their_releases_stack(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(journal, "app_event", lambda *a, **k: None)
    monkeypatch.setattr(oneoff.OneOffs, "_dyno_dir", lambda self, ref: tmp_path / ref.key)
    store = SqliteStore.open(tmp_path / "state.db")
    apps.create_app(store, EventBus(), "shop", "alice", stack="debian-12")
    v_old = _release(store, None)
    v_new = _release(store, "debian-14")
    host = RecordingHost()
    ones = OneOffs(store, Settings(state_dir=tmp_path, runtime_dir=tmp_path),
                   lambda: host)  # type: ignore[arg-type,return-value]
    ones.start("shop", "cat /etc/debian_version", user="alice", stdio=Stdio.PIPES)
    ones.start("shop", "migrate", user="alice", stdio=Stdio.PIPES,
               process_type=RELEASE_TYPE, version=v_old)
    # the current release (v_new) for `dynoctl run`, v_old's own for its release phase
    assert host.stacks == ["debian-14", "debian-12"]
    assert v_new > v_old
    store.close()
