"""Issue 20, item 1, part A: disk and slug-tree faults under a steady request load.

One machine for the module: its /var/lib/dynod is moved onto a small tmpfs (inside the
machine's own mount namespace), so "the disk is full" is a real ENOSPC from the kernel.
Each case ends with the running release serving (0 failed requests), the store
consistent (release versions gap-free, the formation as scaled), no leaked unit, mount,
netns or veth inside the machine (and the fixture's host residue check), and the
message the user got when an action failed. Each case prints its row of the issue's
table (run with -s to see them).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import _teardown, stack_bind
from tests.integration.test_builds import SSH, sh
from tests.integration.test_dynos import dynoctl, ps, wait_for
from tests.integration.test_lifecycle import APP as SERVER
from tests.integration.test_lifecycle import WEB, Load, settled, slug, versions
from tests.sandbox.machine import Machine

pytestmark = pytest.mark.integration

APP, HOST = "shop", "shop.dynod.localhost"
WANT = {"web": 2}
STATE = "/var/lib/dynod"
FILLER = f"{STATE}/filler"
# Room enough for the state, the slugs and their trees of a few small releases.
TMPFS_SIZE = "64m"

ONTO_TMPFS = f"""set -e
systemctl stop dynod.service
mkdir -p /mnt/state-disk
mount --rbind {STATE} /mnt/state-disk
mount -t tmpfs -o size={TMPFS_SIZE},mode=0755 tmpfs {STATE}
cd /mnt/state-disk
# everything but what is mounted below (the stack, read-only)
subs=$(findmnt -rn -o TARGET | grep '^/mnt/state-disk/' || true)
tar --exclude=./stacks -cf - . | tar -C {STATE} -xpf -
for s in $subs; do
  rel=${{s#/mnt/state-disk/}}
  mkdir -p "{STATE}/$rel"
  mount --bind "$s" "{STATE}/$rel"
done
systemctl start dynod.service
"""


def deploy_slug(m: Machine, version: str) -> tuple[int, str]:
    proc = m.run(["dynoctl", "slugs:deploy", "-a", APP, slug(m, APP, version),
                  "--process-type", f"web={WEB}"], cwd="/tmp")
    return proc.returncode, proc.stdout + proc.stderr


def fill_disk(m: Machine, leave_kib: int = 0) -> None:
    """Fill the state tmpfs, leaving about ``leave_kib`` KiB free."""
    m.exec(["sh", "-c", f"dd if=/dev/zero of={FILLER} bs=64k 2>/dev/null; "
            f"truncate -s -{leave_kib}K {FILLER} 2>/dev/null; sync"], check=False)


def free_disk(m: Machine) -> None:
    m.exec(["rm", "-f", FILLER])


def leaks(m: Machine) -> list[str]:
    """What inside the machine is not one of the app's dynos: units, overlay mounts,
    netns and veths beyond the formation's (one spare network is dynod's own)."""
    dynos = ps(m, APP)
    want = {str(d["unit"]) for d in dynos}
    units = set(m.exec(["sh", "-c", "systemctl list-units --plain --no-legend --all "
                        f"'dynod-{APP}-*.service' | awk '{{print $1}}'"]).stdout.split())
    out = [f"unit {u}" for u in sorted(units - want)]
    overlays = {t.split("/")[4] for t in m.exec(
        ["sh", "-c", "findmnt -rn -t overlay -o TARGET | grep ^/run/dynod/dynos/ || true"]
    ).stdout.split()}
    if len(overlays) != len(dynos):
        out.append(f"{len(overlays)} overlay mounts for {len(dynos)} dynos: {overlays}")
    netns = m.exec(["sh", "-c", "ls /run/netns 2>/dev/null | grep '^dynod-' || true"]
                   ).stdout.split()
    if not len(dynos) <= len(netns) <= len(dynos) + 1:
        out.append(f"{len(netns)} netns for {len(dynos)} dynos: {netns}")
    veths = m.exec(["sh", "-c", "ip -o link show master dynod0 type veth | wc -l"]
                   ).stdout.strip()
    if not len(dynos) <= int(veths) <= len(dynos) + 1:
        out.append(f"{veths} veths for {len(dynos)} dynos")
    return out


def store_consistent(m: Machine) -> list[int]:
    numbers = sorted(int(r["version"]) for r in versions(m, APP))
    assert numbers == list(range(1, len(numbers) + 1)), f"release versions {numbers}"
    return numbers


@pytest.fixture(scope="module")
def disk_machine(stack: Path) -> Iterator[Machine]:
    m = Machine(binds=[stack_bind(stack)])
    m.boot()
    try:
        m.exec(["sh", "-c", ONTO_TMPFS])
        wait_for("dynod on the tmpfs", lambda: m.run(["dynoctl", "apps"]).returncode == 0)
        dynoctl(m, "apps:create", APP)
        code, out = deploy_slug(m, "d0")
        assert code == 0, out
        dynoctl(m, "ps:scale", "-a", APP, "web=2")
        wait_for("web=2 up", lambda: settled(m, APP, WANT), timeout=90)
        yield m
    finally:
        _teardown(m)


# ---- the faults: each returns what the user saw, and the time the fault took to recover

def slug_tree_deleted(m: Machine) -> tuple[str, float]:
    return _slug_tree_damaged(m, "rm -rf {tree}", "the tree is missing")


def slug_tree_corrupted(m: Machine) -> tuple[str, float]:
    return _slug_tree_damaged(m, "echo garbage > {tree}/app/server.py",
                              "app/server.py changed")


def _slug_tree_damaged(m: Machine, how: str, why: str) -> tuple[str, float]:
    tree = m.exec(["sh", "-c", f"ls -d {STATE}/slugs/trees/*-* | grep -v manifest"
                   ]).stdout.split()
    assert len(tree) >= 1, tree
    current = max(tree, key=lambda t: int(m.exec(["stat", "-c", "%Y", t]).stdout))
    m.exec(["sh", "-c", how.format(tree=current)])
    before = {str(d["unit"]): str(d.get("since", "")) for d in ps(m, APP)}
    t0 = time.monotonic()
    dynoctl(m, "ps:restart", "-a", APP, "web.1")
    wait_for("web.1 back", lambda: settled(m, APP, WANT) and ps(m, APP) != [] and any(
        str(d["unit"]) not in before or str(d.get("since", "")) != before[str(d["unit"])]
        for d in ps(m, APP) if d["name"] == "web.1"), timeout=90)
    took = time.monotonic() - t0
    said = str(wait_for("the repair said", lambda: "Slug tree repaired" in (out := dynoctl(
        m, "logs", "-a", APP, "-s", "dynod", "-d", "web.1", "-n", "50")) and out, 30))
    line = [x for x in said.splitlines() if "Slug tree repaired" in x][-1]
    assert "dynod[web.1]" in line and why in line and "checksum verified" in line, said
    assert m.exec(["sh", "-c", f"head -c 200 {current}/app/server.py"]).stdout.startswith(
        '"""A web process'), "the tree was not unpacked again"
    return line.split(": ", 1)[-1], took


def disk_full_slug_upload(m: Machine) -> tuple[str, float]:
    """No room for the slug's tarball: the deploy fails, nothing is kept."""
    return _deploy_on_full_disk(m, leave_kib=0, said="No space left")


def disk_full_slug_unpack(m: Machine) -> tuple[str, float]:
    """Room for the tarball, not for its tree: the new release's dynos cannot start, the
    release is marked failed and the previous one keeps serving; the half-unpacked
    tree is removed, and the dyno's stream says why."""
    m.exec(["sh", "-c", f"mkdir -p /tmp/{APP}-full1024/app && "
            f"head -c 8M /dev/zero > /tmp/{APP}-full1024/app/zeros"])
    # The summary names the cause, not "crashed at boot or R10".
    saw, took = _deploy_on_full_disk(
        m, leave_kib=1024, said="its web dynos did not come up: could not start: No space "
        "left on device unpacking slug ")
    logged = dynoctl(m, "logs", "-a", APP, "-s", "dynod", "-d", "web.1", "-n", "100")
    assert "Error starting process: No space left on device unpacking slug" in logged, logged
    assert not m.exec(["sh", "-c", f"ls -a {STATE}/slugs/trees | grep tmp || true"]
                      ).stdout.strip(), "a half-unpacked tree was kept"
    return saw, took


def _deploy_on_full_disk(m: Machine, leave_kib: int, said: str) -> tuple[str, float]:
    before = store_consistent(m)
    fill_disk(m, leave_kib)
    try:
        code, out = deploy_slug(m, f"full{leave_kib}")
        assert code != 0, f"the deploy worked on a full disk: {out}"
        assert said in out, out
        assert store_consistent(m) == before or _failed_last(m), versions(m, APP)
    finally:
        free_disk(m)
    t0 = time.monotonic()
    code, again = deploy_slug(m, f"after{leave_kib}")
    assert code == 0, again
    wait_for("the new release up", lambda: settled(m, APP, WANT, release=max(
        store_consistent(m))), timeout=90)
    return out.strip().splitlines()[-1], time.monotonic() - t0


def _failed_last(m: Machine) -> bool:
    return str(versions(m, APP)[0].get("status", "")) == "failed"


def disk_full_config_set(m: Machine) -> tuple[str, float]:
    before = store_consistent(m)
    fill_disk(m)
    try:
        proc = m.run(["dynoctl", "config:set", "-a", APP, "FAULT=disk"], cwd="/tmp")
        out = proc.stdout + proc.stderr
        if proc.returncode == 0:  # SQLite had free pages: then the release must be whole
            assert len(store_consistent(m)) == len(before) + 1, out
        else:
            assert "No space left" in out, out
            assert store_consistent(m) == before
    finally:
        free_disk(m)
    t0 = time.monotonic()
    dynoctl(m, "config:set", "-a", APP, "FAULT=freed")
    wait_for("the new release up", lambda: settled(m, APP, WANT, release=max(
        store_consistent(m))), timeout=90)
    return out.strip().splitlines()[-1] if out.strip() else "(nothing)", time.monotonic() - t0


def disk_full_git_push(m: Machine) -> tuple[str, float]:
    """A build on a full disk: the push says so and the fix, nothing half-written is kept,
    the repository is intact, the running release keeps serving; once space is freed the
    same push builds and releases."""
    src = f"/tmp/{APP}-push"
    url = next(line.split(":", 1)[1].strip() for line in dynoctl(
        m, "apps:info", "-a", APP).splitlines() if line.startswith("Git URL:"))
    sh(m, "test -f /root/.ssh/id_ed25519 || { ssh-keygen -q -t ed25519 -N '' "
          "-f /root/.ssh/id_ed25519 && dynoctl keys:add /root/.ssh/id_ed25519.pub; }")
    # The same server as the slugs', as a Procfile app (named without .py: not a Python
    # app).
    sh(m, f"rm -rf {src} && mkdir -p {src} && cp {SERVER} {src}/server && cd {src} && "
          "echo 'web: exec python3 -u server $PORT' > Procfile && echo push > VERSION && "
          "git init -q -b main && git add -A && "
          "git -c user.email=t@example.com -c user.name=t commit -qm init && "
          f"git remote add dynod {url}")
    push = f"cd {src} && GIT_SSH_COMMAND='{SSH}' timeout 300 git push dynod main 2>&1"
    # A first push makes the repository (and the release that must keep serving).
    assert "Released v" in sh(m, push)[1]
    wait_for("the pushed release up", lambda: settled(m, APP, WANT, release=max(
        store_consistent(m))), timeout=90)
    # 4 MiB of zeros: a few KiB as git objects, 4 MiB in the build's source.
    sh(m, f"cd {src} && head -c 4M /dev/zero > zeros && git add -A && "
          "git -c user.email=t@example.com -c user.name=t commit -qm change")
    repo = f"{STATE}/repos/{APP}.git"
    head = sh(m, f"git -c safe.directory=* -C {repo} rev-parse main")[1]
    before = store_consistent(m)
    # (a failed build's log is kept for builds:output, as Heroku keeps it)
    files = (f"find {STATE}/slugs {STATE}/builds -maxdepth 2 -not -path '*/builds/logs/*' "
             "2>/dev/null | sort")
    had = sh(m, files)[1]
    said: list[str] = []
    # Full: refused before git writes anything. Nearly full: the objects arrive, the build
    # runs out of room.
    for leave_kib in (0, 1536):
        fill_disk(m, leave_kib)
        try:
            code, out = sh(m, push, ok=False)
            assert code not in (0, 124), f"the push worked (or hung) on a full disk: {out}"
            assert "No space left" in out and STATE in out, out
            assert "internal error" not in out.lower(), out
            assert store_consistent(m) == before, versions(m, APP)
            assert sh(m, files)[1] == had, "a half-written slug or build was kept"
        finally:
            free_disk(m)
        said.append([x for x in out.splitlines() if "No space left" in x][-1].strip())
    fsck = sh(m, f"git -c safe.directory=* -C {repo} fsck --strict 2>&1")[1]
    assert "error" not in fsck.lower() and "missing" not in fsck.lower(), fsck
    assert sh(m, f"git -c safe.directory=* -C {repo} rev-parse main")[1] == head, \
        "the rejected push moved main"
    t0 = time.monotonic()
    code, again = sh(m, push, ok=False)
    assert code == 0 and f"Released v{max(before) + 1}" in again, again
    wait_for("the pushed release up", lambda: settled(m, APP, WANT, release=max(
        store_consistent(m))), timeout=90)
    return " / ".join(said), time.monotonic() - t0


JOURNAL = "/var/log/journal"
JOURNAL_DISK = "/mnt/journal-disk"
# The journal's own small filesystem: what the machine's journal holds now, and room
# for a little more (not for a burst of BURST x BURST_LINES lines of ~200 bytes).
JOURNAL_TMPFS_SIZE = "48m"
BURST, BURST_LINES = 4, 20000
# journald lets go of /var (writes to /run/log/journal), the journal is copied onto a
# tmpfs mounted over /var/log/journal (in the machine's mount namespace, which
# journald's shares), and journald goes back to /var: to the tmpfs.
ONTO_JOURNAL_TMPFS = f"""set -e
mkdir -p {JOURNAL_DISK}
mount --bind {JOURNAL} {JOURNAL_DISK}
journalctl --relinquish-var
mount -t tmpfs -o size={JOURNAL_TMPFS_SIZE},mode=2755 tmpfs {JOURNAL}
cp -a {JOURNAL_DISK}/. {JOURNAL}/
journalctl --flush
"""
# And back, keeping what was written meanwhile (journald holds no file while relinquished).
OFF_JOURNAL_TMPFS = f"""journalctl --relinquish-var
rm -f {JOURNAL}/filler
cp -a {JOURNAL}/. {JOURNAL_DISK}/
umount {JOURNAL} || umount -l {JOURNAL}
umount {JOURNAL_DISK} || umount -l {JOURNAL_DISK}
rmdir {JOURNAL_DISK}
journalctl --flush
"""


def hit(m: Machine, path: str) -> float:
    """GET through the router: 200 or the test fails; the seconds it took."""
    began = time.monotonic()
    out = m.exec(["curl", "-s", "-m", "60", "-w", "\n%{http_code}", "-H", f"Host: {HOST}",
                  f"http://127.0.0.1{path}"], check=False).stdout
    assert out.endswith("\n200"), f"GET {path}: {out}"
    return time.monotonic() - began


def journal_lines(m: Machine, pattern: str) -> int:
    return int(m.exec(["sh", "-c", f"journalctl -o cat --no-pager DYNOD_APP={APP} "
                       f"DYNOD_SOURCE=app -g '{pattern}' | wc -l"]).stdout)


def journal_disk_full(m: Machine) -> tuple[str, float]:
    """The journal's filesystem full (not /var/lib/dynod's) while the app logs bursts
    from its request handler: every request is answered (the app never blocks for long
    nor dies on its stdout: dyno-init owns it), and once space is freed new lines are in
    `logs`. What journald does: its rate limit (RateLimitBurst= 10,000 a unit in 30 s,
    scaled down when little disk is free) suppresses most of the burst ("Suppressed
    29086 messages from dynod-shop-web.2-1.service" in one run), and what passes it does
    not fit on the disk; so a few hundred of the 80,000 lines reach the journal. When
    journald, slowed by its disk, takes a trickle (hundreds of lines a second), dyno-init
    drops what it cannot take and says so (L10) instead of holding the request past the
    router's 30 s. Lines logged after the space is
    freed are in `logs` once the rate limit's interval ends (23-41 s in our runs); those
    before are lost for good. The row gives the figures of the run."""
    m.exec(["sh", "-c", ONTO_JOURNAL_TMPFS])
    try:
        m.exec(["sh", "-c", f"dd if=/dev/zero of={JOURNAL}/filler bs=64k 2>/dev/null; sync"],
               check=False)
        assert m.exec(["sh", "-c", f"df --output=avail -k {JOURNAL} | tail -1"]
                      ).stdout.strip() == "0"
        slowest = max(hit(m, f"/burst/{BURST_LINES}/full{n}") for n in range(BURST))
        hit(m, "/while-full")
        kept = journal_lines(m, "^burst full")
        notes = m.run(["dynoctl", "logs", "-a", APP, "-s", "app", "-n", "1500"],
                      cwd="/tmp").stdout
        dropped = [x for x in notes.splitlines() if "Error L10 (output buffer overflow)" in x]
        m.exec(["rm", "-f", f"{JOURNAL}/filler"])
        t0 = time.monotonic()
        # A new line at each check (about one a second) until one is in `logs`: journald
        # drops what its rate limit or the disk refused, and takes new lines once it can.
        tries: list[int] = []

        def freed_line_shown() -> bool:
            tries.append(len(tries))
            hit(m, f"/burst/1/freed{tries[-1]}")
            return "burst freed" in m.run(["dynoctl", "logs", "-a", APP, "-s", "app", "-n",
                                           "50"], cwd="/tmp").stdout

        try:
            wait_for("lines after the space was freed in logs", freed_line_shown, timeout=180)
        except AssertionError:
            print(m.exec(["sh", "-c", f"df -k {JOURNAL}; ls -la {JOURNAL}/*/; journalctl "
                          "-o short-monotonic --no-pager -n 30 SYSLOG_IDENTIFIER=systemd-journald; "
                          f"journalctl -o cat --no-pager -n 3 DYNOD_APP={APP} "
                          "DYNOD_SOURCE=app | cut -c1-60"], check=False).stdout)
            raise
        took = time.monotonic() - t0
        kept = journal_lines(m, "^burst full")  # all that journald took, written by now
        # journald's own word on it, once it can write again
        journald_said = m.exec(["sh", "-c", "journalctl -o cat --no-pager -b "
                                "SYSLOG_IDENTIFIER=systemd-journald | grep -iE 'space|full|"
                                "vacuum|rotat|suppress|failed' | sort | uniq -c | tail -n 4"],
                               check=False).stdout.strip()
    finally:
        m.exec(["sh", "-c", OFF_JOURNAL_TMPFS], check=False)
    assert not m.exec(["sh", "-c", f"findmnt -rn {JOURNAL} {JOURNAL_DISK} || true"]
                      ).stdout.strip(), "a journal mount was left"
    print(f"\njournald on the full disk said: {journald_said or '(nothing it could write)'}"
          f"\ndyno-init said: {dropped[-3:]}")
    return (f"every request answered (a {BURST_LINES}-line burst took {slowest:.1f} s at "
            f"most); {kept} of {BURST * BURST_LINES} burst lines reached the full journal, "
            f"{len(dropped)} L10 line(s); journald: {journald_said or '(nothing)'}; after `rm` "
            f"of the filler, the {len(tries)}th new line was the first in `logs`"), took


DROP_IN = "/run/systemd/system/dynod.service.d/50-fault-memory.conf"


def show(m: Machine, unit: str, prop: str) -> str:
    return m.exec(["systemctl", "show", unit, "-p", prop, "--value"]).stdout.strip()


def dynod_memory_max(m: Machine) -> tuple[str, float]:
    """dynod over its own MemoryMax while it answers API calls: the kernel kills it,
    systemd restarts it, it adopts its dynos (none restarted), the app serves throughout.

    On a cgroup v1 host systemd writes only MemoryLimit= to memory.limit_in_bytes (and
    cannot set it below the current use: EBUSY), so the drop-in sets both, 1 MiB above
    what dynod uses now. If the burst of API calls does not take dynod over it (page
    cache is reclaimed first), dynod is killed with SIGKILL instead, as the OOM killer
    would, and the row says so."""
    restarts = int(show(m, "dynod", "NRestarts"))
    dynos = {str(d["unit"]): show(m, str(d["unit"]), "InvocationID") for d in ps(m, APP)}
    limit = int(show(m, "dynod", "MemoryCurrent")) + (1 << 20)
    m.exec(["sh", "-c", f"mkdir -p {Path(DROP_IN).parent} && printf '[Service]\\n"
            f"MemoryMax={limit}\\nMemoryLimit={limit}\\nMemorySwapMax=0\\n' > {DROP_IN}"
            " && systemctl daemon-reload"])
    t0 = time.monotonic()
    how = "MemoryMax"
    try:
        m.exec(["sh", "-c", "for i in $(seq 1 12); do dynoctl releases -a shop -n 1000 --json "
                ">/dev/null 2>&1 & dynoctl logs -a shop -n 1500 >/dev/null 2>&1 & done; wait"],
               check=False)
        try:
            wait_for("dynod killed and restarted", lambda: int(show(
                m, "dynod", "NRestarts")) > restarts, timeout=15)
        except AssertionError:
            how = "SIGKILL (MemoryMax not reached)"
            m.exec(["systemctl", "kill", "-s", "KILL", "dynod"])
            wait_for("dynod restarted", lambda: int(show(
                m, "dynod", "NRestarts")) > restarts, timeout=30)
    finally:
        m.exec(["sh", "-c", f"rm -f {DROP_IN} && systemctl daemon-reload"])
    wait_for("dynod answering", lambda: m.run(["dynoctl", "apps"]).returncode == 0, 60)
    took = time.monotonic() - t0
    wait_for("dynos adopted", lambda: settled(m, APP, WANT), timeout=60)
    now = {str(d["unit"]): show(m, str(d["unit"]), "InvocationID") for d in ps(m, APP)}
    assert now == dynos, f"a dyno was restarted: {dynos} -> {now}"
    said = m.exec(["sh", "-c", "journalctl -u dynod --no-pager -o cat | grep -iE "
                   "'oom|killed|Main process exited' | tail -n 3"]).stdout.strip()
    if how == "MemoryMax":
        # cgroup v2: systemd reads memory.events ("oom-kill"); v1 has none, so it sees a
        # SIGKILL that nobody but the kernel's OOM killer sent.
        assert "oom" in said.lower() or "status=9/KILL" in said, f"not killed: {said}"
    return f"{how}, NRestarts {restarts} -> {show(m, 'dynod', 'NRestarts')}: " + (
        said.splitlines()[-1] if said else "(no line)"), took


FAULTS: dict[str, Callable[[Machine], tuple[str, float]]] = {
    "slug tree deleted": slug_tree_deleted,
    "slug tree corrupted": slug_tree_corrupted,
    "disk full: slug upload": disk_full_slug_upload,
    "disk full: slug unpack": disk_full_slug_unpack,
    "disk full: release write (config:set)": disk_full_config_set,
    "disk full: git push build": disk_full_git_push,
    "dynod over its MemoryMax": dynod_memory_max,
    "disk full: journal (log burst)": journal_disk_full,
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_fault_loses_nothing(disk_machine: Machine, fault: str) -> None:
    m = disk_machine
    name = "load-" + "".join(c if c.isalnum() else "-" for c in fault)
    load = Load(m, HOST, conns=4, name=name)
    time.sleep(1)
    try:
        saw, took = FAULTS[fault](m)
        time.sleep(1)
    finally:
        result = load.finish()
    failed = result["failed"]
    print(f"\n| {fault} | {result['requests']} | {failed} | {saw} | "
          f"{len(leaks(m))} | {took:.1f} s |")
    assert result["requests"] > 0, result
    if failed:
        print(m.exec(["sh", "-c", "journalctl --no-pager -o short-unix | grep -E "
                      "'at=error|State changed|Started|Stopp|dynod\\[|Release' | tail -n 80"]
                     ).stdout)
    assert failed == 0, result["failures"]
    assert settled(m, APP, WANT), ps(m, APP)
    store_consistent(m)
    assert leaks(m) == [], leaks(m)
