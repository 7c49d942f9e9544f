"""The release phase in the sandbox, through git push as a user would: a passing and a
failing `release:` command, each checked for what the push printed, the release's
status and which release the formation runs; a config change and a rollback run it too.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.integration.test_builds import commit, push, setup_push, sh
from tests.integration.test_dynos import wait_for
from tests.sandbox.machine import Machine

pytestmark = pytest.mark.integration

SHELL_APP = Path(__file__).resolve().parents[2] / "examples" / "shell"
WEB = 'web: python3 -m http.server "$PORT"'


def releases(m: Machine, app: str) -> list[dict[str, object]]:
    return list(json.loads(sh(m, f"dynoctl releases -a {app} --json")[1]))


def status_of(m: Machine, app: str, version: int) -> str:
    return str(next(r for r in releases(m, app) if r["version"] == version)["status"])


def web_release(m: Machine, app: str) -> set[int]:
    """The releases the app's up web dynos run."""
    dynos = json.loads(sh(m, f"dynoctl ps -a {app} --json")[1])
    return {int(d["release"]) for d in dynos if d["type"] == "web" and d["state"] == "up"}


def test_passing_and_failing_release_commands(stack_machine: Machine) -> None:
    m = stack_machine
    setup_push(m, "rel", str(SHELL_APP))
    commit(m, "rel", "Procfile", f'{WEB}\nrelease: echo "migrating on $DYNO"; exit 0\n')
    out = push(m, "rel", "HEAD:main")
    assert ("remote:  !     Release command declared: this new release will not be available "
            "until the command succeeds.") in out, out
    # (git pads remote lines with spaces)
    assert re.search(r"remote: Running release command\.\.\. *\nremote: *\n"
                     r"remote: migrating on release\.\d{4} *\n"
                     r"remote: Waiting for release\.\.\.\. done\.", out), out
    assert status_of(m, "rel", 2) == "succeeded"
    wait_for("web running v2", lambda: web_release(m, "rel") == {2}, timeout=60)
    listing = sh(m, "dynoctl releases -a rel")[1]
    assert "Current: v2" in listing, listing

    # A failing release command: v3 failed, v2 keeps running.
    commit(m, "rel", "Procfile", f'{WEB}\nrelease: echo "migration failed" >&2; exit 1\n')
    out = push(m, "rel", "HEAD:main")
    assert re.search(r"remote: migration failed *\n"
                     r"remote: Waiting for release\.\.\.\. failed\.", out), out
    assert status_of(m, "rel", 3) == "failed"
    listing = sh(m, "dynoctl releases -a rel")[1]
    assert "Current: v2" in listing, listing
    assert re.search(r"^v3\s+Deploy [0-9a-f]{8} release command failed", listing, re.M), listing
    assert web_release(m, "rel") == {2}
    assert sh(m, "dynoctl releases:output -a rel v3", ok=False) == (1, "migration failed\n")
    assert sh(m, "dynoctl releases:output -a rel v2")[1].startswith("migrating on release.")

    # A config change runs the (failing) release command too: v4 fails, v2 still runs.
    sh(m, "dynoctl config:set -a rel FOO=bar")
    wait_for("v4's release phase to fail", lambda: status_of(m, "rel", 4) == "failed",
             timeout=30)
    assert web_release(m, "rel") == {2}
    # A rollback to v2 runs v2's (passing) command: v5 succeeds and the formation moves.
    sh(m, "dynoctl rollback -a rel v2")
    wait_for("v5's release phase to succeed", lambda: status_of(m, "rel", 5) == "succeeded",
             timeout=30)
    wait_for("web running v5", lambda: web_release(m, "rel") == {5}, timeout=60)
    log = sh(m, "journalctl --no-pager -o cat DYNOD_APP=rel DYNOD_DYNO=api")[1]
    assert "Running release v5 commands by user root" in log, log
