"""One-off dynos and the release phase: the pure parts (commands, -e, names, unit
properties) and the release ledger's statuses, without systemd."""

from __future__ import annotations

import gzip
import hashlib
import io
import random
import tarfile
from pathlib import Path

import pytest

from dynod.cli import run as cli_run
from dynod.cli.client import CliError
from dynod.control import apps, config_vars, formation, releases, slugs
from dynod.errors import InvalidArgument
from dynod.model.events import EventBus
from dynod.model.formation import ScaleChange
from dynod.model.releases import ReleaseStatus
from dynod.runtime import oneoff
from dynod.settings import load_settings
from dynod.store import reads
from dynod.store.sqlite import SqliteStore
from dynod.system.unit_properties import DynoSpec, PidMode, unit_properties


@pytest.mark.parametrize(("command", "expected"), [
    ("worker 42", "python work.py 42"),
    ("worker", "python work.py"),
    ("bash", "bash"),
    ("workers 1", "workers 1"),
    ("echo worker", "echo worker"),
])
def test_a_procfile_type_as_the_command(command: str, expected: str) -> None:
    assert oneoff.resolve_command(command, {"worker": "python work.py"}) == expected


def test_command_line_like_herokus_cli() -> None:
    assert cli_run.command_line(["echo $DYNO"]) == "echo $DYNO"
    assert cli_run.command_line(["--", "python3", "-c", "print(1)"]) == "python3 -c 'print(1)'"
    with pytest.raises(CliError, match="no command"):
        cli_run.command_line([])


def test_env_option() -> None:
    assert cli_run.parse_env("A=1;B=two=2; ;C=") == {"A": "1", "B": "two=2", "C": ""}
    with pytest.raises(CliError, match="KEY=VALUE"):
        cli_run.parse_env("A")
    with pytest.raises(CliError, match="KEY=VALUE"):
        cli_run.parse_env("=1")


def test_dyno_numbers_are_four_digits_and_free() -> None:
    rng = random.Random(1)  # noqa: S311 - reproducible, not secret
    used: set[int] = set()
    for _ in range(200):
        n = oneoff.pick_number(used, rng)
        assert 1000 <= n <= 9999 and n not in used
        used.add(n)


def test_stdio_descriptors_become_unit_properties() -> None:
    base = DynoSpec(app="a", process_type="run", number=1234, release=3, command="bash",
                    root=Path("/r"))
    names = [k for k, _ in unit_properties(base, PidMode.PRIVATE_PIDS)]
    assert "StandardInputFileDescriptor" not in names
    props = unit_properties(DynoSpec(**{**base.__dict__, "stdio": (7, 8, 9)}),
                            PidMode.PRIVATE_PIDS)
    got = {k: v for k, v in props if k.startswith("Standard")}
    assert got == {"StandardInputFileDescriptor": 7, "StandardOutputFileDescriptor": 8,
                   "StandardErrorFileDescriptor": 9}
    # A terminal or pipes stay the command's own: dyno-init forwards only the journal.
    [[(_, argv, _)]] = [v for k, v in props if k == "ExecStart"]
    assert "--journal" not in argv
    [[(_, argv, _)]] = [v for k, v in unit_properties(base, PidMode.PRIVATE_PIDS)
                        if k == "ExecStart"]
    assert argv[1:5] == ["--no-pidns", "--no-cgroupns", "--journal", "run.1234"]


def test_oneoff_limit_setting(tmp_path: Path) -> None:
    path = tmp_path / "dynod.toml"
    assert load_settings(path).oneoff_limit == 5
    path.write_text("oneoff_limit = 2\n")
    assert load_settings(path).oneoff_limit == 2
    path.write_text('oneoff_limit = "2"\n')
    with pytest.raises(InvalidArgument, match="whole number"):
        load_settings(path)


def _slug(store: SqliteStore, tmp_path: Path, app: str, types: dict[str, str]) -> str:
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb") as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        info = tarfile.TarInfo("./app")
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
    data = buf.getvalue()
    slug = slugs.create_slug(store, app, checksum="sha256:" + hashlib.sha256(data).hexdigest(),
                             size=len(data), process_types=types)
    slugs.upload_slug(store, tmp_path / "slugs", app, slug.id, [data])
    return slug.id


def test_a_release_command_makes_pending_releases_and_current_is_the_last_success(
        tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path / "state.db")
    apps.create_app(store, EventBus(), "shop", "alice")
    plain = _slug(store, tmp_path, "shop", {"web": "serve"})
    v2 = releases.create_release(store, EventBus(), "shop", plain, "alice")
    assert v2.status is ReleaseStatus.SUCCEEDED
    with_release = _slug(store, tmp_path, "shop", {"web": "serve", "release": "migrate"})
    v3 = releases.create_release(store, EventBus(), "shop", with_release, "alice")
    assert v3.status is ReleaseStatus.PENDING
    assert releases.get_release(store, "shop").version == 2  # pending never runs
    with store.read() as tx:
        assert reads.release_command(tx, v3) == "migrate"
        assert reads.release_command(tx, v2) is None
    # A config change is based on the newest release, and runs the command again.
    v4 = config_vars.set_config(store, EventBus(), "shop", {"A": "1"}, "alice")
    assert v4.status is ReleaseStatus.PENDING and v4.slug_id == with_release
    releases.set_status(store, "shop", 3, ReleaseStatus.FAILED)
    releases.set_status(store, "shop", 4, ReleaseStatus.SUCCEEDED)
    assert releases.get_release(store, "shop").version == 4
    assert config_vars.get_config(store, "shop").config == {"A": "1"}
    assert [r.status for r in releases.list_releases(store, "shop", 3)] == [
        ReleaseStatus.SUCCEEDED, ReleaseStatus.FAILED, ReleaseStatus.SUCCEEDED]
    # A rollback to a release with a release command is pending too.
    v5 = releases.rollback(store, EventBus(), "shop", 3, "alice")
    assert v5.status is ReleaseStatus.PENDING
    store.close()


def test_release_cannot_be_scaled(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path / "state.db")
    apps.create_app(store, EventBus(), "shop", "alice")
    releases.create_release(store, EventBus(), "shop", _slug(store, tmp_path, "shop",
                                                 {"web": "serve", "release": "migrate"}),
                            "alice")
    rows = {p.type: p.quantity for p in formation.get_formation(store, "shop")}
    assert rows == {"release": 0, "web": 1}
    with pytest.raises(InvalidArgument, match="cannot be scaled"):
        formation.scale(store, EventBus(), "shop", [ScaleChange("release", quantity=1)], "alice")
    formation.resize(store, EventBus(), "shop", {"release": "standard-2x"}, "alice")
    store.close()
