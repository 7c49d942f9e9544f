"""Hostile Gemfile.lock files through the Ruby buildpack (Hypothesis): its one reader of
the lockfile (``buildpacks/ruby/lib/gemfile_lock.rb``, which bin/compile and bin/release
use; bin/compile hands ruby_version.rb the locked Ruby), bin/release and bin/compile,
with this host's Ruby and Bundler (Debian 12's, as on the debian-12 stack;
tests/integration/test_ruby.py pushes to debian-13's).

The property: the facts the buildpack needs, or one ``Gemfile.lock ...`` line naming the
problem and the fix; never a Ruby backtrace, never a hang (every run has a timeout).

Examples: CI runs 25 per test (tests/unit/test_hostile_inputs.py's FUZZ; the compile
test a fifth of that, each runs ``bundle install``). DYNOD_FUZZ_EXAMPLES raises them;
the run that landed this used DYNOD_FUZZ_EXAMPLES=1000 (1,000 structured lockfiles and
1,000 arbitrary byte strings through the reader, 200 lockfiles through bin/compile: all
passed, 13.6 min).
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dynod.build.buildpacks import parse_release
from tests.unit.test_hostile_inputs import BUILDPACKS, EXAMPLES, FUZZ, NASTY_TEXT

READER = BUILDPACKS / "ruby/lib/gemfile_lock.rb"
TIMEOUT = 20.0
FACT = re.compile(r"gem [A-Za-z0-9][A-Za-z0-9._-]* [0-9][0-9A-Za-z.]*|ruby \d+\.\d+\.\d+|"
                  r"bundled_with [0-9][0-9A-Za-z.-]*")
BACKTRACE = re.compile(r"^\s*from \S+\.rb:\d+|\.rb:\d+:in [`']|ERROR REPORT TEMPLATE",
                       re.MULTILINE)

NAME = st.one_of(st.sampled_from(["pg", "rack", "railties", "rake"]),  # what bin/ looks for
                 st.from_regex(r"[a-z][a-z0-9_-]{0,10}", fullmatch=True))
VERSION = st.from_regex(r"[0-9]{1,2}(\.[0-9]{1,2}){0,3}", fullmatch=True)
# Ruby's String#strip: ASCII whitespace and NUL.
RUBY_SPACE = " \t\n\v\f\r\0"
# RubyGems' Gem::Version::VERSION_PATTERN, what Bundler takes for a version.
GEM_VERSION = re.compile(r"[0-9]+(\.[0-9a-zA-Z]+)*(-[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?")
GARBAGE = st.one_of(st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1,
                            max_size=30).filter(lambda s: s.strip(RUBY_SPACE) != ""),
                    st.sampled_from(["garbage!", "2.6.7 x", "v2", "2..6", "${HOME}",
                                     "\x1b[31mred", "$(touch /tmp/pwned)"]))


@st.composite
def lockfiles(draw: st.DrawFn) -> tuple[bytes, dict[str, object]]:
    """A lockfile as Bundler writes one (its sections in its order, each maybe left out),
    then maybe damaged; and what the reader must say of it (``expect``)."""
    specs = draw(st.dictionaries(NAME, VERSION, max_size=5))
    platform = draw(st.sampled_from(["x86_64-linux", "ruby", "x86_64-linux-gnu"]))
    ruby = draw(st.sampled_from([None, "3.1.2p20", "3.3.8p144", "9.9.9", "jruby"]))
    bundled = draw(st.one_of(st.none(), VERSION, GARBAGE))
    parts = ["GEM", "  remote: https://rubygems.org/", "  specs:"]
    for name, version in specs.items():
        suffix = draw(st.sampled_from(["", "-x86_64-linux"]))
        parts += [f"    {name} ({version}{suffix})",
                  *[f"      {dep}" for dep in draw(st.lists(NAME, max_size=2))]]
    parts += ["", "PLATFORMS", f"  {platform}", "", "DEPENDENCIES",
              *[f"  {name}" for name in specs]]
    if ruby is not None:
        parts += ["", "RUBY VERSION", f"   ruby {ruby}"]
    if bundled is not None:
        parts += ["", "BUNDLED WITH", f"   {bundled}"]
    text = "\n".join(parts) + "\n"
    damage = draw(st.sampled_from(["none", "crlf", "nul", "latin-1", "truncated", "huge",
                                   "conflict", "bom"]))
    data = text.encode()
    at = draw(st.integers(0, len(data)))
    if damage == "crlf":
        data = data.replace(b"\n", b"\r\n")
    elif damage == "nul":
        data = data[:at] + b"\0" + data[at:]
    elif damage == "latin-1":
        data = data[:at] + "é".encode("latin-1") + data[at:]
    elif damage == "truncated":
        data = data[:at]
    elif damage == "huge":
        data = b"x" * (1 << 20) + b"\n" + data  # a 1 MB line first
    elif damage == "conflict":
        data = data + b"<<<<<<< HEAD\n"
    elif damage == "bom":
        data = b"\xef\xbb\xbf" + data
    bundled_ok = bundled is None or GEM_VERSION.fullmatch(bundled.strip(RUBY_SPACE)) is not None
    expect: dict[str, object] = {"damage": damage, "bundled": bundled,
                                 "bundled_ok": bundled_ok}
    if damage in ("none", "crlf", "huge"):
        expect["gems"] = specs
        expect["ruby"] = ruby.split("p")[0] if ruby and ruby[0].isdigit() else None
    return data, expect


def _read(app: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ruby", str(READER), str(app)], capture_output=True, text=True,
                          errors="replace", timeout=TIMEOUT, check=False,
                          stdin=subprocess.DEVNULL, env={"PATH": "/usr/bin:/bin",
                                                         "LANG": "C.UTF-8"})


def _assert_facts_or_one_clear_error(proc: subprocess.CompletedProcess[str]) -> None:
    assert not BACKTRACE.search(proc.stdout + proc.stderr), proc.stderr
    if proc.returncode == 0:
        assert proc.stderr == ""
        for line in proc.stdout.splitlines():
            assert FACT.fullmatch(line), proc.stdout
    else:
        assert proc.returncode == 1, proc.stderr
        assert proc.stdout == ""
        assert proc.stderr.startswith("Gemfile.lock "), proc.stderr
        assert proc.stderr.count("\n") == 1 and proc.stderr.endswith("push again\n"), \
            proc.stderr


@FUZZ
@given(lockfiles())
def test_a_lockfile_gives_its_facts_or_one_clear_error(
        tmp_path: Path, lock: tuple[bytes, dict[str, object]]) -> None:
    data, expect = lock
    (tmp_path / "Gemfile.lock").write_bytes(data)
    proc = _read(tmp_path)
    _assert_facts_or_one_clear_error(proc)
    damage = expect["damage"]
    if damage == "nul":
        assert "Gemfile.lock has a NUL byte (line " in proc.stderr, proc.stderr
    elif damage == "latin-1":
        assert "Gemfile.lock is not UTF-8 text (line " in proc.stderr, proc.stderr
    elif damage == "conflict":
        assert "Gemfile.lock contains merge conflicts (line " in proc.stderr, proc.stderr
    elif not expect["bundled_ok"] and damage != "truncated":
        assert "Gemfile.lock has BUNDLED WITH followed by " in proc.stderr, proc.stderr
    # bin/release: Heroku's process types whatever the lockfile; Postgres when pg is locked.
    release = subprocess.run([str(BUILDPACKS / "ruby/bin/release"), str(tmp_path)],
                             capture_output=True, text=True, timeout=TIMEOUT, check=False,
                             env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"})
    assert release.returncode == 0 and release.stderr == "", release.stderr
    info = parse_release(release.stdout)
    assert dict(info.default_process_types)["rake"] == "bundle exec rake"
    assert info.addons == (("heroku-postgresql",) if "\ngem pg " in "\n" + proc.stdout else ())
    if "gems" in expect and expect["bundled_ok"]:
        lines = proc.stdout.splitlines()
        gems = expect["gems"]
        assert isinstance(gems, dict)
        assert [line for line in lines if line.startswith("gem ")] == [
            f"gem {name} {version}" for name, version in gems.items()]
        assert (f"ruby {expect['ruby']}" in lines) is (expect["ruby"] is not None)
        if expect["bundled"] is not None:
            bundled = str(expect["bundled"]).strip(RUBY_SPACE)
            assert f"bundled_with {bundled}" in lines, proc.stdout


@FUZZ
@given(st.one_of(st.binary(max_size=400), NASTY_TEXT.map(
    lambda s: s.encode("utf-8", errors="surrogateescape"))))
def test_any_bytes_give_facts_or_one_clear_error(tmp_path: Path, data: bytes) -> None:
    (tmp_path / "Gemfile.lock").write_bytes(data)
    _assert_facts_or_one_clear_error(_read(tmp_path))


@pytest.mark.parametrize(("kind", "message"), [
    ("fifo", "Gemfile.lock is a fifo, not a file; "),
    ("zero", 'Gemfile.lock is a link to "/dev/zero", a character device, not a file; '),
    ("dir", "Gemfile.lock is a directory, not a file; "),
    ("dangling", 'Gemfile.lock is a link to "nowhere", which does not exist, not a file; '),
    ("loop", 'Gemfile.lock is a link to "Gemfile.lock", which loops, not a file; '),
    ("huge", "Gemfile.lock is over 8 MB, more than any lockfile Bundler writes; "),
    ("missing", "Gemfile.lock is missing; run bundle lock where the Gemfile is"),
])
def test_a_lockfile_that_is_not_one_is_refused_without_reading_it(
        tmp_path: Path, kind: str, message: str) -> None:
    path = tmp_path / "Gemfile.lock"
    if kind == "fifo":
        os.mkfifo(path)  # a reader would block forever
    elif kind == "zero":
        path.symlink_to("/dev/zero")  # endless
    elif kind == "dir":
        path.mkdir()
    elif kind == "dangling":
        path.symlink_to("nowhere")
    elif kind == "loop":
        path.symlink_to("Gemfile.lock")
    elif kind == "huge":
        with path.open("wb") as f:
            f.truncate(2 << 30)  # sparse: 2 GB of NUL bytes, of which 8 MB are read
    proc = _read(tmp_path)
    _assert_facts_or_one_clear_error(proc)
    assert proc.stderr.startswith(message), proc.stderr


def test_a_link_to_a_lockfile_in_the_app_is_read(tmp_path: Path) -> None:
    (tmp_path / "locks").mkdir()
    (tmp_path / "locks/Gemfile.lock").write_text(
        "GEM\n  remote: https://rubygems.org/\n  specs:\n    pg (1.5.9)\n")
    (tmp_path / "Gemfile.lock").symlink_to("locks/Gemfile.lock")
    assert _read(tmp_path).stdout == "gem pg 1.5.9\n"


def _compile(app: Path, tmp: Path) -> subprocess.CompletedProcess[str]:
    for d in ("cache", "env", "home"):
        (tmp / d).mkdir(exist_ok=True)
    return subprocess.run([str(BUILDPACKS / "ruby/bin/compile"), str(app), str(tmp / "cache"),
                           str(tmp / "env")], capture_output=True, text=True, errors="replace",
                          timeout=120, check=False, stdin=subprocess.DEVNULL,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp / "home"),
                               "LANG": "C.UTF-8", "STACK": "debian-12"})


@settings(FUZZ, max_examples=max(5, EXAMPLES // 5))
@given(lockfiles())
def test_bin_compile_builds_or_fails_saying_why(
        tmp_path: Path, lock: tuple[bytes, dict[str, object]]) -> None:
    # A Gemfile without gems: Bundler installs nothing (this machine cannot reach
    # rubygems.org) but reads the whole lockfile, as it does in a push.
    subprocess.run(["rm", "-rf", str(tmp_path / "app"), str(tmp_path / "cache")], check=True)
    app = tmp_path / "app"
    app.mkdir()
    (app / "Gemfile").write_text('source "https://rubygems.org"\n')
    (app / "Gemfile.lock").write_bytes(lock[0])
    proc = _compile(app, tmp_path)
    assert not BACKTRACE.search(proc.stdout + proc.stderr), proc.stdout + proc.stderr
    assert not re.search(r"compile: line \d+: ", proc.stderr), proc.stderr  # no bash error
    if proc.returncode == 0:
        assert "Bundle complete!" in proc.stdout, proc.stdout
    else:
        assert proc.returncode == 1, proc.stdout + proc.stderr
        # The last block of " !     " lines is the error (warnings come before it).
        blocks = [b.strip("\n") for b in proc.stderr.split("\n\n") if b.strip()]
        assert blocks and blocks[-1].startswith(" !     "), proc.stderr
        assert blocks[-1].removeprefix(" !     ").startswith((
            "Gemfile.lock", "Failed to install gems via Bundler (bundle install exit ")), \
            proc.stdout + proc.stderr
