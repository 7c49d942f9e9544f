"""dynoctl against an in-process daemon: Heroku's output formats, --json, the app from
the git remote, and what a caller outside group dynod sees."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from dynod.api.daemon import Daemon
from dynod.api.server import start_api
from dynod.cli import main as dynoctl
from dynod.cli.output import shell_quote
from dynod.model.builds import BUILTIN_BUILDPACKS
from dynod.settings import Settings
from dynod.store.sqlite import SqliteStore
from dynod.v1 import apps_pb2, apps_pb2_grpc
from tests.unit.control_plane.harness import Api, make_slug


@pytest.fixture
def cli(api: Api, monkeypatch: pytest.MonkeyPatch,
        tmp_path_factory: pytest.TempPathFactory) -> Api:
    monkeypatch.setenv("DYNOD_SOCKET", str(api.socket))
    # Outside any git work tree: apps:create adds a git remote to the one it runs in.
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))
    return api


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = dynoctl.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_apps_and_config_flow(cli: Api, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "apps") == (0, "You have no apps.\n", "")
    code, out, err = run(capsys, "apps:create", "shop", "--no-remote")
    assert (code, err) == (0, "Creating ⬢ shop... done\n")
    assert re.fullmatch(r"https://shop\.dynod\.localhost/ \| dynod@[\w.-]+:shop\.git\n", out), out
    code, out, err = run(capsys, "config:set", "-a", "shop", "RAILS_ENV=staging", "RACK_ENV=a=b")
    assert err == "Setting RAILS_ENV, RACK_ENV and restarting ⬢ shop... done, v2\n"
    assert out == "RAILS_ENV: staging\nRACK_ENV:  a=b\n"
    code, out, _ = run(capsys, "config", "-a", "shop")
    assert out == "=== ⬢ shop Config Vars\nRACK_ENV:  a=b\nRAILS_ENV: staging\n"
    assert run(capsys, "config:get", "-a", "shop", "RACK_ENV")[1] == "a=b\n"
    assert json.loads(run(capsys, "config", "-a", "shop", "--json")[1]) == {
        "RACK_ENV": "a=b", "RAILS_ENV": "staging"}
    code, _, err = run(capsys, "config:unset", "-a", "shop", "RACK_ENV")
    assert err == "Unsetting RACK_ENV and restarting ⬢ shop... done, v3\n"
    code, out, _ = run(capsys, "releases", "-a", "shop")
    lines = out.splitlines()
    assert lines[0] == "=== ⬢ shop Releases - Current: v3"
    assert lines[1].split("  ")[:2] == ["v3", "Remove RACK_ENV config vars"]
    assert lines[2].startswith("v2  Set RACK_ENV, RAILS_ENV config vars  root  ")
    assert lines[3].startswith("v1  Initial release")
    assert "(~ " in lines[3]
    assert len(run(capsys, "releases", "-a", "shop", "-n", "1")[1].splitlines()) == 2
    code, _, err = run(capsys, "rollback", "-a", "shop")
    assert err.splitlines() == [
        "Rolling back ⬢ shop to v2... done, v4",
        " !    Rollback affects code and config vars; it doesn't add or remove addons.",
        " !    To undo, run: dynoctl rollback v3"]
    code, out, _ = run(capsys, "releases:info", "-a", "shop", "v4")
    assert out.splitlines()[0] == "=== Release v4"
    assert "Change:  Rollback to v2" in out
    assert out.endswith("=== v4 Config vars\nRACK_ENV:  a=b\nRAILS_ENV: staging\n")
    releases = json.loads(run(capsys, "releases", "-a", "shop", "--json")[1])
    assert [r["version"] for r in releases] == [4, 3, 2, 1]
    code, _, err = run(capsys, "apps:destroy", "shop")
    assert code == 1
    assert "re-run with --confirm shop" in err
    assert run(capsys, "apps:destroy", "shop", "--confirm", "shop")[2] == \
        "Destroying ⬢ shop (including all add-ons)... done\n"


def test_ps_and_slugs_deploy(cli: Api, capsys: pytest.CaptureFixture[str],
                             tmp_path: Path) -> None:
    run(capsys, "apps:create", "shop")
    code, _, err = run(capsys, "ps:scale", "-a", "shop")
    assert (code, err) == (1, " !    No process types on ⬢ shop.\n !    Upload a Procfile to "
                              "add process types (dynoctl slugs:deploy, or git push).\n")
    tgz = tmp_path / "slug.tgz"
    tgz.write_bytes(make_slug())
    code, _, err = run(capsys, "slugs:deploy", "-a", "shop", str(tgz),
                       "--process-type", "web=serve $PORT", "--process-type", "worker=work")
    assert code == 0, err
    assert err.splitlines()[-1] == "Releasing to ⬢ shop... done, v2"
    assert run(capsys, "ps:scale", "-a", "shop")[1] == "web=1:Standard-1X worker=0:Standard-1X\n"
    code, _, err = run(capsys, "ps:scale", "-a", "shop", "web=2:standard-2x", "worker+1")
    assert err == ("Scaling dynos... done, now running web at 2:Standard-2X, "
                   "worker at 1:Standard-1X\n")
    code, _, err = run(capsys, "ps:scale", "-a", "shop", "clock=1")
    assert (code, err) == (1, ' !    app "shop": no process type "clock" in release v2; '
                              "declared types: web, worker\n")
    code, _, err = run(capsys, "ps:scale", "-a", "shop", "web")
    assert code == 1
    assert "web is invalid" in err
    code, out, _ = run(capsys, "ps:type", "-a", "shop", "performance-m")
    assert out.splitlines()[1:] == ["Type    Size           Qty  Memory",
                                    "web     Performance-M  2    2560 MB",
                                    "worker  Performance-M  1    2560 MB"]
    info = json.loads(run(capsys, "apps:info", "-a", "shop", "--json")[1])
    assert info["dynos"] == {"web": 2, "worker": 1}


def test_stack_and_stack_set_in_herokus_spelling(cli: Api,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "apps:create", "shop", "--no-remote")
    assert run(capsys, "stack", "-a", "shop") == (
        0, "=== ⬢ shop Available Stacks\n  debian-12\n* debian-13\n  debian-14\n", "")
    assert run(capsys, "stack:set", "debian-14", "-a", "shop") == (
        0, "You will need to redeploy ⬢ shop for the change to take effect.\n"
           "Run git push dynod main to trigger a new build on ⬢ shop.\n",
        "Setting stack to debian-14... done\n")
    assert "* debian-14" in run(capsys, "apps:stacks", "-a", "shop")[1]
    code, _, err = run(capsys, "stack:set", "heroku-24", "-a", "shop")
    assert (code, err) == (1, ' !    stack "heroku-24" does not exist; available stacks: '
                              "debian-12, debian-13, debian-14\n")


def test_app_from_the_dynod_git_remote(cli: Api, capsys: pytest.CaptureFixture[str],
                                       tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run(capsys, "apps:create", "shop")
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "remote", "add", "dynod",
                    "dynod@example.com:shop.git"], check=True)
    monkeypatch.chdir(tmp_path)
    assert run(capsys, "config:set", "A=1")[0] == 0
    assert run(capsys, "config:get", "A")[1] == "1\n"
    monkeypatch.chdir(tmp_path.parent)
    code, _, err = run(capsys, "config")
    assert code == 1
    assert "no app specified; use -a APP" in err


def test_apps_create_adds_the_git_remote(cli: Api, capsys: pytest.CaptureFixture[str],
                                         tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "apps:create", "shop")
    url = out.strip().split(" | ")[1]
    assert code == 0 and err == "Creating ⬢ shop... done\nGit remote dynod added\n", err
    got = subprocess.run(["git", "remote", "get-url", "dynod"], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert got == url and url.endswith(":shop.git")
    # A remote of that name is never changed behind the user's back.
    code, _, err = run(capsys, "apps:create", "other")
    assert code == 0 and "git remote dynod already points at " + url in err, err
    code, _, err = run(capsys, "apps:create", "third", "--remote", "staging")
    assert "Git remote staging added" in err, err
    assert run(capsys, "apps:create", "fourth", "--no-remote")[2] == "Creating ⬢ fourth... done\n"
    remotes = subprocess.run(["git", "remote"], capture_output=True, text=True,
                             check=True).stdout.split()
    assert sorted(remotes) == ["dynod", "staging"]


def test_usage_errors(cli: Api, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "apps:create", "shop")
    assert run(capsys, "config:set", "-a", "shop", "FOO")[2] == \
        " !    FOO is invalid. Must be in the format FOO=bar.\n"
    assert run(capsys, "rollback", "-a", "shop", "vx")[2] == \
        " !    vx is not a release version; use vN, e.g. v3\n"
    assert run(capsys, "config:set", "-a", "shop", "PORT=1")[2].startswith(
        " !    config key 'PORT' is reserved")


def test_daemon_down(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DYNOD_SOCKET", str(tmp_path / "none.sock"))
    code, _, err = run(capsys, "apps")
    assert code == 1
    assert err.startswith(f" !    dynod is not running: {tmp_path / 'none.sock'} does not exist")


def test_an_unavailable_error_from_dynod_is_shown_not_called_a_dead_daemon(
        cli: Api, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from dynod import errors  # noqa: PLC0415 - patched for this test only
    from dynod.control import apps  # noqa: PLC0415 - patched for this test only

    def busy(_store: object) -> None:
        raise errors.Unavailable("systemd did not answer in time; try again")

    monkeypatch.setattr(apps, "list_apps", busy)
    assert run(capsys, "apps") == (1, "", " !    systemd did not answer in time; try again\n")


@pytest.mark.parametrize(("value", "quoted"), [
    ("plain", "plain"), ("two words", "'two words'"), ("it's", '"it\'s"'),
    ("a\nb$", '"a\\nb\\$"'), ("x=y", "'x=y'")])
def test_shell_quoting(value: str, quoted: str) -> None:
    assert shell_quote(value) == quoted


# --- a caller outside group dynod ---------------------------------------------------

NOBODY = 65534

CHILD = """
import sys, grpc
from dynod.cli import main
from dynod.v1 import apps_pb2, apps_pb2_grpc
sock = sys.argv[1]
try:
    apps_pb2_grpc.AppsStub(grpc.insecure_channel("unix:" + sock)).List(
        apps_pb2.ListAppsRequest(), timeout=10)
    print("CODE OK")
except grpc.RpcError as exc:
    print("CODE", exc.code().name, exc.details())
sys.exit(main.main(["apps"]))
"""


@pytest.fixture
def front(tmp_path: Path) -> Iterator[Path]:
    runtime = Path(tempfile.mkdtemp(prefix="dynod-front-"))
    runtime.chmod(0o755)
    store = SqliteStore.open(tmp_path / "state.db")
    daemon = Daemon(store, Settings(state_dir=tmp_path, runtime_dir=runtime))
    # A group nobody is in: only root may call.
    server = start_api(runtime / "dynod.sock", "root", daemon)
    try:
        yield runtime / "dynod.sock"
    finally:
        server.stop(0)
        store.close()


def as_nobody(sock: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "DYNOD_SOCKET": str(sock), "HOME": "/"}
    return subprocess.run([sys.executable, "-c", CHILD, str(sock)], user=NOBODY, group=NOBODY,
                          extra_groups=[], env=env, capture_output=True, text=True,
                          timeout=60, check=False, cwd="/")


@pytest.mark.root
def test_caller_outside_the_group_cannot_connect(front: Path) -> None:
    """The socket is 0660 root:<group>: dynoctl says so before trying."""
    proc = as_nobody(front)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith(f" !    permission denied on {front}; run as root or join "
                                  "group dynod")


@pytest.mark.root
def test_caller_outside_the_group_is_refused(front: Path) -> None:
    """Past the file mode, the peer check refuses with PERMISSION_DENIED and a message."""
    front.chmod(0o666)
    proc = as_nobody(front)
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout.startswith("CODE PERMISSION_DENIED user nobody (uid 65534) may not use "
                                  "dynod: only root and members of the API group may"), proc.stdout
    assert proc.stderr.startswith(" !    user nobody (uid 65534) may not use dynod")
    # root still may.
    with grpc.insecure_channel(f"unix:{front}") as channel:
        assert apps_pb2_grpc.AppsStub(channel).List(apps_pb2.ListAppsRequest()).apps == []


def test_buildpacks_lists_the_builtin_ones_and_what_they_detect(
        cli: Api, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "apps:create", "shop", "--no-remote")
    code, out, _ = run(capsys, "buildpacks", "-a", "shop")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "shop has no Buildpack URL set."
    assert lines[2] == "=== Built-in buildpacks, in detection order (buildpacks:set NAME)"
    listed = [line.split()[0] for line in lines[3:]]
    assert listed == ["apt"] + [f"heroku/{n}" for n in BUILTIN_BUILDPACKS
                                if n not in ("procfile", "apt")] + ["procfile"]
    assert any(re.fullmatch(r"heroku/go +go\.mod", line) for line in lines), lines
    # Both spellings set one; the listing then names it.
    for given in ("heroku/php", "php"):
        assert run(capsys, "buildpacks:set", "-a", "shop", given)[0] == 0
        assert run(capsys, "buildpacks", "-a", "shop")[1].splitlines()[:2] == [
            "=== shop Buildpack URL", "1. php"]
    doc = json.loads(run(capsys, "buildpacks", "-a", "shop", "--json")[1])
    assert doc["buildpacks"] == ["php"]
    assert {"name": "go", "detects": "go.mod"} in doc["builtin"]
