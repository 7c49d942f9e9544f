"""Language layers: which a source needs, how one is made, and the lower dirs they give."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from dynod.build import layers, stacks
from dynod.errors import FailedPrecondition, InvalidArgument, Unavailable
from dynod.model.slugs import LAYER_NAMES
from tests.unit.test_stacks import FakeDebootstrap

BUILDPACKS = Path(__file__).resolve().parents[2] / "buildpacks"

# Source trees and the layers they need (the apps in examples/ among them).
CASES: list[tuple[tuple[str, ...], tuple[str, ...]]] = [
    (("requirements.txt", "app.py"), ()),
    (("package.json",), ()),
    (("Procfile",), ()),
    (("Gemfile", "Gemfile.lock", "config.ru"), ("ruby",)),
    (("pom.xml", "src/Main.java"), ("jvm",)),
    (("pom.yml",), ("jvm",)),
    (("project.clj",), ("jvm",)),
    (("gradlew",), ("jvm",)),
    (("build.gradle.kts",), ("jvm",)),
    (("build.sbt",), ("jvm",)),
    (("project/build.properties",), ("jvm",)),
    (("project/Build.scala",), ("jvm",)),
    (("composer.json", "composer.lock"), ("php",)),
    (("index.php",), ("php",)),
    (("go.mod", "main.go"), ("go",)),
    (("Godeps/Godeps.json",), ("go",)),
    (("Gopkg.lock",), ("go",)),
    # a Rails app with a package.json; a PHP app with a Gemfile for its tooling
    (("Gemfile", "package.json", "bin/rails"), ("ruby",)),
    (("composer.json", "Gemfile"), ("ruby", "php")),
    # only the top directory counts, as in bin/detect
    (("sub/Gemfile", "sub/pom.xml", "a/b/go.mod"), ()),
]


@pytest.mark.parametrize(("files", "wanted"), CASES)
def test_layers_for_a_source(files: tuple[str, ...], wanted: tuple[str, ...]) -> None:
    assert layers.layers_for(set(files)) == wanted


@pytest.mark.parametrize(("files", "_wanted"), CASES)
def test_layers_follow_the_buildpacks_own_detect(tmp_path: Path, files: tuple[str, ...],
                                                 _wanted: tuple[str, ...]) -> None:
    """The Python rule and each built-in's bin/detect agree on every case."""
    for name in files:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x\n")
    needed = set(layers.layers_for(set(files)))
    for name, layer in layers.LAYERS.items():
        detected = [bp for bp in layer.buildpacks
                    if subprocess.run([BUILDPACKS / bp / "bin/detect", tmp_path],
                                      capture_output=True, check=False).returncode == 0]
        assert bool(detected) == (name in needed), (name, files, detected)


def test_a_set_buildpack_brings_its_layer() -> None:
    assert layers.layers_for({"app.rb"}, ["ruby"]) == ("ruby",)
    assert layers.layers_for(set(), ["https://github.com/x/y.git", "clojure"]) == ("jvm",)
    assert layers.layers_for({"requirements.txt"}, ["python"]) == ()


def test_every_built_in_buildpack_with_a_layer_exists() -> None:
    for layer in layers.LAYERS.values():
        for bp in layer.buildpacks:
            assert (BUILDPACKS / bp / "bin/compile").is_file(), bp


def _tar(path: Path, members: dict[str, bytes | None]) -> Path:
    with tarfile.open(path, "w") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                archive.addfile(info)
            else:
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    return path


def test_source_files_lists_two_levels_of_files(tmp_path: Path) -> None:
    tar = _tar(tmp_path / "s.tar", {"./Gemfile": b"x", "./project/": None,
                                    "./project/build.properties": b"y",
                                    "./a/b/go.mod": b"z", "./pom.xml/": None})
    assert layers.source_files(tar) == {"Gemfile", "project/build.properties"}
    (tmp_path / "bad.tar").write_bytes(b"not a tar" * 100)
    with pytest.raises(InvalidArgument, match="source archive cannot be read"):
        layers.source_files(tmp_path / "bad.tar")


class FakeApt(FakeDebootstrap):
    """debootstrap, cp, and the layer's install script (which writes into the upper)."""

    def __init__(self, status: int = 0, layer_status: int = 0) -> None:
        super().__init__(status)
        self.layer_status = layer_status
        self.scripts: list[str] = []

    def __call__(self, argv: Sequence[str], on_line: Callable[[str], None]) -> int:
        if argv[0] == "unshare" and argv[-3:-1] == ["sh", "-c"]:
            script = argv[-1]
            self.scripts.append(script)
            upper = Path(script.split("upperdir=")[1].split(",")[0])
            (upper / "usr/lib/jvm").mkdir(parents=True)
            (upper / "var/lib/apt/lists").mkdir(parents=True)
            (upper / "var/lib/apt/lists/deb.debian.org_dists").write_text("list")
            return self.layer_status
        return super().__call__(argv, on_line)


def test_layer_build_current_cached_and_lowers(tmp_path: Path) -> None:
    defn = stacks.get_stack("debian-13")
    state, cache = tmp_path / "state", tmp_path / "cache"
    fake = FakeApt()
    with pytest.raises(FailedPrecondition, match="stacks:build debian-13"):
        layers.build_layer(defn, "jvm", state, runner=fake)  # no stack yet
    base = stacks.build_stack(defn, state, cache=cache, runner=fake,
                              local_ca_dir=tmp_path / "no-cas")
    lines: list[str] = []
    root = layers.build_layer(defn, "jvm", state, cache=cache, runner=fake,
                              on_line=lines.append)
    assert root == state / "stacks/debian-13+jvm"
    assert lines == ["-----> Installing the jvm layer of debian-13 (OpenJDK, Maven, "
                     "Leiningen: 6 packages with apt)"]
    script = fake.scripts[0]
    assert f"lowerdir={base}," in script
    assert "apt-get install -q -y --no-install-recommends default-jdk-headless maven" in script
    assert script.index("policy-rc.d") < script.index("apt-get update")
    assert (root / "usr/lib/jvm").is_dir()
    assert not (root / "var/lib/apt/lists/deb.debian.org_dists").exists()  # pruned
    marker = json.loads((root / "etc/dynod-layers/jvm.json").read_text())
    assert marker["packages"] == list(layers.LAYERS["jvm"].packages)
    assert sorted(p.name for p in (state / "stacks").iterdir()) == ["debian-13",
                                                                     "debian-13+jvm"]
    assert layers.built_layers(state, "debian-13") == ("jvm",)
    assert layers.lowers(state, "debian-13", ["jvm"]) == (root, base)
    assert layers.lowers(state, "debian-13", []) == (base,)
    with pytest.raises(FailedPrecondition, match="ruby layer of stack \"debian-13\" is not"):
        layers.lowers(state, "debian-13", ["ruby"])
    with pytest.raises(InvalidArgument, match="layers: ruby, jvm, php, go"):
        layers.lowers(state, "debian-13", ["cobol"])

    # current: nothing runs; another state dir copies it from the cache
    calls = len(fake.calls)
    layers.build_layer(defn, "jvm", state, cache=cache, runner=fake)
    assert len(fake.calls) == calls
    other = tmp_path / "other"
    stacks.build_stack(defn, other, cache=cache, runner=fake, local_ca_dir=tmp_path / "no-cas")
    layers.build_layer(defn, "jvm", other, cache=cache, runner=fake)
    assert len(fake.scripts) == 1
    assert layers.built_layers(other, "debian-13") == ("jvm",)

    # the stack rebuilt from another definition: its layers are out of date
    changed = stacks.StackDefinition(name="debian-13", suite="trixie", packages=("curl",))
    assert not layers.is_current(root, changed, layers.LAYERS["jvm"])


def test_failed_layer_leaves_nothing(tmp_path: Path) -> None:
    defn = stacks.get_stack("debian-13")
    fake = FakeApt(layer_status=100)
    stacks.build_stack(defn, tmp_path, runner=fake, local_ca_dir=tmp_path / "no-cas")
    with pytest.raises(Unavailable, match="the php layer of stack \"debian-13\": apt failed"):
        layers.build_layer(defn, "php", tmp_path, runner=fake)
    assert sorted(p.name for p in (tmp_path / "stacks").iterdir()) == ["debian-13"]


def test_stack_dpkg_options_are_part_of_its_key() -> None:
    defn = stacks.get_stack("debian-13")
    assert "force-unsafe-io" in defn.dpkg_options
    other = stacks.StackDefinition(name="debian-13", suite="trixie", dpkg_options="")
    assert stacks.cache_key(other) != stacks.cache_key(defn)


def test_layers_are_not_in_the_base_stack() -> None:
    base = set(stacks.COMMON_PACKAGES)
    for layer in layers.LAYERS.values():
        assert not base & set(layer.packages), layer.name


def test_the_model_names_the_same_layers() -> None:
    assert tuple(layers.LAYERS) == LAYER_NAMES
