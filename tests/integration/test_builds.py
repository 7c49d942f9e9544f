"""git push over real ssh to the machine's own sshd, as the dynod git user: builds with
Heroku's output, releases, the cache, and failures that leave the running release."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from tests.sandbox.machine import Machine

pytestmark = [pytest.mark.integration, pytest.mark.network]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SSH = ("ssh -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"
       " -o BatchMode=yes")


def sh(m: Machine, script: str, *, ok: bool = True) -> tuple[int, str]:
    proc = m.run(["bash", "-c", script], cwd="/tmp", timeout=900)
    out = proc.stdout + proc.stderr
    if ok:
        assert proc.returncode == 0, f"{script}:\n{out}"
    return proc.returncode, out


def setup_push(m: Machine, app: str, source: str) -> None:
    """A key, the app, a git checkout of ``source`` with the dynod remote."""
    sh(m, "test -f /root/.ssh/id_ed25519 || { ssh-keygen -q -t ed25519 -N '' "
          "-f /root/.ssh/id_ed25519 && dynoctl keys:add /root/.ssh/id_ed25519.pub; }")
    sh(m, f"dynoctl apps:create {app}")
    sh(m, f"rm -rf /tmp/{app} && cp -r {source} /tmp/{app} && cd /tmp/{app} && "
          "git init -q -b main && git add -A && "
          "git -c user.email=t@example.com -c user.name=t commit -qm init && "
          f"git remote add dynod dynod@127.0.0.1:{app}.git")


def push(m: Machine, app: str, ref: str = "main", *, ok: bool = True) -> str:
    code, out = sh(m, f"cd /tmp/{app} && GIT_SSH_COMMAND='{SSH}' git push dynod {ref} 2>&1",
                   ok=False)
    assert (code == 0) is ok, out
    return out


def commit(m: Machine, app: str, path: str, content: str) -> None:
    sh(m, f"cd /tmp/{app} && printf %s '{content}' > {path} && git add -A && "
          "git -c user.email=t@example.com -c user.name=t commit -qm change")


def current(m: Machine, app: str) -> dict[str, object]:
    info: dict[str, object] = json.loads(sh(m, f"dynoctl releases:info -a {app} --json")[1])
    return info


def slug_names(m: Machine, app: str) -> str:
    """The file names in the current release's slug."""
    info = current(m, app)
    slug = sh(m, f"dynoctl releases -a {app} --json")[1]
    assert info["version"], slug
    return sh(m, "for f in /var/lib/dynod/slugs/*.tgz; do tar -tzf $f; done")[1]


def test_flask_push_builds_releases_and_reuses_the_cache(stack_machine: Machine) -> None:
    m = stack_machine
    setup_push(m, "flask", str(EXAMPLES / "flask"))
    t0 = time.monotonic()
    out = push(m, "flask")
    cold = time.monotonic() - t0
    for line in ("remote: -----> Building on the debian-13 stack",
                 "remote: -----> Python app detected",
                 "remote: -----> Installing dependencies using 'pip install -r requirements.txt'",
                 "remote: -----> Discovering process types",
                 "remote: -----> Compressing...",
                 "remote:        Released v2",
                 "remote:        http://flask.dynod.localhost/ deployed to dynod",
                 "remote: Verifying deploy... done."):
        assert line in out, out
    assert re.search(r"remote:        Procfile declares types\s+-> web, worker", out), out
    assert "Downloading flask" in out.lower() or "collecting flask" in out.lower(), out
    names = slug_names(m, "flask")
    assert "./app/.heroku/python/bin/gunicorn" in names
    assert re.search(r"\./app/\.heroku/python/lib/python3\.\d+/site-packages/flask/", names)
    releases = sh(m, "dynoctl releases -a flask")[1]
    assert re.search(r"v2  Deploy [0-9a-f]{8}", releases), releases

    # Unchanged requirements.txt: the cached environment, nothing downloaded.
    commit(m, "flask", "worker.py", "print(1)\n")
    t0 = time.monotonic()
    out = push(m, "flask")
    warm = time.monotonic() - t0
    assert "remote: -----> Restoring cache" in out, out
    assert "Downloading" not in out and "Collecting" not in out, out
    assert "remote:        Released v3" in out, out
    print(f"\nflask push->released: cold {cold:.1f} s, warm {warm:.1f} s")
    assert warm < cold

    # The same commit again builds nothing.
    out = push(m, "flask")
    assert "Everything up-to-date" in out and "Building" not in out, out
    assert current(m, "flask")["version"] == 3

    builds = sh(m, "dynoctl builds -a flask")[1]
    assert builds.count("succeeded") == 2, builds
    output = sh(m, "dynoctl builds:output -a flask")[1]
    assert "-----> Restoring cache" in output
    log = sh(m, "journalctl DYNOD_APP=flask -o cat --no-pager")[1]
    for event in ("Build started by user root", "Release v3 created by user root",
                  "Build succeeded"):
        assert event in log, log
    assert re.search(r"Deploy [0-9a-f]{8} by user root", log), log


def test_express_and_shell_apps(stack_machine: Machine) -> None:
    m = stack_machine
    setup_push(m, "express", str(EXAMPLES / "express"))
    out = push(m, "express")
    assert "remote: -----> Node.js app detected" in out, out
    assert re.search(r"Default types for buildpack\s+-> web", out), out
    assert "remote:        Released v2" in out, out
    assert "./app/node_modules/express/package.json" in slug_names(m, "express")

    setup_push(m, "shell", str(EXAMPLES / "shell"))
    out = push(m, "shell", "HEAD:main")
    assert "remote: -----> Procfile app detected" in out, out
    assert "remote:        Released v2" in out, out


def test_failed_builds_leave_the_release(stack_machine: Machine, tmp_path: Path) -> None:
    m = stack_machine
    setup_push(m, "shop", str(EXAMPLES / "shell"))
    push(m, "shop")
    assert current(m, "shop")["version"] == 2

    def rejected(expected: str) -> None:
        out = push(m, "shop", ok=False)
        assert expected in out, out
        assert "remote:  !     Push failed" in out, out
        assert "(pre-receive hook declined)" in out, out
        assert current(m, "shop")["version"] == 2

    # No detectable language.
    sh(m, "cd /tmp/shop && git rm -q Procfile && git -c user.email=t@e -c user.name=t "
          "commit -qm x")
    rejected("remote:  !     No default language could be detected for this app.")
    # An unavailable Python version.
    commit(m, "shop", "requirements.txt", "six\n")
    commit(m, "shop", ".python-version", "3.7\n")
    rejected("is not available on the debian-13 stack")
    # A dependency that does not exist.
    commit(m, "shop", ".python-version", "3.13\n")
    commit(m, "shop", "requirements.txt", "this-package-does-not-exist-dynod==9.9\n")
    rejected("remote:  !     Push rejected, failed to compile Python app.")

    # A push to an unknown app; a key that is not authorised.
    code, out = sh(m, f"cd /tmp/shop && GIT_SSH_COMMAND='{SSH}' git push "
                      "dynod@127.0.0.1:nosuchapp.git main 2>&1", ok=False)
    assert code != 0 and " !     No such app as nosuchapp." in out, out
    sh(m, "ssh-keygen -q -t ed25519 -N '' -f /tmp/stranger")
    code, out = sh(m, f"cd /tmp/shop && GIT_SSH_COMMAND='{SSH} -i /tmp/stranger "
                      "-o IdentitiesOnly=yes' git push dynod main 2>&1", ok=False)
    assert code != 0 and "Permission denied (publickey" in out, out
    assert current(m, "shop")["version"] == 2


def test_memory_limit_and_slug_size(stack_machine: Machine) -> None:
    m = stack_machine
    sh(m, "mkdir -p /etc/dynod && echo 'build_memory_max = \"256M\"' > /etc/dynod/dynod.toml"
          " && systemctl restart dynod")
    setup_push(m, "big", str(EXAMPLES / "shell"))
    push(m, "big")
    bp = "/opt/bp"
    sh(m, f"mkdir -p {bp}/bin && printf '#!/bin/sh\\necho Hog\\n' > {bp}/bin/detect && "
          f"printf '#!/bin/sh\\npython3 -c \"b = bytearray(1 << 30); b[::4096] = b\\\\\"x\\\\\" * "
          f"(len(b) // 4096)\"\\n' > {bp}/bin/compile && chmod +x {bp}/bin/* && "
          f"dynoctl buildpacks:set -a big {bp}")
    commit(m, "big", "x", "0")
    out = push(m, "big", ok=False)
    assert "remote:  !     Build exceeded its memory limit (256.0M) and was killed." in out or \
        "Build exceeded its memory limit" in out, out
    assert current(m, "big")["version"] == 2

    sh(m, f"printf '#!/bin/sh\\nhead -c 520M /dev/urandom > \"$1/blob\"\\n' > {bp}/bin/compile")
    commit(m, "big", "x", "1")
    out = push(m, "big", ok=False)
    assert re.search(r"remote:  !     Compiled slug size: 5\d\d\.\dM is too large \(max is 500M\)",
                     out), out
    assert current(m, "big")["version"] == 2
