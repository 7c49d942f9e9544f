"""The suite's host check counts what the suite may leave behind, and nothing else: a
process started on the host meanwhile by someone else does not fail a green run, one
that carries the suite's mark (or lives in a sandbox's cgroup) does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HOSTCHECK = Path(__file__).resolve().parents[2] / "tests/sandbox/hostcheck"


def _hostcheck(*args: str, mark: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "DYNOD_SUITE"}
    if mark is not None:
        env["DYNOD_SUITE"] = mark
    return subprocess.run([sys.executable, str(HOSTCHECK), *args], env=env,
                          capture_output=True, text=True, check=False)


def test_a_stranger_process_is_not_the_suites_but_a_marked_one_is(tmp_path: Path) -> None:
    saved = tmp_path / "before.json"
    mark = f"test-{os.getpid()}"
    assert _hostcheck("save", str(saved), mark=mark).returncode == 0
    stranger_env = {k: v for k, v in os.environ.items() if k != "DYNOD_SUITE"}
    stranger = subprocess.Popen(["sleep", "60"], env=stranger_env)
    try:
        # Sandboxes of tests running beside this one may come and go meanwhile: only the
        # two processes made here are looked for.
        clean = _hostcheck("compare", str(saved), mark=mark)
        assert f"{stranger.pid} sleep 60" not in clean.stdout
        leaked = subprocess.Popen(["sleep", "61"], env={**stranger_env, "DYNOD_SUITE": mark})
        try:
            found = _hostcheck("compare", str(saved), mark=mark)
            assert found.returncode == 1
            assert f"{leaked.pid} sleep 61" in found.stdout
            assert f"{stranger.pid} sleep 60" not in found.stdout
        finally:
            leaked.kill()
            leaked.wait()
    finally:
        stranger.kill()
        stranger.wait()
