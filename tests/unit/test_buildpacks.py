"""The slug compiler: pure parts, then real buildpacks run on the host.

Buildpacks written here in a few lines of bash test the orchestration (detect order,
export passing, release defaults, failures). The built-in procfile buildpack runs as is;
the python and nodejs ones fetch packages and are marked ``network``.
"""

from __future__ import annotations

import shutil
import subprocess
import tarfile
from pathlib import Path, PurePosixPath

import pytest

from dynod.build.buildpacks import (
    BUILTIN_DIR,
    NO_LANGUAGE_LINES,
    Buildpack,
    BuildResult,
    apply_slugignore,
    compile_app,
    compile_argv,
    merge_process_types,
    parse_release,
    parse_slugignore,
    process_type_lines,
    slugignore_matches,
)
from dynod.build.pipeline import stack_env
from dynod.errors import FailedPrecondition, ResourceExhausted
from dynod.model.procfile import parse_procfile
from dynod.slug.unpack import Limits, unpack_slug
from dynod.system import processes

# --- pure parts -------------------------------------------------------------------------


def test_parse_release() -> None:
    info = parse_release(
        "---\naddons:\n  - heroku-postgresql:dev\ndefault_process_types:\n"
        "  web: bin/node server.js\n  worker: 'node w.js --x: y'\nconfig_vars:\n  A: b\n"
    )
    assert dict(info.default_process_types) == {
        "web": "bin/node server.js",
        "worker": "node w.js --x: y",
    }
    assert info.addons == ("heroku-postgresql:dev",)
    assert dict(info.config_vars) == {"A": "b"}
    assert dict(parse_release("---\ndefault_process_types: {}\n").default_process_types) == {}
    assert parse_release("garbage\n  not: yaml\n") == parse_release("")


def test_slugignore() -> None:
    patterns = parse_slugignore("# comment\n*.psd\n/test\ndocs/*.pdf\nbuild/\n!keep\n\n")
    assert patterns == ("*.psd", "/test", "docs/*.pdf", "build/")

    def m(path: str, is_dir: bool = False) -> bool:
        return slugignore_matches(PurePosixPath(path), is_dir, patterns)

    assert m("a.psd")
    assert m("deep/er/a.psd")
    assert m("test", is_dir=True)
    assert not m("src/test", is_dir=True)
    assert m("docs/a.pdf")
    assert not m("other/docs/a.pdf")
    assert m("x/build", is_dir=True)
    assert not m("build")  # a file named build, and the pattern wants a directory
    assert not m("app.py")


def test_apply_slugignore(tmp_path: Path) -> None:
    (tmp_path / ".slugignore").write_text("*.psd\n/test\n")
    (tmp_path / "test").mkdir()
    (tmp_path / "test/t.py").write_text("")
    (tmp_path / "art").mkdir()
    (tmp_path / "art/big.psd").write_text("")
    (tmp_path / "app.py").write_text("")
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    (outside / "keep.psd").write_text("")
    (tmp_path / "link.psd").symlink_to(outside / "keep.psd")
    removed = apply_slugignore(tmp_path)
    assert sorted(removed) == ["art/big.psd", "link.psd", "test"]
    assert (tmp_path / "app.py").exists()
    assert (outside / "keep.psd").exists()


def test_process_type_lines() -> None:
    assert process_type_lines(parse_procfile("web: a\nworker: b\n"), {}) == [
        "-----> Discovering process types",
        "       Procfile declares types -> web, worker",
    ]
    assert process_type_lines(parse_procfile(""), {"web": "npm start"}) == [
        "-----> Discovering process types",
        "       Procfile declares types     -> (none)",
        "       Default types for buildpack -> web",
    ]
    merged = merge_process_types(parse_procfile("web: node x.js\n"), {"web": "npm start", "a": "b"})
    assert merged == {"web": "node x.js", "a": "b"}


def test_compile_argv_sources_exports_in_order() -> None:
    argv = compile_argv(Path("/bp"), [Path("/e1"), Path("/e2")], Path("/b"), Path("/c"), Path("/e"))
    assert argv[:2] == ["bash", "-c"]
    assert argv[3:] == ["dynod-build", "/e1", "/e2", "--", "/bp/bin/compile", "/b", "/c", "/e"]
    assert compile_argv(Path("/bp"), [], Path("/b"), Path("/c"), Path("/e")) == [
        "/bp/bin/compile",
        "/b",
        "/c",
        "/e",
    ]


# --- orchestration with tiny buildpacks ---------------------------------------------------


def write_pack(
    root: Path, name: str, *, detect: str, compile_: str, release: str = ""
) -> Buildpack:
    bin_dir = root / name / "bin"
    bin_dir.mkdir(parents=True)
    for script, body in (("detect", detect), ("compile", compile_), ("release", release)):
        if script == "release" and not body:
            continue
        (bin_dir / script).write_text(f"#!/usr/bin/env bash\nset -euo pipefail\n{body}\n")
        (bin_dir / script).chmod(0o755)
    return Buildpack(name, root / name)


@pytest.fixture
def dirs(tmp_path: Path) -> dict[str, Path]:
    d = {name: tmp_path / name for name in ("build", "cache", "env", "work", "packs")}
    for path in d.values():
        path.mkdir()
    (d["env"] / "GREETING").write_text("hello")
    return d


def build(dirs: dict[str, Path], packs: list[Buildpack] | None) -> tuple[BuildResult, list[str]]:
    lines: list[str] = []
    result = compile_app(
        dirs["build"],
        dirs["cache"],
        dirs["env"],
        dirs["work"],
        stack="debian-13",
        on_line=lines.append,
        buildpacks=packs,
    )
    return result, lines


def test_several_buildpacks_pass_exports_and_defaults(dirs: dict[str, Path]) -> None:
    first = write_pack(
        dirs["packs"],
        "first",
        detect='echo "First"',
        compile_=(
            'echo "-----> compiling first on $STACK"\n'
            'echo "export FROM_FIRST=\\"$(cat "$3/GREETING") from first\\"" '
            '> "$(dirname "$0")/../export"\n'
            'mkdir -p "$1/.profile.d"; echo "export X=1" > "$1/.profile.d/first.sh"'
        ),
        release='printf -- "---\\ndefault_process_types:\\n  web: first-web\\n  worker: w\\n"',
    )
    second = write_pack(
        dirs["packs"],
        "second",
        detect='echo "Second"',
        compile_='echo "       got: $FROM_FIRST"; echo "$FROM_FIRST" > "$1/seen"',
        release='printf -- "---\\ndefault_process_types:\\n  web: second-web\\n"',
    )
    (dirs["build"] / "Procfile").write_text("worker: from-procfile\n")
    (dirs["build"] / ".git").mkdir()
    (dirs["build"] / ".git/HEAD").write_text("ref")
    result, lines = build(dirs, [first, second])
    assert lines[:4] == [
        "-----> Using buildpack: first",
        "-----> Using buildpack: second",
        "-----> First app detected",
        "-----> compiling first on debian-13",
    ]
    assert "       got: hello from first" in lines
    assert lines[-6:] == [
        "-----> Discovering process types",
        "       Procfile declares types     -> worker",
        "       Default types for buildpack -> web, worker",
        "",
        "-----> Compressing...",
        f"       Done: {result.size / 1024 / 1024:.1f}M",
    ]
    assert dict(result.process_types) == {"web": "second-web", "worker": "from-procfile"}
    assert result.buildpacks == ("first", "second")
    assert result.description == "Second"
    assert result.checksum.startswith("sha256:")
    # buildpacks wrote export into their copies, never into the originals
    assert not (first.path / "export").exists()
    # the slug is Heroku's format and round-trips through the unpacker
    with tarfile.open(result.slug) as tar:
        names = tar.getnames()
    assert "./app" in names
    assert "./app/seen" in names
    assert "./app/.profile.d/first.sh" in names
    assert not any(".git" in n for n in names)
    tree = unpack_slug(result.slug, dirs["work"] / "tree").root
    assert (tree / "seen").read_text() == "hello from first\n"


def test_detection_order_and_no_match(
    dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    (dirs["build"] / "README").write_text("nothing to detect")
    lines: list[str] = []
    with pytest.raises(FailedPrecondition, match="No default language could be detected"):
        compile_app(
            dirs["build"],
            dirs["cache"],
            dirs["env"],
            dirs["work"],
            stack="debian-13",
            on_line=lines.append,
        )
    assert lines == ["-----> Determining which buildpack to use for this app", *NO_LANGUAGE_LINES]
    assert NO_LANGUAGE_LINES[0] == " !     No default language could be detected for this app."


def test_set_buildpack_that_does_not_detect(dirs: dict[str, Path]) -> None:
    pack = write_pack(dirs["packs"], "never", detect="exit 1", compile_="exit 0")
    with pytest.raises(FailedPrecondition, match="App not compatible with buildpack: never"):
        build(dirs, [pack])


def test_failed_compile(dirs: dict[str, Path]) -> None:
    pack = write_pack(
        dirs["packs"], "bad", detect="echo Bad", compile_='echo " !     oops" >&2; exit 3'
    )
    lines: list[str] = []
    with pytest.raises(FailedPrecondition, match=r"failed to compile Bad app"):
        compile_app(
            dirs["build"],
            dirs["cache"],
            dirs["env"],
            dirs["work"],
            stack="debian-13",
            on_line=lines.append,
            buildpacks=[pack],
        )
    assert lines[-2:] == [" !     oops", " !     Push rejected, failed to compile Bad app."]


def test_slug_too_large(dirs: dict[str, Path]) -> None:
    pack = write_pack(
        dirs["packs"], "big", detect="echo Big", compile_='head -c 200000 /dev/urandom > "$1/blob"'
    )
    lines: list[str] = []
    with pytest.raises(ResourceExhausted):
        compile_app(
            dirs["build"],
            dirs["cache"],
            dirs["env"],
            dirs["work"],
            stack="debian-13",
            on_line=lines.append,
            buildpacks=[pack],
            limits=Limits(max_compressed_bytes=100_000, warn_compressed_bytes=50_000),
        )
    assert lines[-2:] == [
        " !     Compiled slug size: 0.2M is too large (max is 0M).",
        " !     See: http://devcenter.heroku.com/articles/slug-size",
    ]
    assert not (dirs["work"] / "slug.tgz").exists()


# --- built-in buildpacks on the host ------------------------------------------------------


def test_procfile_buildpack(dirs: dict[str, Path]) -> None:
    (dirs["build"] / "Procfile").write_text("web: ./serve.sh\nclock: ./tick.sh\n")
    (dirs["build"] / "serve.sh").write_text("#!/bin/sh\n")
    result, lines = build(dirs, None)
    assert lines[:3] == [
        "-----> Determining which buildpack to use for this app",
        "-----> Procfile app detected",
        "-----> Procfile app: nothing to install",
    ]
    assert "       Procfile declares types -> clock, web" in lines
    assert dict(result.process_types) == {"web": "./serve.sh", "clock": "./tick.sh"}
    assert result.buildpacks == ("procfile",)


def test_miscased_procfile_is_reported(dirs: dict[str, Path]) -> None:
    (dirs["build"] / "procfile").write_text("web: x\n")
    pack = write_pack(dirs["packs"], "any", detect="echo Any", compile_="true")
    result, lines = build(dirs, [pack])
    assert " ~     Mis-cased procfile detected; ignoring." in lines
    assert " ~     Rename it to Procfile to have it honored." in lines
    assert dict(result.process_types) == {}


@pytest.mark.network
def test_python_buildpack_with_pip_and_cache(tmp_path: Path, dirs: dict[str, Path]) -> None:
    app = dirs["build"]
    (app / "requirements.txt").write_text("six\n")
    (app / "Procfile").write_text("web: python -c 'import six'\n")
    (app / ".python-version").write_text("# the stack's\n" + python_xy() + "\n")
    first, lines = build(dirs, None)
    assert "-----> Python app detected" in lines
    assert f"-----> Using Python {python_xy()} specified in .python-version" in lines
    assert "-----> Installing dependencies using 'pip install -r requirements.txt'" in lines
    assert any(line.startswith("       Successfully installed six") for line in lines)

    tree = unpack_slug(first.slug, tmp_path / "tree").root
    venv = tree / ".heroku/python"
    assert (venv / "bin/python3").is_symlink()
    # the venv runs from where it was unpacked, not where it was built
    out = processes.output([str(venv / "bin/python"), "-c", "import six, sys; print(sys.prefix)"])
    assert out.strip() == str(venv)
    assert "/build/" not in (venv / "bin/pip").read_text()
    assert processes.output([str(venv / "bin/pip"), "--version"]).startswith("pip ")
    assert (
        'PATH="${HOME}/.heroku/python/bin:${PATH}"' in (tree / ".profile.d/python.sh").read_text()
    )

    # second build, same requirements.txt: nothing downloaded, nothing installed
    shutil.rmtree(app / ".heroku")
    shutil.rmtree(dirs["work"])
    second, lines = build(dirs, None)
    assert "-----> Restoring cache" in lines
    assert any("unchanged since the last build" in line for line in lines)
    assert not any("Collecting" in line or "Downloading" in line for line in lines)
    assert not any("Installing dependencies" in line for line in lines)
    assert second.process_types == first.process_types


def python_xy() -> str:
    out = processes.output(["python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"])
    return out.strip()


def test_python_buildpack_unavailable_version(dirs: dict[str, Path]) -> None:
    (dirs["build"] / "requirements.txt").write_text("")
    (dirs["build"] / "runtime.txt").write_text("python-2.7.18\n")
    lines: list[str] = []
    with pytest.raises(FailedPrecondition, match="failed to compile Python app"):
        compile_app(
            dirs["build"],
            dirs["cache"],
            dirs["env"],
            dirs["work"],
            stack="debian-13",
            on_line=lines.append,
        )
    assert any(
        "Python 2.7.18 (from runtime.txt) is not available on the debian-13 stack" in line
        for line in lines
    )
    assert any(line.startswith(" !     Available: Python 3.") for line in lines)


STACK_PYTHONS = "debian-12=3.11 debian-13=3.13 debian-14=3.14"


@pytest.mark.parametrize(("asked", "expected"), [
    # another stack has it: named, with the command that moves the app there
    ("3.14", [" !     Error: Python 3.14 (from .python-version) is not available on the "
              "debian-13 stack (it has Python {have}).",
              " !     The debian-14 stack has Python 3.14: dynoctl stack:set debian-14 -a "
              "shop, then push again."]),
    # none has it: what each has
    ("3.9.1", [" !     Error: Python 3.9.1 (from .python-version) is not available on the "
               "debian-13 stack.",
               " !     Change .python-version to one of them (e.g. '{have}'), or use another "
               "stack (debian-12 has Python 3.11, debian-13 has Python 3.13, debian-14 has "
               "Python 3.14)."]),
])
def test_python_buildpack_names_the_stack_that_has_the_version(
        dirs: dict[str, Path], asked: str, expected: list[str]) -> None:
    (dirs["build"] / "requirements.txt").write_text("")
    (dirs["build"] / ".python-version").write_text(asked + "\n")
    lines: list[str] = []
    with pytest.raises(FailedPrecondition, match="failed to compile Python app"):
        compile_app(dirs["build"], dirs["cache"], dirs["env"], dirs["work"],
                    stack="debian-13", on_line=lines.append,
                    base_env={"DYNOD_APP": "shop", "DYNOD_STACK_PYTHONS": STACK_PYTHONS,
                              "PATH": "/usr/bin:/bin"})  # as in a stack: Debian's only
    have = processes.output(["/usr/bin/python3", "-c", "import sys; print('%d.%d' % "
                             "sys.version_info[:2])"]).strip()
    for line in expected:
        assert line.format(have=have) in lines, lines
    assert not (dirs["build"] / ".heroku/python").exists()  # nothing was installed


def test_the_build_tells_buildpacks_every_stacks_python() -> None:
    assert stack_env("shop") == {"DYNOD_APP": "shop", "DYNOD_STACK_PYTHONS": STACK_PYTHONS}


def test_python_buildpack_needs_a_package_manager_file(dirs: dict[str, Path]) -> None:
    (dirs["build"] / "app.py").write_text("")
    lines: list[str] = []
    with pytest.raises(FailedPrecondition):
        compile_app(
            dirs["build"],
            dirs["cache"],
            dirs["env"],
            dirs["work"],
            stack="debian-13",
            on_line=lines.append,
        )
    assert " !     Error: Couldn't find any supported Python package manager files." in lines


@pytest.mark.network
def test_nodejs_buildpack(dirs: dict[str, Path]) -> None:
    (dirs["build"] / "package.json").write_text(
        '{"name": "t", "version": "1.0.0", "engines": {"node": "0.10.x"},'
        ' "scripts": {"start": "node index.js"}, "dependencies": {"ms": "2.1.3"}}'
    )
    result, lines = build(dirs, None)
    assert "-----> Node.js app detected" in lines
    assert "       Installing node modules" in lines
    assert any('asks for Node.js "0.10.x"' in line for line in lines)
    assert dict(result.process_types) == {"web": "npm start"}
    assert "       Default types for buildpack -> web" in lines
    with tarfile.open(result.slug) as tar:
        assert "./app/node_modules/ms/package.json" in tar.getnames()


@pytest.mark.parametrize(("files", "expected"), [
    ({"go.mod": "module example.com/x\n\ngo 1.22\n"}, "Go"),
    ({"Gopkg.lock": ""}, "Go"),  # detected, so that compile can say how to migrate
    ({"main.go": "package main\n"}, None),  # Go files without a module are not an app
])
def test_go_buildpack_detects_modules(tmp_path: Path, files: dict[str, str],
                                      expected: str | None) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    detect = BUILTIN_DIR / "go" / "bin" / "detect"
    done = subprocess.run([str(detect), str(tmp_path)], capture_output=True, text=True,
                          check=False)
    assert (done.returncode == 0) is (expected is not None)
    assert done.stdout.strip() == (expected or "")


RUBY_LOCK = """GEM
  remote: https://rubygems.org/
  specs:
{specs}
PLATFORMS
  x86_64-linux

DEPENDENCIES
  rack
"""


@pytest.mark.parametrize(("files", "expected"), [
    ({"config.ru": "", "Gemfile.lock": RUBY_LOCK.format(specs="    rack (3.1.20)\n")},
     {"rake": "bundle exec rake", "console": "bundle exec irb",
      "web": "bundle exec rackup config.ru -p ${PORT:-5000}"}),
    ({"bin/rails": "", "Gemfile.lock": RUBY_LOCK.format(
        specs="    railties (7.2.2.2)\n      rake (>= 12.2)\n    pg (1.5.9)\n")},
     {"rake": "bundle exec rake", "console": "bin/rails console",
      "web": "bin/rails server -p ${PORT:-5000} -e $RAILS_ENV"}),
    ({}, {"rake": "bundle exec rake", "console": "bundle exec irb"}),
])
def test_ruby_buildpack_detects_a_gemfile_and_names_heroku_process_types(
        tmp_path: Path, files: dict[str, str], expected: dict[str, str]) -> None:
    (tmp_path / "Gemfile").write_text('source "https://rubygems.org"\n')
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
        if name.startswith("bin/"):
            (tmp_path / name).chmod(0o755)
    pack = BUILTIN_DIR / "ruby" / "bin"
    detect = subprocess.run([str(pack / "detect"), str(tmp_path)], capture_output=True,
                            text=True, check=False)
    assert detect.returncode == 0 and detect.stdout.strip() == "Ruby"
    release = subprocess.run([str(pack / "release"), str(tmp_path)], capture_output=True,
                             text=True, check=True)
    info = parse_release(release.stdout)
    assert dict(info.default_process_types) == expected
    # Heroku's ruby buildpack names Postgres when the pg gem is locked.
    assert info.addons == (("heroku-postgresql",) if "pg (" in files.get("Gemfile.lock", "")
                           else ())
    (tmp_path / "Gemfile").unlink()
    assert subprocess.run([str(pack / "detect"), str(tmp_path)], check=False).returncode == 1


@pytest.mark.parametrize("lib", ["output.sh", "jvm.sh"])
def test_the_buildpacks_shared_shell_is_one_text(lib: str) -> None:
    # Each buildpack directory is copied alone into a build (the classic API: a
    # buildpack is self-contained), so these libraries are copies; they must not drift.
    copies = sorted(BUILTIN_DIR.glob(f"*/lib/{lib}"))
    assert len(copies) >= 4, copies
    texts = {p.read_text() for p in copies}
    assert len(texts) == 1, f"{lib} differs between {[str(p) for p in copies]}: edit all"
