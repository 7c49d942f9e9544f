"""Hostile app inputs through the real parsers and buildpack scripts (Hypothesis): a
Procfile, ``.python-version``/``runtime.txt``, ``package.json``, any tree through every
buildpack's ``bin/detect`` (and the same tree with a hostile ``app.json``: the same
answers); and the push hook's source size on a real git repository. Gemfile.lock:
tests/unit/test_hostile_gemfile_lock.py.

The property: an answer or a clear error (``Unable to parse package.json: ...``, a
`` !     `` line), never a stack trace, never a hang (every script runs under a timeout).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dynod.build import buildpacks
from dynod.cli import gitpush
from dynod.errors import InvalidArgument
from dynod.model.procfile import load_procfile, parse_procfile

BUILDPACKS = Path(__file__).resolve().parents[2] / "buildpacks"
EXAMPLES = int(os.environ.get("DYNOD_FUZZ_EXAMPLES", "25"))
STEP_TIMEOUT = 20.0
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])

NASTY_TEXT = st.one_of(
    st.text(max_size=200),
    st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
    st.sampled_from(["", "\n", "\x00", "3.13\n3.12\n", " 3.13 # comment", "3.13.", "3",
                     "python-3.13", "3.13\r\n", "a" * 10000, "\ufeff3.13", "${HOME}",
                     "$(touch /tmp/pwned)", "`id`", "3.13; rm -rf /"]),
)


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.email=t@e", "-c", "user.name=t",
                           *args], check=True, capture_output=True, text=True).stdout


def test_push_hook_measures_a_sparse_2g_file_without_reading_it(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    _git(tmp_path, "init", "-q", str(repo))
    with (repo / "blob").open("wb") as f:
        f.truncate(2 << 30)
    (repo / os.fsdecode(b"bad-\xff\xfe")).write_bytes(b"xy")
    (repo / ("L" * 255)).write_text("z")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "big")
    cwd = Path.cwd()
    os.chdir(repo)
    try:
        size = gitpush.source_size("HEAD")
    finally:
        os.chdir(cwd)
    assert size == (2 << 30) + 3
    message = gitpush._too_large(size)
    assert message is not None and message.startswith(
        "Your app's source is 2.0G uncompressed, over the 1G limit")
    assert gitpush._too_large(1 << 30) is None


def test_refs_are_named_as_git_names_them() -> None:
    assert gitpush._ref_name("refs/tags/v1") == "tag v1"
    assert gitpush._ref_name("refs/heads/feature") == "feature"


@FUZZ
@given(NASTY_TEXT)
def test_procfile_text_parses_or_warns(text: str) -> None:
    procfile = parse_procfile(text)
    for process in procfile.processes:
        assert process.name and process.command
        assert "\n" not in process.command


@FUZZ
@given(st.binary(max_size=300))
def test_procfile_bytes_load_or_refuse_clearly(tmp_path: Path, data: bytes) -> None:
    (tmp_path / "Procfile").write_bytes(data)
    try:
        load_procfile(tmp_path)
    except InvalidArgument as exc:
        assert "Procfile" in exc.message


def _bash(script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", script], cwd=cwd, capture_output=True, text=True,
                          errors="replace", timeout=STEP_TIMEOUT, check=False,
                          env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"})


@FUZZ
@given(st.sampled_from([".python-version", "runtime.txt"]), NASTY_TEXT)
def test_python_version_files_give_a_version_or_a_clear_error(
        tmp_path: Path, name: str, text: str) -> None:
    for old in tmp_path.iterdir():
        old.unlink()
    (tmp_path / name).write_text(text, errors="surrogateescape")
    lib = BUILDPACKS / "python/lib"
    proc = _bash(f'source "{lib}/output.sh"; source "{lib}/python_version.sh"; '
                 'python_version::requested .', tmp_path)
    assert not (tmp_path / "pwned").exists()
    if proc.returncode == 0:
        assert re.fullmatch(r"(\d+\.\d+(\.\d+)? (\.python-version|runtime\.txt))?\n",
                            proc.stdout), proc.stdout
    else:
        assert proc.returncode == 1, proc.stderr
        assert re.search(r"^ !     (Invalid Python version|The \.python-version file)",
                         proc.stderr, re.MULTILINE), proc.stderr


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids,
                                                              max_size=4),
    max_leaves=12)
PACKAGE_JSON = st.one_of(
    JSON_VALUES.map(json.dumps),
    st.fixed_dictionaries({"engines": st.one_of(JSON_VALUES, st.fixed_dictionaries(
        {"node": st.one_of(JSON_VALUES, st.sampled_from([">=18", "20.x", "^", "||", "*"]))}))}
    ).map(json.dumps),
    NASTY_TEXT,
)


@FUZZ
@given(PACKAGE_JSON)
@example('{"a":\r x}')  # found: Node's message quotes the text, a CR in it went out
def test_package_json_gives_engines_or_unable_to_parse(tmp_path: Path, text: str) -> None:
    pkg = tmp_path / "package.json"
    pkg.write_text(text, errors="surrogateescape")
    proc = subprocess.run(["node", str(BUILDPACKS / "nodejs/lib/engines.js"), str(pkg),
                           "20.1.0"], capture_output=True, text=True, errors="replace",
                          timeout=STEP_TIMEOUT, check=False)
    if proc.returncode == 0:
        lines = proc.stdout.split("\n")
        assert len(lines) == 3 and lines[1] in ("ok", "mismatch", "unknown"), proc.stdout
    else:
        assert proc.stderr.startswith("Unable to parse package.json: "), proc.stderr
        assert "    at " not in proc.stderr  # no stack trace
        assert proc.stderr.count("\n") == 1


FILE_NAMES = st.sampled_from(["Procfile", "package.json", "Gemfile", "Gemfile.lock",
                              "requirements.txt", ".python-version", "composer.json",
                              "go.mod", "pom.xml", "build.gradle", "project.clj", "build.sbt",
                              "Aptfile", "index.php", "app.json", "main.go", "x"])
KINDS = st.sampled_from(["file", "dir", "dangling", "zero", "loop", "fifo", "huge"])


def _make_tree(app: Path, tree: dict[str, tuple[str, bytes]]) -> None:
    subprocess.run(["rm", "-rf", str(app)], check=True)
    app.mkdir()
    for name, (kind, data) in tree.items():
        _make(app / name, kind, data)


def _make(path: Path, kind: str, data: bytes) -> None:
    if kind == "file":
        path.write_bytes(data)
    elif kind == "dir":
        path.mkdir()
    elif kind == "dangling":
        path.symlink_to("/nonexistent/target")
    elif kind == "zero":
        path.symlink_to("/dev/zero")  # endless input
    elif kind == "loop":
        path.symlink_to(path.name)
    elif kind == "huge":
        with path.open("wb") as f:
            f.truncate(2 << 30)  # sparse: 2 GB that a reader would read for minutes
    else:
        os.mkfifo(path)  # a reader would block forever


def _detect_all(app: Path) -> dict[str, tuple[int, str]]:
    """Every buildpack's bin/detect on ``app``: its status and what it printed."""
    outcomes = {}
    for detect in sorted(BUILDPACKS.glob("*/bin/detect")):
        proc = subprocess.run([str(detect), str(app)], capture_output=True, text=True,
                              errors="replace", timeout=STEP_TIMEOUT, check=False,
                              stdin=subprocess.DEVNULL)
        assert proc.returncode in (0, 1), f"{detect}: {proc.returncode} {proc.stderr}"
        if proc.returncode == 0:
            assert re.fullmatch(r"[\w.+ ()/-]+\n", proc.stdout), f"{detect}: {proc.stdout!r}"
        assert "line " not in proc.stderr, f"{detect}: {proc.stderr}"  # no bash error
        outcomes[detect.parent.parent.name] = (proc.returncode, proc.stdout)
    return outcomes


@FUZZ
@given(st.dictionaries(FILE_NAMES, st.tuples(KINDS, st.binary(max_size=64)), max_size=6))
def test_every_detect_answers_on_any_tree(tmp_path: Path,
                                          tree: dict[str, tuple[str, bytes]]) -> None:
    _make_tree(tmp_path / "app", tree)
    _detect_all(tmp_path / "app")


# A real manifest: on Heroku these would pick buildpacks, a formation and a postdeploy
# script when an app is created from it (app setups), never on a push.
MANIFEST = json.dumps({"buildpacks": [{"url": "heroku/ruby"}], "formation": {
    "web": {"quantity": 3}}, "scripts": {"postdeploy": "touch /tmp/pwned"}}).encode()


@FUZZ
@given(st.dictionaries(FILE_NAMES.filter(lambda n: n != "app.json"),
                       st.tuples(KINDS, st.binary(max_size=64)), max_size=5),
       st.sampled_from(["file", "manifest", "huge", "dir", "dangling", "zero", "loop", "fifo"]),
       st.binary(max_size=200))
def test_an_app_json_changes_no_detect(tmp_path: Path, tree: dict[str, tuple[str, bytes]],
                                       kind: str, data: bytes) -> None:
    # Heroku reads app.json only when an app is created from it (Review Apps, Heroku CI,
    # the Button: "not when re-deploying one", devcenter app-json-schema); nothing in
    # dynod or its buildpacks reads it, so no hostile app.json changes what a push does.
    app = tmp_path / "app"
    _make_tree(app, tree)
    before = _detect_all(app)
    _make(app / "app.json", "file" if kind == "manifest" else kind,
          MANIFEST if kind == "manifest" else data)
    assert _detect_all(app) == before
    assert not Path("/tmp/pwned").exists()


@pytest.mark.parametrize("kind", ["fifo", "zero"])
def test_a_procfile_that_never_ends_is_refused(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "Procfile"
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")
    with pytest.raises(InvalidArgument, match="Procfile"):
        load_procfile(tmp_path)


def test_a_procfile_linked_out_fails_the_build_saying_why(tmp_path: Path) -> None:
    # Found by test_hostile_pushes: the build failed with only "Push failed".
    build_dir, cache, env_dir, work = (tmp_path / n for n in ("build", "cache", "env", "work"))
    for d in (build_dir, cache, env_dir, work):
        d.mkdir()
    (build_dir / "Procfile").symlink_to("/etc/shadow")
    pack = BUILDPACKS / "procfile"
    lines: list[str] = []
    with pytest.raises(InvalidArgument):
        buildpacks.compile_app(build_dir, cache, env_dir, work, stack="debian-13",
                               on_line=lines.append,
                               buildpacks=[buildpacks.Buildpack(name="procfile", path=pack)],
                               base_env={"PATH": "/usr/bin:/bin"})
    assert lines[-1] == " !     Procfile is a symbolic link; make it a regular file"
