"""The JVM buildpacks' pure parts, run on the host: what each detects, how bin/release
picks a default web process from the jar, and how system.properties is read."""

from __future__ import annotations

import subprocess
import zipfile
from pathlib import Path

import pytest

from dynod.build.buildpacks import BUILTIN_DIR, parse_release
from dynod.model.builds import BUILTIN_BUILDPACKS


def run(pack: str, script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BUILTIN_DIR / pack / "bin" / script), *args],
                          capture_output=True, text=True, check=False)


@pytest.mark.parametrize(("files", "detected"), [
    ({"pom.xml": "<project/>"}, {"java": "Java"}),
    ({"pom.yml": "modelVersion: 4.0.0"}, {"java": "Java"}),  # Polyglot Maven
    ({"gradlew": "", "build.gradle": ""}, {"gradle": "Gradle"}),
    ({"settings.gradle.kts": ""}, {"gradle": "Gradle"}),
    ({"build.sbt": ""}, {"scala": "Scala"}),
    ({"project/build.properties": "sbt.version=1.10.7\n"}, {"scala": "Scala"}),
    ({"project.clj": "(defproject x \"1\")"}, {"clojure": "Clojure (Leiningen 2)"}),
    ({"Main.java": "class Main {}"}, {}),  # sources alone are no build
])
def test_jvm_buildpacks_detect(tmp_path: Path, files: dict[str, str],
                               detected: dict[str, str]) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    for pack in ("java", "gradle", "scala", "clojure"):
        done = run(pack, "detect", str(tmp_path))
        assert (done.returncode == 0) is (pack in detected), (pack, done)
        assert done.stdout.strip() == detected.get(pack, "")


def test_jvm_detection_order_is_herokus() -> None:
    order = [p for p in BUILTIN_BUILDPACKS if p in ("nodejs", "clojure", "python", "java",
                                                     "gradle", "scala", "php", "go")]
    assert order == ["nodejs", "clojure", "python", "java", "gradle", "scala", "php", "go"]


def jar(path: Path, manifest: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("META-INF/MANIFEST.MF", manifest)


def test_java_release_defaults(tmp_path: Path) -> None:
    pom = tmp_path / "pom.xml"
    pom.write_text("<project><artifactId>app</artifactId></project>")
    # no target/: nothing built, no default
    assert parse_release(run("java", "release", str(tmp_path)).stdout).default_process_types \
        == {}
    # a plain jar (a library) gets no web default: the Procfile must say
    jar(tmp_path / "target/lib.jar", "Manifest-Version: 1.0\n")
    assert parse_release(run("java", "release", str(tmp_path)).stdout).default_process_types \
        == {}
    # an executable jar does, on $PORT
    jar(tmp_path / "target/app.jar", "Manifest-Version: 1.0\nMain-Class: com.example.Main\n"
        + "x" * 100)
    info = parse_release(run("java", "release", str(tmp_path)).stdout)
    assert dict(info.default_process_types) == {
        "web": "java -Dserver.port=$PORT $JAVA_OPTS -jar target/app.jar"}
    # Spring Boot, as Heroku: the largest jar; a pg driver hints the add-on
    pom.write_text("<project><parent><groupId>org.springframework.boot</groupId>"
                   "<artifactId>spring-boot-starter-parent</artifactId></parent>"
                   "<dependency><artifactId>postgresql</artifactId></dependency></project>")
    (tmp_path / "target/app.jar").unlink()
    out = run("java", "release", str(tmp_path)).stdout
    assert dict(parse_release(out).default_process_types) == {
        "web": "java -Dserver.port=$PORT $JAVA_OPTS -jar target/lib.jar"}
    assert "  - heroku-postgresql" in out
    # a Procfile wins
    (tmp_path / "Procfile").write_text("web: java -jar target/lib.jar\n")
    assert parse_release(run("java", "release", str(tmp_path)).stdout).default_process_types \
        == {}


@pytest.mark.parametrize(("text", "value"), [
    ("java.runtime.version=17\n", "17"),
    ("# a comment\njava.runtime.version = 1.8\r\n", "1.8"),
    ("java.runtime.version: zulu-21\nmaven.version=3.9.9\n", "zulu-21"),
    ("maven.version=3.9.9\n", ""),
])
def test_system_properties(tmp_path: Path, text: str, value: str) -> None:
    (tmp_path / "system.properties").write_text(text)
    lib = BUILTIN_DIR / "java" / "lib" / "jvm.sh"
    done = subprocess.run(["bash", "-c", f'source "{lib}"; jvm::property "$1" '
                           "java.runtime.version", "-", str(tmp_path / "system.properties")],
                          capture_output=True, text=True, check=True)
    assert done.stdout.strip() == value


def test_jvm_libs_are_copies() -> None:
    """Each JVM buildpack carries the same lib/jvm.sh (a buildpack is self-contained)."""
    text = (BUILTIN_DIR / "java/lib/jvm.sh").read_text()
    for pack in ("gradle", "scala", "clojure"):
        assert (BUILTIN_DIR / pack / "lib/jvm.sh").read_text() == text, pack
