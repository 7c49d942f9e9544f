"""Hostile slugs through the real path: ``dynoctl slugs:deploy``, then the daemon unpacks
the slug when the web dyno starts. Nothing lands outside the unpack directory, no
special file or privileged bit survives, and the app's log stream names each entry and
why it was skipped or changed."""

from __future__ import annotations

import json
import time

import pytest

from tests.sandbox.machine import Machine

pytestmark = [pytest.mark.integration]

TREES = "/var/lib/dynod/slugs/trees"

# Run inside the machine: python3 - OUT.tgz. Every hostile kind in one slug, beside
# entries that must survive (a file, an inner symlink, an absolute /app link, a hard
# link inside).
HOSTILE = r"""
import io, sys, tarfile
out = sys.argv[1]
def info(name, kind=tarfile.REGTYPE, mode=0o644, link="", data=b""):
    t = tarfile.TarInfo(name); t.type = kind; t.mode = mode; t.linkname = link
    t.size = len(data) if kind == tarfile.REGTYPE else 0
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        t.devmajor, t.devminor = 1, 3
    return t, (io.BytesIO(data) if kind == tarfile.REGTYPE else None)
D = "../" * 12
entries = [
    info("./app", tarfile.DIRTYPE, 0o755),
    info("./app/ok.txt", data=b"ok\n"),
    info("./app/sub", tarfile.DIRTYPE, 0o755),
    info("./app/sub/inner.txt", data=b"inner\n"),
    info("/tmp/hostile-absolute", data=b"x"),
    info("./app/" + D + "tmp/hostile-dotdot", data=b"x"),
    info("./app/hostile-symlink-abs", tarfile.SYMTYPE, link="/etc/passwd"),
    info("./app/hostile-symlink-rel", tarfile.SYMTYPE, link="../" + D + "etc"),
    info("./app/hostile-hardlink-abs", tarfile.LNKTYPE, link="/etc/passwd"),
    info("./app/hostile-hardlink-rel", tarfile.LNKTYPE, link="./app/" + D + "etc/shadow"),
    info("./app/hostile-chr", tarfile.CHRTYPE, 0o666),
    info("./app/hostile-blk", tarfile.BLKTYPE, 0o666),
    info("./app/hostile-fifo", tarfile.FIFOTYPE, 0o666),
    info("./app/hostile-setuid", mode=0o4755, data=b"#!/bin/sh\n"),
    info("./app/hostile-setgid-dir", tarfile.DIRTYPE, 0o2755),
    # A symlink out, then an entry written "through" it.
    info("./app/hostile-via", tarfile.SYMTYPE, link="/tmp"),
    info("./app/hostile-via/hostile-through", data=b"x"),
    info("./app/inner-link", tarfile.SYMTYPE, link="sub/inner.txt"),
    info("./app/abs-inside", tarfile.SYMTYPE, link="/app/ok.txt"),
    info("./app/hard-inside", tarfile.LNKTYPE, link="./app/ok.txt"),
]
with tarfile.open(out, "w:gz") as tar:
    for t, f in entries:
        tar.addfile(t, f)
"""

# 256 MiB of zeros: a few hundred KB compressed, far over the 100x ratio.
BOMB = r"""
import sys, tarfile
class Zeros:
    def __init__(self, n): self.n = n
    def read(self, size=-1):
        size = self.n if size < 0 else min(size, self.n); self.n -= size
        return bytes(size)
with tarfile.open(sys.argv[1], "w:gz", compresslevel=1) as tar:
    t = tarfile.TarInfo("./app"); t.type = tarfile.DIRTYPE; t.mode = 0o755; tar.addfile(t)
    t = tarfile.TarInfo("./app/bomb"); t.size = 256 << 20; tar.addfile(t, Zeros(t.size))
"""


def sh(m: Machine, script: str) -> str:
    proc = m.run(["bash", "-c", script], cwd="/tmp", timeout=300)
    assert proc.returncode == 0, f"{script}:\n{proc.stdout}{proc.stderr}"
    return proc.stdout


def deploy(m: Machine, app: str, script: str) -> str:
    """Make the slug with ``script``, deploy it with a web type; its sha256."""
    m.exec(["python3", "-c", script, f"/tmp/{app}.tgz"])
    sh(m, f"dynoctl apps:create {app} --no-remote && dynoctl slugs:deploy -a {app} "
          f"/tmp/{app}.tgz --process-type 'web=exec sleep 1000'")
    return sh(m, f"sha256sum /tmp/{app}.tgz").split()[0]


def wait_log(m: Machine, app: str, text: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while True:
        log = sh(m, f"dynoctl logs -a {app} -n 1000")
        if text in log or time.monotonic() > deadline:
            return log
        time.sleep(0.2)


def test_hostile_entries_are_skipped_or_neutralised(stack_machine: Machine) -> None:
    m = stack_machine
    sha = deploy(m, "evil", HOSTILE)
    log = wait_log(m, "evil", "hostile-setgid-dir")
    tree = sh(m, f"ls -d {TREES}/{sha}-*/app").strip()

    # Each kind named in the app's log stream, entry and why.
    for line in (
        'dynod[web.1]: slug entry "/tmp/hostile-absolute": absolute path; skipped',
        "hostile-dotdot\": path contains '..'; skipped",
        'slug entry "./app/hostile-symlink-abs": symlink to "/etc/passwd" leads outside '
        "./app; skipped",
        'slug entry "./app/hostile-symlink-rel": symlink to "../',
        'slug entry "./app/hostile-hardlink-abs": hard link to "/etc/passwd": absolute '
        "path; skipped",
        "slug entry \"./app/hostile-hardlink-rel\": hard link to \"./app/../",
        'slug entry "./app/hostile-chr": device node; skipped',
        'slug entry "./app/hostile-blk": device node; skipped',
        'slug entry "./app/hostile-fifo": FIFO; skipped',
        'slug entry "./app/hostile-setuid": setuid bit removed',
        'slug entry "./app/hostile-setgid-dir": setgid bit removed',
        'slug entry "./app/hostile-via": symlink to "/tmp" leads outside ./app; skipped',
    ):
        assert line in log, f"{line!r} not in:\n{log}"

    # Nothing outside the tree; what is inside is plain and unprivileged.
    # (A dyno's root shows the tree at /app: not outside it.)
    outside = sh(m, "find / -maxdepth 1 -name 'hostile-*'; find /tmp /etc /root /run "
                    "/var/lib/dynod -path '/run/dynod/dynos/*/root' -prune -o "
                    "-name 'hostile-*' -print")
    inside = {line for line in outside.splitlines() if line.startswith(tree + "/")}
    assert set(outside.splitlines()) == inside, outside
    assert {p.removeprefix(tree + "/") for p in inside} == {
        "hostile-setuid", "hostile-setgid-dir", "hostile-via", "hostile-via/hostile-through"}
    assert sh(m, f"test -d {tree}/hostile-via && ! test -L {tree}/hostile-via && echo dir") \
        == "dir\n"
    special = sh(m, f"find {tree} \\( -type b -o -type c -o -type p -o -type s "
                    "-o -perm /7000 \\) -print")
    assert special == "", special
    links = json.loads(sh(m, f"""python3 -c '
import json, os, sys
root = sys.argv[1]
out = {{}}
for d, dirs, files in os.walk(root):
    for n in dirs + files:
        p = os.path.join(d, n)
        if os.path.islink(p):
            out[os.path.relpath(p, root)] = os.readlink(p)
print(json.dumps(out))' {tree}"""))
    assert links == {"inner-link": "sub/inner.txt", "abs-inside": "ok.txt"}, links
    assert sh(m, f"cat {tree}/abs-inside {tree}/hard-inside") == "ok\nok\n"
    assert sh(m, f"stat -c %h {tree}/ok.txt") == "2\n"
    # /etc/passwd was not linked into the tree: its link count is still 1.
    assert sh(m, "stat -c %h /etc/passwd /etc/shadow") == "1\n1\n"


def test_decompression_bomb_is_refused(stack_machine: Machine) -> None:
    m = stack_machine
    sha = deploy(m, "bomb", BOMB)
    log = wait_log(m, "bomb", "decompression bomb")
    assert "dynod[web.1]: Error starting process: slug unpacks to more than 100 times its " \
        'compressed size (at "./app/bomb"); refusing a likely decompression bomb' in log, log
    # Nothing unpacked, nothing half-written left behind.
    assert sh(m, f"ls -A {TREES} | grep {sha[:16]} || true") == ""
    assert sh(m, f"du -sm {TREES}").split()[0] in {"0", "1"}
