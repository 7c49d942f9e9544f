"""The Debian package on fresh Debian 12 and 13 machines, as a user installs it.

Each suite gets a debootstrapped minbase root with systemd and dbus (cached under
/var/cache/dynod/test-roots, file-locked), booted as a sandbox machine with that root as
its lower layer (``Machine(lower=...)``): nothing of the host's / or of the working
tree's venv is in it. The .deb is built inside a machine of the same suite (its venv is
bound to that suite's python3.X), with ``packaging/build-deb``, cached by the content
of the tree. Then: apt installs it (dependencies from Debian's archive), dynod.service
runs, the example Flask app is deployed by git push over ssh and answers through the
router; an upgrade to a rebuilt package with a higher version restarts dynod and no
dyno while requests keep succeeding; apt purge leaves no dynod files, units, users or
dynos.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import built_stack, stack_bind
from tests.integration.test_builds import push, setup_push
from tests.integration.test_dynos import wait_for
from tests.sandbox.machine import PROJECT, Machine

pytestmark = [pytest.mark.integration, pytest.mark.network, pytest.mark.slow]

ROOTS = Path(os.environ.get("DYNOD_TEST_ROOTS", "/var/cache/dynod/test-roots"))
MIRROR = "http://deb.debian.org/debian"
SUITES = ("bookworm", "trixie")
# What a minimal Debian host that boots has; the package brings in everything else.
BASE_PACKAGES = ("systemd", "systemd-sysv", "dbus", "ca-certificates")
# Building the package also needs git (build-deb lists the tree's files with it).
BUILD_EXTRA = ("git", "lintian", "dpkg-dev", "fakeroot")
VERSION = re.search(r'^version = "(.+)"$', (PROJECT / "pyproject.toml").read_text(),
                    re.M).group(1)  # type: ignore[union-attr]
UPGRADE = f"{VERSION}+up1"
ARCH = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True,
                      check=True).stdout.strip()
DEBS_IN_MACHINE = "/var/cache/dynod-debs"


# --------------------------------------------------------------------------- roots


def _chroot(root: Path, *argv: str) -> None:
    subprocess.run(["chroot", str(root), "env", "DEBIAN_FRONTEND=noninteractive",
                    "LC_ALL=C.UTF-8", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", *argv],
                   check=True, capture_output=True, timeout=1800)


def _trust_host(root: Path) -> None:
    """The host's resolvers and local CAs (this machine's HTTPS goes through a proxy
    whose CA only the host trusts), as for stacks."""
    shutil.copyfile("/etc/resolv.conf", root / "etc/resolv.conf")
    local = Path("/usr/local/share/ca-certificates")
    if local.is_dir():
        for crt in local.iterdir():
            shutil.copyfile(crt, root / "usr/local/share/ca-certificates" / crt.name)
    _chroot(root, "update-ca-certificates")


def _build_root(suite: str, target: Path, build: bool) -> None:
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    if build:  # the base root plus the build dependencies
        tmp.mkdir()
        subprocess.run(["cp", "-a", "--reflink=auto", f"{debian_root(suite)}/.", str(tmp)],
                       check=True, capture_output=True)
    else:
        subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
             "--keyring=/usr/share/keyrings/debian-archive-keyring.gpg", suite, str(tmp),
             MIRROR], check=True, capture_output=True, timeout=1800)
        _trust_host(tmp)
    if build:
        control = tmp / "tmp/dynod-control"
        (control / "debian").mkdir(parents=True)
        shutil.copyfile(PROJECT / "packaging/debian/control", control / "debian/control")
        _chroot(tmp, "apt-get", "update", "-q")
        _chroot(tmp, "apt-get", "install", "-q", "-y", "--no-install-recommends", *BUILD_EXTRA)
        _chroot(tmp, "apt-get", "build-dep", "-q", "-y", "--no-install-recommends",
                "/tmp/dynod-control")
        shutil.rmtree(control)
    _chroot(tmp, "apt-get", "clean")
    for lists in (tmp / "var/lib/apt/lists").glob("*_dists_*"):
        lists.unlink()
    (tmp / ".dynod-test-root").write_text(suite + "\n")
    tmp.rename(target)


def debian_root(suite: str, build: bool = False) -> Path:
    """A minbase ``suite`` root with systemd and dbus (and the package's build
    dependencies when ``build``), made once and cached; the build flavour is keyed by
    debian/control, so a changed Build-Depends makes a new one."""
    ROOTS.mkdir(parents=True, exist_ok=True)
    name = suite
    if build:
        source = (PROJECT / "packaging/debian/control").read_text().split("\n\n")[0]
        name = f"{suite}-build-{hashlib.sha256(source.encode()).hexdigest()[:12]}"
    target = ROOTS / name
    with (ROOTS / f".{name}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / ".dynod-test-root").exists():
            shutil.rmtree(target, ignore_errors=True)
            _build_root(suite, target, build)
    return target


def built_debs(suite: str) -> Path:
    """The directory with dynod_VERSION and dynod_UPGRADE .debs for ``suite``, built in a
    machine of that suite; build-deb skips a build whose content key is unchanged."""
    out = ROOTS / "debs" / suite
    out.mkdir(parents=True, exist_ok=True)
    pip_cache = ROOTS / "pip" / suite
    pip_cache.mkdir(parents=True, exist_ok=True)
    with (ROOTS / f".debs-{suite}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with Machine(lower=debian_root(suite, build=True),
                     binds=[(str(out), DEBS_IN_MACHINE), (str(pip_cache), "/root/.cache/pip")]
                     ) as m:
            for version in (VERSION, UPGRADE):
                proc = m.run([str(PROJECT / "packaging/build-deb"), DEBS_IN_MACHINE],
                             env={"DYNOD_DEB_VERSION": version}, timeout=1800)
                assert proc.returncode == 0, proc.stdout + proc.stderr
                print(proc.stdout.strip())
    return out


# --------------------------------------------------------------------------- helpers


def sh(m: Machine, script: str, *, ok: bool = True, timeout: float = 900) -> str:
    proc = m.run(["bash", "-c", script], cwd="/tmp", timeout=timeout)
    out = proc.stdout + proc.stderr
    if ok:
        assert proc.returncode == 0, f"{script}:\n{out}"
    return out


def unit_ids(m: Machine, pattern: str) -> dict[str, str]:
    """Loaded units matching ``pattern``, each with its InvocationID (new at each start)."""
    names = m.exec(["systemctl", "list-units", "--plain", "--no-legend", "--all",
                    pattern]).stdout.split("\n")
    ids = {}
    for line in names:
        if not line.strip():
            continue
        unit = line.split()[0]
        ids[unit] = m.exec(["systemctl", "show", "-p", "InvocationID", "--value",
                            unit]).stdout.strip()
    return ids


CLIENT = """
import http.client, json, sys, time
from pathlib import Path
host, stop = sys.argv[1], Path(sys.argv[2])
n, failures = 0, []
while not stop.exists():
    n += 1
    try:
        conn = http.client.HTTPConnection("127.0.0.1", 80, timeout=10)
        conn.request("GET", "/", headers={"Host": host})
        resp = conn.getresponse()
        body = resp.read().decode(errors="replace")
        conn.close()
        if resp.status != 200 or "Hello from dynod" not in body:
            failures.append(f"{time.time():.3f} {resp.status} {body[:80]!r}")
    except Exception as exc:
        failures.append(f"{time.time():.3f} {exc!r}")
print(json.dumps({"requests": n, "failures": failures}))
"""


def get_page(m: Machine, host: str) -> str:
    code = ("import http.client,sys; c=http.client.HTTPConnection('127.0.0.1',80,timeout=10);"
            "c.request('GET','/',headers={'Host':sys.argv[1]}); r=c.getresponse();"
            "print(r.status); print(r.read().decode())")
    return m.exec(["python3", "-c", code, host], check=False).stdout


def diagnose(m: Machine) -> str:
    """What a user would look at when the app does not answer."""
    return sh(m, "dynoctl ps -a flask; systemctl --no-pager list-units --all 'dynod*'; "
                 "journalctl --no-pager -o cat -n 30 _SYSTEMD_UNIT=dynod.service", ok=False)


def package_files(m: Machine) -> list[str]:
    return m.exec(["dpkg-query", "-L", "dynod"]).stdout.split()


# --------------------------------------------------------------------------- the test


@pytest.fixture(params=SUITES)
def suite(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def debian_machine(suite: str) -> Iterator[tuple[Machine, Path]]:
    # The roots and packages first, the stack after: on a fresh machine another worker
    # builds the stack meanwhile (not the ``stack`` fixture, which would wait for it).
    debs = built_debs(suite)
    root = debian_root(suite)
    m = Machine(lower=root,
                binds=[(str(debs), f"{DEBS_IN_MACHINE}:ro"), stack_bind(built_stack())])
    m.boot()
    try:
        yield m, debs
    finally:
        m.shutdown()
        assert not m.residue()


def test_install_deploy_upgrade_purge(suite: str, debian_machine: tuple[Machine, Path]
                                      ) -> None:
    m, debs = debian_machine
    first = f"dynod_{VERSION}_{ARCH}.deb"
    second = f"dynod_{UPGRADE}_{ARCH}.deb"

    # lintian on what we install: no errors (build-deb refuses those); warnings listed.
    report = (debs / f"{first}.lintian").read_text()
    assert not re.search(r"^E: ", report, re.M), report
    print(f"\n{suite}: {first} {(debs / first).stat().st_size / 2**20:.1f} MiB; lintian:\n"
          + "\n".join(x for x in report.splitlines() if x.startswith("W: ")))

    # ---- install: dependencies from Debian's archive, dynod enabled and running.
    assert m.exec(["test", "-e", "/usr/bin/dynod"], check=False).returncode != 0
    sh(m, "apt-get -q update", timeout=300)
    out = sh(m, f"DEBIAN_FRONTEND=noninteractive apt-get -q -y install "
                f"{DEBS_IN_MACHINE}/{first}", timeout=900)
    assert f"Setting up dynod ({VERSION})" in out, out
    for dep in ("haproxy", "openssh-server", "git", "nftables", "debootstrap",
                "redis-server", "postgresql"):  # the last two: Recommends, for add-ons
        assert f"Setting up {dep} " in out, out
    assert m.exec(["systemctl", "is-active", "dynod.service"], check=False
                  ).stdout.strip() == "active"
    assert m.exec(["systemctl", "is-enabled", "dynod.service"]).stdout.strip() == "enabled"
    version = sh(m, "dynoctl version")
    assert re.search(r"^dynoctl \S+\ndynod \S+ \(API", version), version
    assert m.exec(["getent", "passwd", "dynod"]).stdout.startswith("dynod:x:")
    files = package_files(m)
    for path in ("/usr/lib/dynod/dyno-init", "/usr/share/dynod/buildpacks/python/bin/compile",
                 "/usr/share/man/man8/dynod.8.gz", "/usr/share/man/man1/dynoctl.1.gz",
                 "/usr/lib/sysusers.d/dynod.conf", "/usr/lib/tmpfiles.d/dynod.conf"):
        assert path in files, path
    assert any(f.endswith("/systemd/system/dynod.service") for f in files)
    conffiles = m.exec(["dpkg-query", "-W", "-f=${Conffiles}", "dynod"]).stdout
    assert "/etc/dynod/dynod.toml" in conffiles
    assert "usage: dynoctl" in sh(m, "dynoctl --help")

    # ---- the example app by git push over ssh, its page through the router.
    setup_push(m, "flask", str(PROJECT / "examples/flask"))
    out = push(m, "flask")
    assert "remote: -----> Python app detected" in out, out
    assert "remote:        https://flask.dynod.localhost/ deployed to dynod" in out, out
    try:
        page = wait_for("the page through the router",
                        lambda: (p := get_page(m, "flask.dynod.localhost")).startswith("200")
                        and p, timeout=90)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{diagnose(m)}") from None
    assert "Hello from dynod" in str(page), page

    # ---- an add-on: the package's Recommends brought Debian's redis-server.
    out = sh(m, "dynoctl addons:create heroku-redis -a flask 2>&1")
    created = re.search(r"^Created (redis-[a-z]+-\d+) as REDIS_URL$", out, re.M)
    assert created, out
    addon = created.group(1)
    sh(m, "dynoctl redis:cli -a flask --no-tty -c 'SET kept across-the-upgrade'")
    redis_unit = f"dynod-redis@{addon}.service"
    redis_before = unit_ids(m, redis_unit)

    # The add-on's release rolls the dynos out (a new generation): let it finish first,
    # or its last step, the old dyno's stop, would fall in the upgrade's window.
    wait_for("the add-on release's rollout to finish", lambda: len(
        {u.rsplit("-", 1)[1] for u in unit_ids(m, "dynod-flask-*.service")}) == 1, timeout=90)

    # ---- upgrade while the app takes requests: dynod restarts, no dyno does.
    dynos = unit_ids(m, "dynod-flask-*.service")
    assert any("web" in unit for unit in dynos), dynos
    dynod_before = unit_ids(m, "dynod.service")
    m.exec(["systemd-run", "--unit=steady", "--collect", "-p",
            "StandardOutput=file:/tmp/steady.json", "python3", "-c", CLIENT,
            "flask.dynod.localhost", "/tmp/steady.stop"])
    out = sh(m, f"DEBIAN_FRONTEND=noninteractive apt-get -q -y install "
                f"{DEBS_IN_MACHINE}/{second}", timeout=900)
    assert f"Unpacking dynod ({UPGRADE}) over ({VERSION})" in out, out
    assert m.exec(["dpkg-query", "-W", "-f=${Version}", "dynod"]).stdout == UPGRADE
    wait_for("dynod answering after the upgrade",
             lambda: m.run(["dynoctl", "version"], cwd="/tmp").returncode == 0)
    dynod_after = unit_ids(m, "dynod.service")
    assert dynod_after["dynod.service"] != dynod_before["dynod.service"], "dynod not restarted"
    assert m.exec(["systemctl", "is-active", "dynod.service"]).stdout.strip() == "active"
    # A few more requests after dynod is back, then the counts.
    m.exec(["sleep", "2"])
    m.exec(["touch", "/tmp/steady.stop"])
    wait_for("the client to stop", lambda: m.exec(
        ["systemctl", "is-active", "steady"], check=False).stdout.strip() != "active")
    steady = json.loads(m.exec(["cat", "/tmp/steady.json"]).stdout)
    assert steady["requests"] > 20, steady
    assert steady["failures"] == [], steady
    assert unit_ids(m, "dynod-flask-*.service") == dynos, "a dyno was restarted"
    # The add-on's server was not restarted, and its data is there.
    assert unit_ids(m, redis_unit) == redis_before, "the upgrade restarted the add-on"
    assert "across-the-upgrade" in sh(m, "dynoctl redis:cli -a flask --no-tty -c 'GET kept'")
    print(f"{suite}: upgrade {VERSION} -> {UPGRADE}: {steady['requests']} requests, "
          f"0 failed, {len(dynos)} dynos untouched")

    # ---- remove: dynod and the router stop, state and dynos stay (a reinstall adopts them).
    sh(m, "DEBIAN_FRONTEND=noninteractive apt-get -q -y remove dynod", timeout=300)
    assert m.exec(["systemctl", "is-active", "dynod.service"], check=False
                  ).stdout.strip() != "active"
    assert m.exec(["test", "-s", "/var/lib/dynod/state.db"], check=False).returncode == 0
    assert unit_ids(m, "dynod-flask-*.service") == dynos, "remove touched a dyno"

    # ---- purge: says what it removes, then nothing of dynod is left.
    out = sh(m, "DEBIAN_FRONTEND=noninteractive apt-get -q -y purge dynod", timeout=300)
    assert "dynod: purging: removing every app, dyno and all of dynod's state" in out, out
    assert re.search(r"dynod:   [1-9]\d* running dynos", out), out
    assert "add-ons and their data" in out and addon in out, out
    assert m.exec(["dpkg-query", "-W", "dynod"], check=False).returncode != 0
    left = [f for f in files if m.exec(["test", "-e", f], check=False).returncode == 0
            and m.exec(["test", "-d", f], check=False).returncode != 0]
    assert left == [], left
    for path in ("/usr/lib/dynod", "/usr/share/dynod", "/etc/dynod", "/run/dynod",
                 "/var/cache/dynod/stacks", "/usr/bin/dynod", "/usr/bin/dynoctl"):
        assert m.exec(["test", "-e", path], check=False).returncode != 0, path
    # /var/lib/dynod is the machine's own mount point: emptied, kept.
    assert sh(m, "ls -A /var/lib/dynod 2>/dev/null || true").strip() == ""
    units = m.exec(["systemctl", "list-units", "--all", "--plain", "--no-legend",
                    "dynod*"]).stdout.strip()
    assert units == "", units
    unit_files = m.exec(["systemctl", "list-unit-files", "--no-legend", "dynod*"],
                        check=False).stdout.strip()
    assert unit_files == "", unit_files
    assert m.exec(["getent", "passwd", "dynod"], check=False).returncode == 2
    assert m.exec(["getent", "group", "dynod"], check=False).returncode == 2
    assert "dynod-" not in m.exec(["ip", "netns", "list"], check=False).stdout
    page = get_page(m, "flask.dynod.localhost")
    assert "Hello from dynod" not in page, page
