"""Stacks: the Debian root filesystems that builds and dynos run on.

A stack is made once with debootstrap from Debian's archive into a temporary directory
beside its final place, then renamed to ``<state_dir>/stacks/<name>``, so a half-built
stack is never seen. A marker file in the root records the definition it was built
from; a stack whose marker does not match its definition (the package list changed) is
rebuilt. Built stacks can be kept in a cache directory keyed by the definition's hash,
so the test suite (and a reinstall) does not debootstrap every time.

Heroku's equivalent is ``heroku-24`` (an Ubuntu image with the common libraries);
here the default is ``debian-13`` (trixie: Python 3.13, Node.js 20).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from dynod.errors import FailedPrecondition, NotFound, Unavailable
from dynod.paths import stack_root, stacks_dir
from dynod.system import processes

DEBIAN_MIRROR = "http://deb.debian.org/debian"
MARKER = "etc/dynod-stack.json"
POLICY_RC_D = "usr/sbin/policy-rc.d"
# dpkg in a stack: no fsync per file (a stack half made is thrown away, never used), and
# no manuals, info pages, translations or documentation but the copyright files, which
# nothing in a build or a dyno reads: a third of the install time and 10% of the size.
DPKG_CONFIG = "etc/dpkg/dpkg.cfg.d/dynod-stack"
DPKG_OPTIONS = """\
# dynod: how packages are unpacked into this stack
force-unsafe-io
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
path-include=/usr/share/locale/locale.alias
"""
CACHE_ENV = "DYNOD_STACK_CACHE"
DEFAULT_CACHE = Path("/var/cache/dynod/stacks")
# debootstrap of trixie with the packages below: a few minutes on a slow mirror.
DEBOOTSTRAP_TIMEOUT = 30 * 60.0

# What builds and dynos expect to find: Python and Node.js for their buildpacks, git and
# curl for buildpacks that fetch, and the compilers and headers that common Python and
# Node packages with C extensions need (psycopg, cffi, bcrypt, sqlite3). The other
# languages' runtimes are layers over this, made when an app first needs one (layers).
COMMON_PACKAGES: tuple[str, ...] = (
    "ca-certificates",
    "curl",
    "git",
    "procps",
    "tzdata",
    "python3",
    "python3-venv",
    "python3-dev",
    "nodejs",
    "npm",
    "gcc",
    "g++",
    "make",
    "libc6-dev",
    "pkg-config",
    "libffi-dev",
    "libssl-dev",
    "libpq-dev",
    "libsqlite3-dev",
    "zlib1g-dev",
    # the clients of the add-ons, for `dynoctl pg:psql` / `redis:cli` in a one-off dyno
    # and for apps that shell out to them (pg_dump in a Rails task)
    "postgresql-client",
    "redis-tools",
)


@dataclass(frozen=True)
class StackDefinition:
    """How to make one stack. Changing any field but ``python`` changes ``cache_key``
    (a rebuild).

    ``python`` is the X.Y of the suite's python3, which the python buildpack names when
    an app asks for a version its stack lacks (it runs inside one stack and cannot look
    at the others); ``build_stack`` checks it against the stack it makes.
    """

    name: str
    suite: str
    python: str = ""
    packages: tuple[str, ...] = COMMON_PACKAGES
    mirror: str = DEBIAN_MIRROR
    variant: str = "minbase"
    components: tuple[str, ...] = ("main",)
    arch: str = "amd64"
    dpkg_options: str = DPKG_OPTIONS


STACKS: Mapping[str, StackDefinition] = {
    "debian-13": StackDefinition(name="debian-13", suite="trixie", python="3.13"),
    "debian-12": StackDefinition(name="debian-12", suite="bookworm", python="3.11"),
    # Debian testing: what the next release will have (Python 3.14, Go 1.27), for apps
    # that ask for a newer runtime than trixie's. Testing moves: its packages change
    # under a built stack until it is rebuilt.
    "debian-14": StackDefinition(name="debian-14", suite="forky", python="3.14"),
}
DEFAULT_STACK = "debian-13"


def get_stack(name: str) -> StackDefinition:
    """The definition of stack ``name``. Raises NotFound naming the known stacks."""
    try:
        return STACKS[name]
    except KeyError:
        known = ", ".join(sorted(STACKS))
        raise NotFound(f'stack "{name}" does not exist; available stacks: {known}') from None


# Fields that describe a stack rather than decide its content: not in the key, so
# recording one does not rebuild every stack.
DESCRIPTIVE_FIELDS = ("python",)


def cache_key(defn: StackDefinition) -> str:
    """A short stable hash of everything that decides the stack's content."""
    doc = {k: v for k, v in asdict(defn).items() if k not in DESCRIPTIVE_FIELDS}
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


DEBOOTSTRAP_SCRIPTS = Path("/usr/share/debootstrap/scripts")


def debootstrap_argv(defn: StackDefinition, target: Path,
                     scripts: Path = DEBOOTSTRAP_SCRIPTS) -> list[str]:
    """The debootstrap command that makes the base system of ``defn`` in ``target``.

    A debootstrap older than the suite has no script for it (bookworm's knows trixie,
    not forky): it is given ``sid``'s, which Debian's own scripts for bookworm, trixie
    and testing are links to.

    Only the base goes through debootstrap: its own dependency handling configures an
    ``--include`` list as large as ours in the wrong order (npm's postinst fails), so the
    packages are installed afterwards by apt inside the new root (``install_argvs``).
    """
    return [
        "debootstrap",
        f"--variant={defn.variant}",
        f"--arch={defn.arch}",
        f"--components={','.join(defn.components)}",
        "--include=ca-certificates",
        "--keyring=/usr/share/keyrings/debian-archive-keyring.gpg",
        defn.suite,
        str(target),
        defn.mirror,
        *([] if (scripts / defn.suite).exists() else [str(scripts / "sid")]),
    ]


def install_argvs(defn: StackDefinition, target: Path) -> list[list[str]]:
    """The commands, run after debootstrap, that install ``defn.packages`` with apt.

    Each runs in its own mount and PID namespace with a proc of its own on the root's
    /proc (OpenJDK's postinst runs java, which needs /proc); the mount goes away with
    the namespace, so nothing stays mounted in the stack or on the host.
    """
    apt = ["unshare", "--mount", "--pid", "--fork", f"--mount-proc={target}/proc",
           "chroot", str(target), "env", "DEBIAN_FRONTEND=noninteractive", "LC_ALL=C.UTF-8"]
    # Testing's Release file is valid for a week (stable's carries no Valid-Until): a
    # mirror that lags or serves a snapshot would stop a forky build. The signature is
    # still checked.
    return [
        [*apt, "apt-get", "update", "-q", "-o", "Acquire::Check-Valid-Until=false"],
        [*apt, "apt-get", "install", "-q", "-y", "--no-install-recommends", *defn.packages],
        [*apt, "apt-get", "clean"],
    ]






def stack_cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """The cache of built stacks: ``$DYNOD_STACK_CACHE`` or /var/cache/dynod/stacks."""
    value = (os.environ if env is None else env).get(CACHE_ENV, "")
    return Path(value) if value else DEFAULT_CACHE


def cache_entry(cache: Path, defn: StackDefinition) -> Path:
    return cache / f"{defn.name}-{cache_key(defn)}"


def marker_content(defn: StackDefinition, built_at: float) -> str:
    """The marker file's JSON: the definition, its key and when it was built."""
    doc = {"key": cache_key(defn), "built_at": round(built_at), **asdict(defn)}
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def read_marker(root: Path) -> dict[str, object] | None:
    """The marker of the stack at ``root``, or None if there is none or it is unreadable."""
    try:
        doc = json.loads((root / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def is_current(root: Path, defn: StackDefinition) -> bool:
    """True if ``root`` holds a complete stack built from exactly ``defn``."""
    marker = read_marker(root)
    return marker is not None and marker.get("key") == cache_key(defn)


def python_version(root: Path) -> str | None:
    """The stack's python3 as ``X.Y`` (from the /usr/bin/python3 link), or None."""
    for candidate in (root / "usr/bin/python3", root / "bin/python3"):
        try:
            name = candidate.readlink().name
        except OSError:
            continue
        if name.startswith("python3."):
            return name.removeprefix("python")
    return None


Runner = Callable[[Sequence[str], Callable[[str], None]], int]


def default_runner(argv: Sequence[str], on_line: Callable[[str], None]) -> int:
    return processes.stream(argv, on_line, timeout=DEBOOTSTRAP_TIMEOUT)


def copy_tree(src: Path, dst: Path, runner: Runner, on_line: Callable[[str], None]) -> None:
    # cp -a keeps owners, modes, device nodes and hard links, which shutil does not.
    status = runner(["cp", "-a", "--reflink=auto", f"{src}/.", str(dst)], on_line)
    if status != 0:
        raise Unavailable(f"could not copy stack {src} to {dst} (cp exit {status})")


def prune(root: Path) -> None:
    """Drop what a stack does not need at run time: downloaded .debs and apt lists."""
    for sub in ("var/cache/apt/archives", "var/lib/apt/lists"):
        directory = root / sub
        if not directory.is_dir():
            continue
        for entry in directory.iterdir():
            if entry.is_file() and entry.name != "lock":
                entry.unlink()


def build_stack(
    defn: StackDefinition,
    state_dir: Path,
    *,
    cache: Path | None = None,
    on_line: Callable[[str], None] = lambda _line: None,
    runner: Runner = default_runner,
    local_ca_dir: Path = Path("/usr/local/share/ca-certificates"),
) -> Path:
    """Make stack ``defn`` under ``state_dir`` unless it is current; return its root.
    Either way the stack then trusts the CAs in ``local_ca_dir`` (``trust_local_cas``).

    With ``cache``, a cached copy with the same key is used instead of debootstrap, and
    a freshly made stack is copied into the cache. Raises Unavailable if debootstrap
    fails (the archive cannot be reached, a package does not exist) and leaves nothing
    behind but the previous stack, if any.
    """
    final = stack_root(state_dir, defn.name)
    if is_current(final, defn):
        trust_local_cas(final, host_cas=local_ca_dir, runner=runner, on_line=on_line)
        return final
    stacks_dir(state_dir).mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{defn.name}.tmp-", dir=stacks_dir(state_dir)))
    try:
        tmp.chmod(0o755)
        entry = None if cache is None else cache_entry(cache, defn)
        if entry is not None and is_current(entry, defn):
            on_line(f"-----> Using cached stack {entry}")
            copy_tree(entry, tmp, runner, on_line)
        else:
            on_line(f"-----> Building stack {defn.name} ({defn.suite}) with debootstrap")
            status = runner(debootstrap_argv(defn, tmp), on_line)
            if status != 0:
                _show_log_tail(tmp / "debootstrap/debootstrap.log", on_line)
                raise Unavailable(
                    f'stack "{defn.name}": debootstrap {defn.suite} from {defn.mirror} '
                    f"failed (exit {status}); see its output above"
                )
            on_line(f"-----> Installing {len(defn.packages)} packages with apt")
            # Servers among the packages (nginx, php-fpm) must not start: their maintainer
            # scripts would run them in the chroot, on the host's network. policy-rc.d
            # (Debian's policy interface for chroots) says no while apt runs.
            policy = tmp / POLICY_RC_D
            policy.parent.mkdir(parents=True, exist_ok=True)
            policy.write_text("#!/bin/sh\n# dynod: no service starts while a stack is built\n"
                              "exit 101\n")
            policy.chmod(0o755)
            (tmp / DPKG_CONFIG).parent.mkdir(parents=True, exist_ok=True)
            (tmp / DPKG_CONFIG).write_text(defn.dpkg_options)
            for argv in install_argvs(defn, tmp):
                status = runner(argv, on_line)
                if status != 0:
                    at = argv.index("apt-get")
                    what = " ".join(argv[at - 1:at + 2])
                    raise Unavailable(
                        f'stack "{defn.name}": `{what}` failed (exit {status}); '
                        "see its output above"
                    )
            policy.unlink()
            prune(tmp)
            # The python buildpack names stacks by their recorded Python (another
            # stack's it cannot see): a suite that moved on must not go unnoticed.
            got = python_version(tmp)
            if defn.python and got != defn.python:
                raise Unavailable(
                    f'stack "{defn.name}": its python3 is {got}, but its definition says '
                    f"{defn.python}; correct python= of {defn.name} in dynod/build/stacks.py"
                )
            (tmp / MARKER).write_text(marker_content(defn, time.time()))
            if entry is not None:
                store_in_cache(tmp, entry, runner, on_line)
        trust_local_cas(tmp, host_cas=local_ca_dir, runner=runner, on_line=on_line)
        replace_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


LOCAL_CAS = Path("/usr/local/share/ca-certificates")


def local_cas(directory: Path) -> dict[str, bytes]:
    """The local CA certificates in ``directory`` (``*.crt``), by name."""
    try:
        return {p.name: p.read_bytes() for p in sorted(directory.glob("*.crt")) if p.is_file()}
    except OSError:
        return {}


def trust_local_cas(
    root: Path,
    *,
    host_cas: Path = LOCAL_CAS,
    runner: Runner = default_runner,
    on_line: Callable[[str], None] = lambda _line: None,
) -> bool:
    """Make the stack at ``root`` trust the host's local CAs (an intercepting proxy's,
    a company's): copy ``/usr/local/share/ca-certificates/*.crt`` in and run
    update-ca-certificates there. A no-op when the stack already has exactly them (also
    on a read-only stack). Returns whether the stack changed. Raises Unavailable."""
    wanted = local_cas(host_cas)
    target = root / "usr/local/share/ca-certificates"
    if local_cas(target) == wanted:
        return False
    on_line(f"-----> Trusting {len(wanted)} local CA certificate(s) of this machine")
    target.mkdir(parents=True, exist_ok=True)
    for old in target.glob("*.crt"):
        if old.name not in wanted:
            old.unlink()
    for name, data in wanted.items():
        (target / name).write_bytes(data)
        (target / name).chmod(0o644)
    status = runner(["chroot", str(root), "update-ca-certificates", "--fresh"], on_line)
    if status != 0:
        raise Unavailable(f"stack {root.name}: update-ca-certificates failed (exit {status})")
    return True


def _show_log_tail(log: Path, on_line: Callable[[str], None], lines: int = 40) -> None:
    try:
        tail = log.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return
    on_line(f" !     Last lines of {log.name}:")
    for line in tail:
        on_line(f"       {line}")


def store_in_cache(
    root: Path, entry: Path, runner: Runner, on_line: Callable[[str], None]
) -> None:
    entry.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{entry.name}.tmp-", dir=entry.parent))
    try:
        copy_tree(root, staging, runner, on_line)
        replace_dir(staging, entry)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def replace_dir(new: Path, final: Path) -> None:
    """Rename ``new`` to ``final``; an existing ``final`` is moved aside, then removed."""
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        final.rename(old)
        new.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        new.rename(final)


def require_stack(state_dir: Path, name: str) -> Path:
    """The root of built stack ``name``. Raises NotFound for an unknown stack and
    FailedPrecondition if it is not built (yet) or is out of date."""
    defn = get_stack(name)
    root = stack_root(state_dir, name)
    if not is_current(root, defn):
        raise FailedPrecondition(
            f'stack "{name}" is not built; build it with `dynoctl stacks:build {name}`'
        )
    return root
