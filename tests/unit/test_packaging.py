"""The Debian package's pure parts: where dynod finds its files, and a conffile that
documents every setting with its real default."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import tomllib
from pathlib import Path

from dynod import paths
from dynod.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
CONFFILE = ROOT / "packaging/debian/dynod.toml"


def test_buildpacks_in_the_tree_when_run_from_a_checkout() -> None:
    assert paths.in_source_tree()
    assert paths.buildpacks_dir(env={}) == ROOT / "buildpacks"
    assert (paths.buildpacks_dir(env={}) / "python/bin/compile").is_file()


def test_buildpacks_under_usr_share_when_installed(tmp_path: Path) -> None:
    # The package's venv: dynod/ sits in site-packages, with no pyproject.toml beside it.
    site = tmp_path / "site-packages"
    (site / "dynod").mkdir(parents=True)
    assert not paths.in_source_tree(site)
    assert paths.buildpacks_dir(env={}, tree=site) == Path("/usr/share/dynod/buildpacks")


def test_environment_overrides_both(tmp_path: Path) -> None:
    env = {"DYNOD_BUILDPACKS_DIR": str(tmp_path)}
    assert paths.buildpacks_dir(env=env) == tmp_path
    assert paths.buildpacks_dir(env=env, tree=tmp_path / "nowhere") == tmp_path


def test_conffile_documents_every_setting_with_its_default(tmp_path: Path) -> None:
    text = CONFFILE.read_text()
    # As shipped (all commented out) it means the defaults.
    assert load_settings(CONFFILE) == Settings()
    documented = dict(re.findall(r"^#(\w+) = (.+)$", text, re.M))
    defaults = {f.name: getattr(Settings(), f.name) for f in dataclasses.fields(Settings)}
    assert sorted(documented) == sorted(defaults), "add the new setting to " + str(CONFFILE)
    for key, raw in documented.items():
        value = tomllib.loads(f"{key} = {raw}")[key]
        default = defaults[key]
        assert value == (str(default) if isinstance(default, Path) else default), key
    # Uncommented, each line is accepted and changes nothing.
    uncommented = tmp_path / "dynod.toml"
    uncommented.write_text(re.sub(r"^#(\w+ = )", r"\1", text, flags=re.M))
    assert load_settings(uncommented) == Settings()


def test_make_deb_installs_its_build_dependencies(tmp_path: Path) -> None:
    """On a fresh machine `make deb` first installs what debian/control's Build-Depends
    names (apt-get build-dep), as `make up` and `make test` install theirs. Fakes of
    dpkg-checkbuilddeps, apt-get and dpkg-buildpackage record what the script asks."""
    fakes = tmp_path / "bin"
    fakes.mkdir()
    calls = tmp_path / "calls"
    scripts = {
        "dpkg-checkbuilddeps": "echo 'dpkg-checkbuilddeps: error: Unmet build dependencies: "
                               "debhelper-compat (= 13) help2man' >&2; exit 1",
        "apt-get": f'echo "apt-get $*" >> {calls}',
        "dpkg-buildpackage": "exit 3",  # stop there: the build itself is not the point
    }
    for name, body in scripts.items():
        (fakes / name).write_text(f"#!/bin/sh\n{body}\n")
        (fakes / name).chmod(0o755)
    proc = subprocess.run(
        [str(ROOT / "packaging/build-deb"), str(tmp_path / "out")],
        env={"PATH": f"{fakes}:/usr/bin:/bin", "TMPDIR": str(tmp_path)},
        capture_output=True, text=True, check=False)
    assert "-----> Installing the build dependencies (debhelper-compat (= 13) help2man)" \
        in proc.stdout
    assert calls.read_text().splitlines() == [
        "apt-get update -qq",
        f"apt-get build-dep -y -qq --no-install-recommends {ROOT}/packaging"]
    assert proc.returncode == 1 and "dpkg-buildpackage failed" in proc.stderr
