"""Builds: source in, slug and release out, with Heroku's output streamed as it comes.

One build (Heroku's slug compiler, run here by the daemon as root, the untrusted parts as
the app's own uid):

1. the source tarball (``git archive`` of the pushed commit, or ``dynoctl deploy``'s
   tar of a directory) is written into the build's root filesystem: an overlay of the
   app's stack with a writable upper layer under ``<state_dir>/builds/run/<id>``;
2. every untrusted command (unpacking the source, each buildpack's detect, compile and
   release) runs as a transient unit (``units.run_build_step``) chrooted into that
   overlay, as the app's uid, in its own network namespace with egress, with memory,
   task and 15-minute limits; the app's build cache is bound at ``/tmp/cache``, its
   config vars are files in ``ENV_DIR`` (``/tmp/env``);
3. ``buildpacks.compile_app`` drives the classic buildpack API over those units and
   packs the slug; the slug is stored once by sha256 (``slugs``) and release vN
   ``Deploy <sha8>`` is made with its process types;
4. the overlay and the network namespace are removed, whatever happened.

A failed build changes nothing but its own record: no slug, no release.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tarfile
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Protocol

from dynod import paths
from dynod.build import buildpacks, stacks
from dynod.control import apps, releases, slugs
from dynod.errors import DynodError, FailedPrecondition, InvalidArgument, NotFound
from dynod.model.releases import ReleaseStatus
from dynod.slug.unpack import format_size
from dynod.store import reads
from dynod.system import journal, mounts, netns, units, users

if TYPE_CHECKING:
    from dynod.settings import Settings
    from dynod.store.sqlite import Store, Tx

# Heroku: the uncompressed checkout may be at most 1 GB (limits article).
MAX_SOURCE_BYTES = 1024 * 1024 * 1024
BUILD_TASKS_MAX = 4096
# Inside the build's root.
BUILD_DIR = PurePosixPath("/tmp/build")
CACHE_DIR = PurePosixPath("/tmp/cache")
ENV_DIR = PurePosixPath("/tmp/env")
WORK_DIR = PurePosixPath("/tmp/dynod")
SOURCE_TAR = PurePosixPath("/tmp/source.tar")
CA_BUNDLE = PurePosixPath("/etc/ssl/certs/ca-certificates.crt")
# Config vars never passed to a build (Heroku's export_env_dir blacklist).
ENV_DENY = re.compile(r"^(PATH|GIT_DIR|CPATH|CPPATH|LD_PRELOAD|LIBRARY_PATH)$")
COMMIT_RE = re.compile(r"^[0-9a-f]{7,64}$")


class BuildStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True)
class Build:
    """One build of ``app``. ``release`` is the version it made (succeeded builds)."""

    id: str
    app: str
    status: BuildStatus
    user: str
    created_at: datetime
    stack: str
    commit: str = ""
    buildpacks: tuple[str, ...] = ()
    slug_id: str = ""
    release: int = 0
    error: str = ""
    finished_at: datetime | None = None
    source_bytes: int = 0


def _to_doc(build: Build) -> str:
    doc = asdict(build)
    doc["created_at"] = build.created_at.isoformat()
    doc["finished_at"] = build.finished_at.isoformat() if build.finished_at else None
    doc["status"] = str(build.status)
    doc["buildpacks"] = list(build.buildpacks)
    return json.dumps(doc, sort_keys=True)


def _from_doc(text: str) -> Build:
    doc = json.loads(text)
    doc["created_at"] = datetime.fromisoformat(doc["created_at"])
    doc["finished_at"] = (datetime.fromisoformat(doc["finished_at"])
                          if doc.get("finished_at") else None)
    doc["status"] = BuildStatus(doc["status"])
    doc["buildpacks"] = tuple(doc.get("buildpacks", ()))
    return Build(**doc)


# --- records ----------------------------------------------------------------------------


def _put(tx: Tx, build: Build) -> None:
    tx.put_build_doc(build.app, build.id, build.created_at.isoformat(), _to_doc(build))


def list_builds(store: Store, app: str, limit: int | None = None) -> list[Build]:
    """Newest first. Raises NotFound for the app."""
    with store.read() as tx:
        reads.require_app(tx, app)
        return [_from_doc(d) for d in tx.build_docs(app, limit)]


def get_build(store: Store, app: str, build_id: str | None = None) -> Build:
    """Build ``build_id`` (a prefix of 8+ characters will do), or the latest one.
    Raises NotFound."""
    with store.read() as tx:
        reads.require_app(tx, app)
        if build_id:
            doc = tx.build_doc(app, build_id)
            if doc is not None:
                return _from_doc(doc)
            matches = [b for b in map(_from_doc, tx.build_docs(app, None))
                       if len(build_id) >= 8 and b.id.startswith(build_id)]
            if len(matches) == 1:
                return matches[0]
            raise NotFound(f'app "{app}" has no build {build_id!r}; list them with '
                           "`dynoctl builds`")
        docs = tx.build_docs(app, 1)
        if not docs:
            raise NotFound(f'app "{app}" has no builds yet; push to it with git, or '
                           "`dynoctl deploy`")
        return _from_doc(docs[0])


def log_path(settings: Settings, build_id: str) -> Path:
    return settings.state_dir / "builds" / "logs" / f"{build_id}.log"


def read_output(settings: Settings, build: Build) -> list[str]:
    """The build's output lines as they were streamed."""
    try:
        return log_path(settings, build.id).read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return []


def cache_path(settings: Settings, app: str) -> Path:
    return settings.state_dir / "cache" / app


def purge_cache(store: Store, settings: Settings, app: str) -> int:
    """Delete the app's build cache; return how many bytes it held. Raises NotFound."""
    apps.get_app(store, app)
    path = cache_path(settings, app)
    size = 0
    for directory, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                size += (Path(directory) / name).lstat().st_size
    shutil.rmtree(path, ignore_errors=True)
    return size


# --- app build settings: stack and buildpacks -----------------------------------------


@dataclass(frozen=True)
class BuildSettings:
    stack: str
    buildpacks: tuple[str, ...]


def get_settings(store: Store, app: str) -> BuildSettings:
    with store.read() as tx:
        reads.require_app(tx, app)
        got = tx.app_build_settings(app)
        assert got is not None
        return BuildSettings(got[0], tuple(got[1]))


def validate_buildpack(url: str) -> str:
    """A buildpack is a built-in name (python, nodejs, procfile, also as heroku/python),
    a git URL or an absolute local path. Raises InvalidArgument."""
    url = url.strip()
    name = url.removeprefix("heroku/")
    if name in buildpacks.BUILTIN_ORDER:
        return name
    if url.startswith(("https://", "http://", "git://", "ssh://", "git@", "file:///")) or \
            url.endswith(".git"):
        if any(c.isspace() for c in url) or url.startswith("-"):
            raise InvalidArgument(f"buildpack URL {url!r} is invalid")
        return url
    if url.startswith("/") and "\0" not in url and "\n" not in url:
        return url
    raise InvalidArgument(
        f"buildpack {url!r} is not a built-in one ({', '.join(buildpacks.BUILTIN_ORDER)}), "
        "a git URL or an absolute path; give one of those"
    )


def set_buildpacks(store: Store, app: str, urls: Sequence[str]) -> BuildSettings:
    """Replace the app's buildpack list (empty: detection). Raises NotFound,
    InvalidArgument."""
    checked = [validate_buildpack(u) for u in urls]
    if len(set(checked)) != len(checked):
        raise InvalidArgument("a buildpack is listed twice; list each once")
    with store.write() as tx:
        reads.require_app(tx, app)
        got = tx.app_build_settings(app)
        assert got is not None
        tx.set_app_build_settings(app, got[0], checked)
        return BuildSettings(got[0], tuple(checked))


def set_stack(store: Store, app: str, stack: str) -> BuildSettings:
    """Raises NotFound (app, stack)."""
    stacks.get_stack(stack)
    with store.write() as tx:
        reads.require_app(tx, app)
        got = tx.app_build_settings(app)
        assert got is not None
        tx.set_app_build_settings(app, stack, got[1])
        return BuildSettings(stack, tuple(got[1]))


# --- running a build --------------------------------------------------------------------


class RolloutWatcher(Protocol):
    def follow_rollout(self, app: str, version: int, timeout: float = 150.0) -> bool | None: ...


class ReleasePhaseFollower(Protocol):
    def follow_lines(self, app: str, version: int, on_line: Callable[[str], None],
                     indent: str = "") -> ReleaseStatus: ...


_running: set[str] = set()
_running_lock = threading.Lock()
_stack_lock = threading.Lock()


def parse_memory(text: str) -> int:
    """systemd's size syntax (``2G``, ``512M``, bytes) as bytes. Raises InvalidArgument."""
    m = re.fullmatch(r"\s*(\d+)\s*([KMGT]?)\s*", text.upper())
    if m is None:
        raise InvalidArgument(f"memory size {text!r} is invalid; write e.g. 2G or 512M")
    return int(m.group(1)) * int(1024 ** " KMGT".index(m.group(2) or " "))


@dataclass
class _Context:
    """What one build has set up, for the runner and for the clean-up."""

    app: str
    build_id: str
    uid: int
    root: Path
    cache: Path
    memory_max: int
    netns_path: Path | None = None
    resolv: Path | None = None
    steps: int = 0
    notes: list[str] = field(default_factory=list)

    def inside(self, value: str) -> str:
        """A host path under the root or the cache as the build sees it."""
        root = str(self.root)
        cache = str(self.cache)
        if value == cache or value.startswith(cache + "/"):
            return str(CACHE_DIR) + value[len(cache):]
        if value == root:
            return "/"
        return value.replace(root + "/", "/")

    def run(self, argv: Sequence[str], env: Mapping[str, str], cwd: Path,
            on_line: Callable[[str], None], extra_binds: Sequence[mounts.Bind] = ()) -> int:
        binds = [mounts.Bind(self.cache, CACHE_DIR, read_only=False), *extra_binds]
        if self.resolv is not None:
            binds.append(mounts.Bind(self.resolv, PurePosixPath("/etc/resolv.conf")))
        spec = units.BuildStepSpec(
            app=self.app, build_id=self.build_id, step=self.steps,
            argv=tuple(self.inside(a) for a in argv), root=self.root, uid=self.uid,
            cwd=self.inside(str(cwd)),
            env=tuple((k, self.inside(v)) for k, v in env.items()),
            binds=tuple(binds), netns_path=self.netns_path, memory_max=self.memory_max,
            tasks_max=BUILD_TASKS_MAX,
            runtime_max_sec=int(buildpacks.COMPILE_TIMEOUT),
        )
        self.steps += 1
        status, result = units.run_build_step(spec, on_line)
        # A child killed by the OOM killer shows as its parent exiting 137 (SIGKILL)
        # before systemd can record oom-kill; nothing else SIGKILLs a build step.
        if result == "oom-kill" or (status == 137 and result != "timeout"):
            on_line(f"{buildpacks.ERROR}Build exceeded its memory limit "
                    f"({format_size(self.memory_max)}) and was killed.")
        elif result == "timeout":
            on_line(f"{buildpacks.ERROR}Build exceeded the 15 minute limit and was killed.")
        elif status != 0 and result not in ("exit-code", "success"):
            on_line(f"{buildpacks.ERROR}Build step {spec.unit} failed: {result} "
                    f"(exit status {status})")
        return status


def _write_env_dir(path: Path, config: Mapping[str, str], uid: int) -> None:
    """Heroku's ENV_DIR: one file per config var, named by the key, holding its value."""
    path.mkdir(mode=0o700)
    for key, value in config.items():
        if ENV_DENY.match(key) or "/" in key or key in {".", ".."}:
            continue
        (path / key).write_text(value)
        os.chown(path / key, uid, uid)
    os.chown(path, uid, uid)


def _receive_source(dest: Path, chunks: Iterable[bytes]) -> int:
    received = 0
    with dest.open("wb") as f:
        for chunk in chunks:
            received += len(chunk)
            if received > MAX_SOURCE_BYTES:
                raise InvalidArgument(
                    "source is larger than 1 GB; leave big files out (.slugignore does not "
                    "apply to the upload: use .gitignore, or a smaller directory)"
                )
            f.write(chunk)
    if received == 0:
        raise InvalidArgument("source is empty; send a tar (or tar.gz) of the app's files")
    try:
        with tarfile.open(dest) as tar:
            tar.next()
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise InvalidArgument(f"source is not a tar archive ({exc}); send a tar of the "
                              "app's files") from exc
    return received


def ensure_stack(settings: Settings, name: str, on_line: Callable[[str], None]) -> Path:
    """The stack's root, built on first need (its output goes to ``on_line``)."""
    defn = stacks.get_stack(name)
    root = paths.stack_root(settings.state_dir, name)
    if stacks.is_current(root, defn):
        return root
    with _stack_lock:
        return stacks.build_stack(defn, settings.state_dir, cache=stacks.stack_cache_dir(),
                                  on_line=on_line)


def run_build(
    store: Store,
    settings: Settings,
    app: str,
    *,
    user: str,
    source: Iterable[bytes],
    commit: str = "",
    on_line: Callable[[str], None],
    rollouts: RolloutWatcher | None = None,
    phase: ReleasePhaseFollower | None = None,
) -> Build:
    """Build ``source`` (tar chunks) for ``app`` and release it; ``on_line`` gets the
    output as it comes. Returns the finished build (succeeded or failed); a failure of
    the app's own making (no language, a failed compile, a slug too large) is a failed
    build, not an exception. Raises NotFound (app), InvalidArgument (commit, source),
    FailedPrecondition (a build of this app is already running)."""
    commit = commit.strip().lower()
    if commit and not COMMIT_RE.match(commit):
        raise InvalidArgument(f"commit {commit!r} is invalid; give a git commit id")
    with store.read() as tx:
        reads.require_app(tx, app)
        got = tx.app_build_settings(app)
        uid = tx.app_uid(app)
        config = reads.current_release(tx, app).config
    assert got is not None and uid is not None
    settings_ = BuildSettings(got[0], tuple(got[1]))
    with _running_lock:
        if app in _running:
            raise FailedPrecondition(
                f'a build of app "{app}" is running; wait for it to finish, then push again')
        _running.add(app)
    try:
        return _build(store, settings, app, uid=int(uid), bs=settings_, config=dict(config),
                      user=user, source=source, commit=commit, on_line=on_line,
                      rollouts=rollouts, phase=phase)
    finally:
        with _running_lock:
            _running.discard(app)


def _build(
    store: Store, settings: Settings, app: str, *, uid: int, bs: BuildSettings,
    config: dict[str, str], user: str, source: Iterable[bytes], commit: str,
    on_line: Callable[[str], None], rollouts: RolloutWatcher | None = None,
    phase: ReleasePhaseFollower | None = None,
) -> Build:
    build = Build(id=str(uuid.uuid4()), app=app, status=BuildStatus.PENDING, user=user,
                  created_at=datetime.now(UTC), stack=bs.stack, commit=commit)
    log = log_path(settings, build.id)
    log.parent.mkdir(parents=True, exist_ok=True)
    log_file = log.open("w", buffering=1)

    def emit(line: str) -> None:
        log_file.write(line + "\n")
        on_line(line)

    run_dir = settings.state_dir / "builds" / "run" / build.id
    plan: mounts.RootfsPlan | None = None
    ctx: _Context | None = None
    net: netns.DynoNetwork | None = None
    said = False
    try:
        with store.write() as tx:
            _put(tx, build)
        journal.api_event(app, f"Build started by user {user}")
        stack_root = ensure_stack(settings, bs.stack, emit)
        # Receive the whole source before any output: a cut upload builds nothing.
        plan = mounts.RootfsPlan(dyno=f"build-{build.id[:8]}", dyno_dir=run_dir,
                                 lower=(stack_root,), binds=())
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        mounts.apply_rootfs(plan)
        root = plan.root
        source_bytes = _receive_source(root / str(SOURCE_TAR).lstrip("/"), source)
        build = replace(build, source_bytes=source_bytes)
        emit("Building source:")
        emit("")
        emit(f"{buildpacks.STEP}Building on the {bs.stack} stack")

        # systemd 252 needs a user record for User= (the dynos' nss-systemd drop-ins).
        users.ensure_user(uid)
        cache = cache_path(settings, app)
        cache.mkdir(parents=True, exist_ok=True)
        os.chown(cache, uid, uid)
        cache.chmod(0o700)
        for sub in (BUILD_DIR, WORK_DIR):
            d = root / str(sub).lstrip("/")
            d.mkdir(mode=0o755, parents=True, exist_ok=True)
            os.chown(d, uid, uid)
        os.chown(root / str(SOURCE_TAR).lstrip("/"), uid, uid)
        _write_env_dir(root / str(ENV_DIR).lstrip("/"), config, uid)

        bridge = netns.plan_bridge(settings.address_pool)
        resolv = netns.ensure_bridge(bridge, settings.runtime_dir)
        address = netns.allocate_address(bridge, netns.used_addresses())
        net = netns.plan_dyno_network(bridge, f"build-{build.id[:8]}", address)
        netns.create_dyno_network(net)
        ctx = _Context(app=app, build_id=build.id, uid=uid, root=root, cache=cache,
                       memory_max=parse_memory(settings.build_memory_max),
                       netns_path=net.netns_path, resolv=resolv)

        # Unpack as the app's uid, inside the build's root: whatever the archive holds
        # (links out, absolute names) lands in the throw-away overlay at worst.
        build_dir = root / str(BUILD_DIR).lstrip("/")
        status = ctx.run(["tar", "-x", "--no-same-owner", "--no-same-permissions",
                          "-f", str(root / str(SOURCE_TAR).lstrip("/")), "-C", str(build_dir)],
                         {"PATH": units.DEFAULT_PATH}, build_dir, emit)
        if status != 0:
            raise FailedPrecondition("the source archive could not be unpacked")
        (root / str(SOURCE_TAR).lstrip("/")).unlink()

        packs = None
        if bs.buildpacks:
            packs = [_fetch_buildpack(ctx, i, url, emit) for i, url in enumerate(bs.buildpacks)]
        base_env = {"PATH": units.DEFAULT_PATH, "LANG": "C.UTF-8",
                    "CURL_CONNECT_TIMEOUT": "30", "CURL_TIMEOUT": "180"}
        if (root / str(CA_BUNDLE).lstrip("/")).is_file():
            # Node.js has its own CA list; let it trust the stack's (local CAs included).
            base_env["NODE_EXTRA_CA_CERTS"] = str(CA_BUNDLE)
        said = True  # compile_app prints its own failures as its last lines
        result = buildpacks.compile_app(
            build_dir, cache, root / str(ENV_DIR).lstrip("/"),
            root / str(WORK_DIR).lstrip("/"), stack=bs.stack, on_line=emit, runner=ctx.run,
            buildpacks=packs, base_env=base_env, owner=uid,
        )
        said = False
        emit(f"{buildpacks.STEP}Launching...")
        slug = slugs.create_slug(store, app, checksum=result.checksum, size=result.size,
                                 process_types=dict(result.process_types), commit=commit)

        def chunks() -> Iterable[bytes]:
            with result.slug.open("rb") as f:
                while chunk := f.read(1 << 20):
                    yield chunk

        slugs.upload_slug(store, settings.state_dir / "slugs", app, slug.id, chunks())
        release = releases.create_release(store, app, slug.id, user)
        journal.api_event(app, f"{release.description} by user {user}")
        journal.api_event(app, f"Release v{release.version} created by user {user}")
        pending = release.status is ReleaseStatus.PENDING
        if pending:
            emit(f"{buildpacks.ERROR}Release command declared: this new release will not be "
                 "available until the command succeeds.")
        emit(f"{buildpacks.INDENT}Released v{release.version}")
        emit(f"{buildpacks.INDENT}http://{app}.{settings.domain}/ deployed to dynod")
        emit("")
        if pending:
            # Heroku's git push waits for the release phase (release_phase.py).
            if phase is None:
                emit("Release command declared, but this dynod runs no release phase")
            else:
                phase.follow_lines(app, release.version, emit)
        # Heroku's "Verifying deploy": the new web dynos up and routed, the old ones gone
        # (issue 7), or the release failed to come up and the previous one keeps serving.
        with store.read() as tx:
            phase_ok = tx.release(app, release.version)
        if (phase_ok is not None and phase_ok.status is ReleaseStatus.SUCCEEDED
                and rollouts is not None):
            emit(f"{buildpacks.STEP}Verifying deploy...")
            verdict = rollouts.follow_rollout(app, release.version)
            if verdict is False:
                emit(f"{buildpacks.ERROR}Release v{release.version} failed: its web dynos did "
                     "not come up (crashed at boot or R10); the previous release keeps "
                     "serving. See dynoctl logs")
            else:
                emit(f"{buildpacks.INDENT}done." if verdict else
                     f"{buildpacks.INDENT}still rolling out; see dynoctl ps")
        build = replace(build, status=BuildStatus.SUCCEEDED, slug_id=slug.id,
                        release=release.version, buildpacks=result.buildpacks)
        journal.api_event(app, "Build succeeded")
    except DynodError as exc:
        if not said:
            emit(f"{buildpacks.ERROR}{exc.message}")
        emit(f"{buildpacks.ERROR}Push failed")
        build = replace(build, status=BuildStatus.FAILED, error=exc.message)
        journal.api_event(app, "Build failed")
    except BaseException as exc:
        emit(f"{buildpacks.ERROR}Internal error: {exc}")
        emit(f"{buildpacks.ERROR}Push failed")
        build = replace(build, status=BuildStatus.FAILED, error=f"internal error: {exc}")
        journal.api_event(app, "Build failed")
        if not isinstance(exc, Exception):
            raise
    finally:
        if ctx is not None:
            units.stop_build_steps(app, build.id)
        if net is not None:
            with contextlib.suppress(Exception):
                netns.remove_dyno_network(net)
        if plan is not None:
            with contextlib.suppress(Exception):
                mounts.remove_rootfs(plan)
        build = replace(build, finished_at=datetime.now(UTC))
        with contextlib.suppress(Exception), store.write() as tx:
            if tx.app(app) is not None:
                _put(tx, build)
        log_file.close()
    return build


def _fetch_buildpack(ctx: _Context, index: int, url: str,
                     on_line: Callable[[str], None]) -> buildpacks.Buildpack:
    """A set buildpack as a local directory: built-in by name, a local path as is (it is
    copied into the build before it runs), a git URL cloned inside the build unit."""
    if url in buildpacks.BUILTIN_ORDER:
        return buildpacks.Buildpack(url, buildpacks.BUILTIN_DIR / url)
    if url.startswith("/"):
        path = Path(url)
        if not (path / "bin" / "compile").is_file():
            raise FailedPrecondition(
                f"buildpack {url}: no bin/compile there; give a directory with "
                "bin/detect and bin/compile")
        return buildpacks.Buildpack(url, path)
    target = ctx.root / "tmp" / "buildpack-src" / str(index)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.chown(target.parent, ctx.uid, ctx.uid)
    argv = ["git", "clone", "--quiet", "--depth=1", url, str(target)]
    binds: list[mounts.Bind] = []
    if url.startswith("file:///"):
        # A repository on this machine: visible (read-only) inside the build only for
        # the clone; owned by someone else, so git must be told it is safe to read.
        repo = Path(url.removeprefix("file://"))
        if not repo.is_dir():
            raise FailedPrecondition(f"buildpack {url}: no repository at {repo}")
        binds.append(mounts.Bind(repo, PurePosixPath(repo), read_only=True))
        # git drops -c and GIT_CONFIG_* for the local upload-pack; the global file stays.
        gitconfig = ctx.root / "tmp" / ".gitconfig"
        gitconfig.write_text("[safe]\n\tdirectory = *\n")
        os.chown(gitconfig, ctx.uid, ctx.uid)
    status = ctx.run(argv, {"PATH": units.DEFAULT_PATH, "HOME": str(ctx.root / "tmp")},
                     ctx.root / "tmp", on_line, binds)
    if status != 0:
        raise FailedPrecondition(f"buildpack {url} could not be cloned (git exit {status})")
    return buildpacks.Buildpack(url, target)
