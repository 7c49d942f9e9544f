"""Hostile repositories pushed over ssh (as tests/integration/test_builds.py pushes):
each is built or refused with a message, and the repository and release history stay
as they were.

| push | outcome |
|---|---|
| a 2 GB file (sparse) | refused before archiving: source over the 1G limit (Heroku's) |
| 100,000 files | built (minutes: a slow test of its own) |
| package.json `null`, a bad .python-version, a Procfile linked out | a one-line build error |
| an app.json linked to /dev/zero | built: nothing reads app.json on a push (as on Heroku) |
| a symlink out of the tree | built: the link stays a link (it resolves in the dyno) |
| a submodule elsewhere | built: an empty directory (git archive leaves it out) |
| non-UTF-8 and 255-byte file names | built, the names kept |
| an unrelated history, forced | built; unforced: git's non-fast-forward refusal |
| a tag, a branch other than main | stored, not built, said so |
"""

from __future__ import annotations

import json

import pytest

from tests.integration.test_builds import EXAMPLES, current, push, setup_push, sh
from tests.sandbox.machine import Machine

pytestmark = [pytest.mark.integration]

APP = "hostile"
GIT = "git -c user.email=t@example.com -c user.name=t"
BARE = f"git -c safe.directory=* -C /var/lib/dynod/repos/{APP}.git"


def versions(m: Machine) -> list[int]:
    out = sh(m, f"dynoctl releases -a {APP} --json")[1]
    return sorted(r["version"] for r in json.loads(out))


def remote_head(m: Machine) -> str:
    return sh(m, f"{BARE} rev-parse main")[1].strip()


def commit_all(m: Machine, script: str, message: str = "change") -> str:
    sh(m, f"cd /tmp/{APP} && {script} && git add -A && {GIT} commit -qm '{message}'")
    return sh(m, f"git -C /tmp/{APP} rev-parse HEAD")[1].strip()


def refused(m: Machine, expected: str, *, ref: str = "main") -> str:
    """A push that must fail with ``expected``, leaving releases and the repo as they were."""
    before, head = versions(m), remote_head(m)
    out = push(m, APP, ref, ok=False)
    assert expected in out, out
    assert versions(m) == before
    assert remote_head(m) == head
    sh(m, f"{BARE} fsck --no-progress")
    return out


def built(m: Machine, ref: str = "main") -> str:
    before = versions(m)
    out = push(m, APP, ref)
    assert "Released v" in out, out
    assert versions(m) == [*before, before[-1] + 1]
    assert remote_head(m) == sh(m, f"git -C /tmp/{APP} rev-parse HEAD")[1].strip()
    return out


def test_hostile_pushes(stack_machine: Machine) -> None:
    m = stack_machine
    setup_push(m, APP, str(EXAMPLES / "shell"))
    built(m)

    # A 2 GB file: sparse, so the pack is small; refused before any archive is written.
    commit_all(m, "truncate -s 2G blob")
    out = refused(m, "remote:  !     Your app's source is 2.0G uncompressed, over the 1G "
                     "limit; remove large files from the commit")
    assert "remote:  !     Push failed" in out and "(pre-receive hook declined)" in out
    sh(m, f"cd /tmp/{APP} && git reset -q --hard HEAD~1")

    # A symlink out of the tree and a submodule pointing elsewhere.
    sh(m, "rm -rf /tmp/sub && git init -q /tmp/sub && "
          f"{GIT} -C /tmp/sub commit -q --allow-empty -m sub")
    commit_all(m, "ln -s /etc/shadow shadow && ln -s ../../.. up && "
                  "git -c protocol.file.allow=always submodule add -q /tmp/sub vendor/sub")
    built(m)
    # Non-UTF-8 and very long (255-byte) file names.
    commit_all(m, "printf x > \"$(printf 'bad-\\377\\376')\" && "
                  "printf y > \"$(printf 'L%.0s' $(seq 255))\"")
    built(m)
    listing = sh(m, "for f in /var/lib/dynod/slugs/*.tgz; do "
                    "tar --quoting-style=escape -tvzf $f; done")[1]
    assert "./app/shadow -> /etc/shadow" in listing and "./app/up -> ../../.." in listing
    assert "L" * 255 in listing and "./app/bad-\\377\\376" in listing
    assert "./app/vendor/sub/" in listing

    # An app.json no reader would finish: nothing reads it on a push.
    commit_all(m, "ln -s /dev/zero app.json")
    built(m)

    # Nasty buildpack inputs: each a one-line build error, the release kept.
    commit_all(m, "echo null > package.json")
    refused(m, "remote:  !     Unable to parse package.json: it must be a JSON object")
    sh(m, f"cd /tmp/{APP} && git reset -q --hard HEAD~1")
    commit_all(m, "echo '3.13; rm -rf /' > .python-version && touch requirements.txt")
    refused(m, "remote:  !     Invalid Python version in .python-version: '3.13;rm-rf/'.")
    sh(m, f"cd /tmp/{APP} && git reset -q --hard HEAD~1")
    commit_all(m, "mv Procfile Procfile.real && ln -s /etc/shadow Procfile")
    refused(m, "Procfile is a symbolic link; make it a regular file")
    sh(m, f"cd /tmp/{APP} && git reset -q --hard HEAD~1")

    # An unrelated history: refused by git unless forced, then built.
    sh(m, f"cd /tmp/{APP} && git checkout -q --orphan other && git rm -rq --cached . && "
          f"rm -rf many vendor .gitmodules && git add -A && {GIT} commit -qm unrelated")
    out = refused(m, "[rejected]", ref="other:main")
    assert "non-fast-forward" in out or "fetch first" in out, out
    built(m, "+other:main")

    # A tag and another branch: stored, not built.
    sh(m, f"cd /tmp/{APP} && git tag v1 && git branch feature")
    before = versions(m)
    out = push(m, APP, "v1")
    assert "remote: Pushed to tag v1, which is not built; push to main or master to deploy." \
        in out, out
    out = push(m, APP, "feature")
    assert "remote: Pushed to feature, which is not built; push to main or master to deploy." \
        in out, out
    assert versions(m) == before
    assert current(m, APP)["version"] == before[-1]
    sh(m, f"{BARE} fsck --no-progress")


@pytest.mark.slow
def test_a_push_of_100000_files_builds(stack_machine: Machine) -> None:
    # Minutes (the slug packs 100,000 entries): a test of its own, started first.
    m = stack_machine
    setup_push(m, APP, str(EXAMPLES / "shell"))
    built(m)
    commit_all(m, "mkdir many && cd many && seq 100000 | xargs touch")
    built(m)
    assert current(m, APP)["version"] == 3
