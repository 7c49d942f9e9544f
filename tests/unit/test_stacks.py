from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from dynod.build import stacks
from dynod.errors import FailedPrecondition, NotFound, Unavailable


def test_known_stacks_and_default() -> None:
    assert stacks.DEFAULT_STACK == "debian-13"
    assert stacks.get_stack("debian-13").suite == "trixie"
    assert stacks.get_stack("debian-12").suite == "bookworm"
    assert stacks.get_stack("debian-14").suite == "forky"
    assert {n: d.python for n, d in stacks.STACKS.items()} == {
        "debian-12": "3.11", "debian-13": "3.13", "debian-14": "3.14"}
    with pytest.raises(NotFound, match="available stacks: debian-12, debian-13, debian-14"):
        stacks.get_stack("heroku-24")


def test_debootstrap_argv(tmp_path: Path) -> None:
    defn = stacks.get_stack("debian-13")
    argv = stacks.debootstrap_argv(defn, Path("/x/tmp"), scripts=Path("/x/scripts"))
    assert argv[0] == "debootstrap"
    assert "--variant=minbase" in argv
    # /x/scripts has no trixie: a debootstrap older than the suite gets sid's script
    assert argv[-4:] == ["trixie", "/x/tmp", "http://deb.debian.org/debian",
                         "/x/scripts/sid"]
    update, install, clean = stacks.install_argvs(defn, Path("/x/tmp"))
    # apt runs chrooted, with a /proc of its own (OpenJDK's postinst runs java)
    assert update[:7] == ["unshare", "--mount", "--pid", "--fork", "--mount-proc=/x/tmp/proc",
                          "chroot", "/x/tmp"]
    assert update[-5:] == ["apt-get", "update", "-q", "-o", "Acquire::Check-Valid-Until=false"]
    assert "--no-install-recommends" in install
    for pkg in ("python3", "python3-venv", "nodejs", "npm", "git", "curl", "ca-certificates"):
        assert pkg in install
    assert clean[-2:] == ["apt-get", "clean"]
    # a debootstrap that knows the suite runs its own script
    (tmp_path / "trixie").touch()
    assert stacks.debootstrap_argv(defn, Path("/x/tmp"), scripts=tmp_path)[-1] == (
        "http://deb.debian.org/debian")


def test_cache_key_is_stable_and_follows_the_definition() -> None:
    a = stacks.get_stack("debian-13")
    assert stacks.cache_key(a) == stacks.cache_key(dataclasses.replace(a))
    assert len(stacks.cache_key(a)) == 16
    more = dataclasses.replace(a, packages=(*a.packages, "imagemagick"))
    assert stacks.cache_key(more) != stacks.cache_key(a)
    assert stacks.cache_key(stacks.get_stack("debian-12")) != stacks.cache_key(a)
    # what a stack is recorded to have is no content: the built stacks stay current
    assert stacks.cache_key(dataclasses.replace(a, python="3.99")) == stacks.cache_key(a)


def test_cache_dir_from_env() -> None:
    assert stacks.stack_cache_dir({}) == Path("/var/cache/dynod/stacks")
    assert stacks.stack_cache_dir({"DYNOD_STACK_CACHE": "/c"}) == Path("/c")


def test_python_version_from_link(tmp_path: Path) -> None:
    (tmp_path / "usr/bin").mkdir(parents=True)
    (tmp_path / "usr/bin/python3").symlink_to("python3.13")
    assert stacks.python_version(tmp_path) == "3.13"
    assert stacks.python_version(tmp_path / "nothing") is None


class FakeDebootstrap:
    """Stands in for debootstrap and cp: records argv, makes a tiny root."""

    def __init__(self, status: int = 0, python: str = "3.13") -> None:
        self.calls: list[list[str]] = []
        self.status = status
        self.python = python
        self.policy_during_apt: list[str] = []

    def __call__(self, argv: Sequence[str], on_line: Callable[[str], None]) -> int:
        self.calls.append(list(argv))
        if argv[0] == "debootstrap":
            target = Path([a for a in argv[1:] if not a.startswith("--")][1])
            (target / "etc").mkdir(parents=True)
            (target / "usr/bin").mkdir(parents=True)
            (target / "usr/bin/python3").symlink_to(f"python{self.python}")
            (target / "var/cache/apt/archives").mkdir(parents=True)
            (target / "var/cache/apt/archives/x.deb").write_text("deb")
            on_line("I: Base system installed successfully.")
            (target / "debootstrap").mkdir()
            (target / "debootstrap/debootstrap.log").write_text("dpkg: error processing npm\n")
            return self.status
        if argv[0] == "unshare":
            policy = Path(argv[argv.index("chroot") + 1]) / stacks.POLICY_RC_D
            self.policy_during_apt.append(policy.read_text() if policy.exists() else "")
            return 0
        if argv[0] == "cp":
            src, dst = Path(argv[-2].removesuffix("/.")), Path(argv[-1])
            shutil.copytree(src, dst, symlinks=True, dirs_exist_ok=True)
            return 0
        raise AssertionError(argv)


def test_build_then_current_then_cached(tmp_path: Path) -> None:
    defn = stacks.get_stack("debian-13")
    cache = tmp_path / "cache"
    fake = FakeDebootstrap()
    lines: list[str] = []
    root = stacks.build_stack(
        defn, tmp_path / "state", cache=cache, runner=fake, on_line=lines.append,
        local_ca_dir=tmp_path / "no-cas",
    )
    assert root == tmp_path / "state/stacks/debian-13"
    marker = json.loads((root / stacks.MARKER).read_text())
    assert marker["key"] == stacks.cache_key(defn)
    assert marker["packages"] == list(defn.packages)
    assert not (root / "var/cache/apt/archives/x.deb").exists()
    assert stacks.is_current(stacks.cache_entry(cache, defn), defn)
    assert [c[0] for c in fake.calls] == ["debootstrap", "unshare", "unshare", "unshare",
                                            "cp"]
    # while apt ran, policy-rc.d kept servers in the packages (nginx) from starting;
    # the stack keeps none
    assert all(text.rstrip().endswith("exit 101") for text in fake.policy_during_apt)
    assert len(fake.policy_during_apt) == 3
    assert not (root / stacks.POLICY_RC_D).exists()
    # no leftovers beside the stack
    assert sorted(p.name for p in (tmp_path / "state/stacks").iterdir()) == ["debian-13"]

    # current: nothing runs
    stacks.build_stack(defn, tmp_path / "state", cache=cache, runner=fake,
                       local_ca_dir=tmp_path / "no-cas")
    assert len(fake.calls) == 5

    # another state dir: copied from the cache, no debootstrap
    other = stacks.build_stack(defn, tmp_path / "other", cache=cache, runner=fake,
                               local_ca_dir=tmp_path / "no-cas")
    assert [c[0] for c in fake.calls][-2:] == ["cp", "cp"]
    assert len(fake.calls) == 6
    assert stacks.is_current(other, defn)
    assert stacks.require_stack(tmp_path / "other", "debian-13") == other


def test_a_stack_whose_python_is_not_its_definitions_is_refused(tmp_path: Path) -> None:
    # forky moved on from 3.14: the python buildpack would name the wrong stack
    defn = stacks.get_stack("debian-14")
    with pytest.raises(Unavailable, match=r'stack "debian-14": its python3 is 3\.15, but its '
                       r"definition says 3\.14; correct python= of debian-14"):
        stacks.build_stack(defn, tmp_path, runner=FakeDebootstrap(python="3.15"),
                           local_ca_dir=tmp_path / "no-cas")
    assert list((tmp_path / "stacks").iterdir()) == []


def test_failed_debootstrap_leaves_nothing(tmp_path: Path) -> None:
    defn = stacks.get_stack("debian-12")
    lines: list[str] = []
    with pytest.raises(Unavailable, match="debootstrap bookworm"):
        stacks.build_stack(defn, tmp_path, runner=FakeDebootstrap(status=1), on_line=lines.append)
    assert "       dpkg: error processing npm" in lines
    assert list((tmp_path / "stacks").iterdir()) == []
    with pytest.raises(FailedPrecondition, match="stacks:build debian-12"):
        stacks.require_stack(tmp_path, "debian-12")


def test_local_cas_are_trusted_once_and_follow_the_host(tmp_path: Path) -> None:
    host = tmp_path / "host-cas"
    host.mkdir()
    (host / "proxy.crt").write_text("PROXY CA")
    root = tmp_path / "stack"
    root.mkdir()
    calls: list[list[str]] = []

    def runner(argv: Sequence[str], _on_line: Callable[[str], None]) -> int:
        calls.append(list(argv))
        return 0

    assert stacks.trust_local_cas(root, host_cas=host, runner=runner)
    inside = root / "usr/local/share/ca-certificates"
    assert (inside / "proxy.crt").read_text() == "PROXY CA"
    assert calls == [["chroot", str(root), "update-ca-certificates", "--fresh"]]
    # unchanged: nothing runs (a read-only stack stays untouched)
    assert not stacks.trust_local_cas(root, host_cas=host, runner=runner)
    assert len(calls) == 1
    # the host's set changed: a removed CA leaves the stack too
    (host / "proxy.crt").unlink()
    (host / "corp.crt").write_text("CORP CA")
    assert stacks.trust_local_cas(root, host_cas=host, runner=runner)
    assert sorted(p.name for p in inside.iterdir()) == ["corp.crt"]
