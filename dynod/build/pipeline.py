"""Builds: source in, slug and release out, with Heroku's output streamed as it comes.

One build (Heroku's slug compiler, run here by the daemon as root, the untrusted parts as
the app's own uid):

1. the source tarball (``git archive`` of the pushed commit, or ``dynoctl deploy``'s
   tar of a directory) is written into the build's root filesystem: an overlay of the
   app's stack with a writable upper layer under ``<state_dir>/builds/run/<id>``;
2. every untrusted command (unpacking the source, each buildpack's detect, compile and
   release) runs as a transient unit chrooted into that overlay (``steps.py``);
3. ``buildpacks.compile_app`` drives the classic buildpack API over those units and
   packs the slug; the slug is stored once by sha256 (``slugs``) and release vN
   ``Deploy <sha8>`` is made with its process types;
4. the push waits for the release phase and the rollout, when this dynod runs dynos
   (``watchers.py``: the build never imports the runtime);
5. the overlay and the network namespace are removed, whatever happened.

A failed build changes nothing but its own record: no slug, no release.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import threading
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from dynod import paths
from dynod.build import buildpacks, layers, stacks
from dynod.build.fetch import fetch_buildpack
from dynod.build.source import receive_source
from dynod.build.steps import (
    BUILD_DIR,
    CA_BUNDLE,
    ENV_DIR,
    SOURCE_TAR,
    WORK_DIR,
    BuildContext,
    parse_memory,
    write_env_dir,
)
from dynod.build.watchers import ReleasePhaseWatcher, RolloutWatcher
from dynod.control import apps, releases, slugs
from dynod.errors import DynodError, FailedPrecondition, InvalidArgument
from dynod.model.addons import parse_service_plan
from dynod.model.builds import Build, BuildSettings, BuildStatus
from dynod.model.events import BuildFinished, BuildStarted, EventBus
from dynod.model.releases import ReleaseStatus
from dynod.store import reads
from dynod.system import mounts, netns, systemctl, users
from dynod.system.unit_properties import DEFAULT_PATH

if TYPE_CHECKING:
    from dynod.settings import Settings
    from dynod.store.protocol import Store

# The last line of Heroku's git push.
HEROKU_VERIFIED = "Verifying deploy... done."
COMMIT_RE = re.compile(r"^[0-9a-f]{7,64}$")


def log_path(settings: Settings, build_id: str) -> Path:
    return settings.state_dir / "builds" / "logs" / f"{build_id}.log"


def read_output(settings: Settings, build: Build) -> list[str]:
    """The build's output lines as they were streamed."""
    try:
        return log_path(settings, build.id).read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return []


def addon_hints(store: Store, app: str, wanted: Iterable[str]) -> list[str]:
    """One line for each add-on service a buildpack's ``bin/release`` names
    (``addons: [heroku-postgresql:essential-0]``) that the app has none of. Heroku
    provisions them on the first deploy; dynod says what to run instead."""
    with store.read() as tx:
        have = {a.service for a in (tx.get_addon(t.addon) for t in
                                    tx.list_attachments(app=app)) if a is not None}
    lines: list[str] = []
    said: set[str] = set()
    for spec in wanted:
        try:
            plan = parse_service_plan(spec)
        except InvalidArgument:
            service = spec.partition(":")[0]
            if service not in said:
                said.add(service)
                lines.append(f"{buildpacks.STEP}This app may need an add-on dynod does not "
                             f"provide: {service}")
            continue
        if plan.service in have or plan.service in said:
            continue
        said.add(plan.service)
        lines.append(f"{buildpacks.STEP}This app may need an add-on: {plan.service} "
                     f"(dynoctl addons:create {spec} -a {app})")
    return lines


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


def stack_env(app: str) -> dict[str, str]:
    """What a buildpack needs to name another stack when its own lacks a runtime: the
    app (for the `dynoctl stack:set NAME -a APP` it prints) and every stack's Python
    (``DYNOD_STACK_PYTHONS="debian-12=3.11 debian-13=3.13 debian-14=3.14"``): the build
    runs inside one stack and cannot look at the others."""
    pythons = " ".join(f"{name}={defn.python}" for name, defn in sorted(stacks.STACKS.items())
                       if defn.python)
    return {"DYNOD_APP": app, "DYNOD_STACK_PYTHONS": pythons}




# --- running a build --------------------------------------------------------------------


def _in_root(root: Path, path: PurePosixPath) -> Path:
    """Where ``path`` as the build sees it (``/tmp/build``) is on the host."""
    return root / str(path).lstrip("/")


class Builder:
    """Runs builds, at most one per app at a time, and builds stacks, one at a time.
    Made once by the composition root; ``run_build`` and ``ensure_stack`` are safe from
    any thread.

    ``rollout`` and ``release_phase`` are what a push reports on after the release is
    made (the runtime's supervisor and release phase); None where no dynos run."""

    def __init__(self, store: Store, settings: Settings, events: EventBus, *,
                 rollout: RolloutWatcher | None = None,
                 release_phase: ReleasePhaseWatcher | None = None) -> None:
        self.store = store
        self.settings = settings
        self.events = events
        self.rollout = rollout
        self.release_phase = release_phase
        self._running: set[str] = set()  # apps with a build in progress
        self._running_lock = threading.Lock()
        self._stack_lock = threading.Lock()  # two builds of one stack would collide

    def ensure_stack(self, name: str, on_line: Callable[[str], None]) -> Path:
        """The stack's root, built on first need (its output goes to ``on_line``).
        Raises NotFound (no such stack)."""
        defn = stacks.get_stack(name)
        root = paths.stack_root(self.settings.state_dir, name)
        if stacks.is_current(root, defn):
            return root
        with self._stack_lock:
            return stacks.build_stack(defn, self.settings.state_dir,
                                      cache=stacks.stack_cache_dir(), on_line=on_line)

    def ensure_layers(self, name: str, wanted: Sequence[str],
                      on_line: Callable[[str], None]) -> tuple[Path, ...]:
        """The lower directories for stack ``name`` with language layers ``wanted``, top
        first: each layer and the stack built on first need. Raises NotFound (stack),
        InvalidArgument (layer), Unavailable (apt failed)."""
        self.ensure_stack(name, on_line)
        defn = stacks.get_stack(name)
        for layer in wanted:
            if not layers.is_current(layers.layer_root(self.settings.state_dir, name, layer),
                                     defn, layers.get_layer(layer)):
                with self._stack_lock:
                    layers.build_layer(defn, layer, self.settings.state_dir,
                                       cache=stacks.stack_cache_dir(), on_line=on_line)
        return layers.lowers(self.settings.state_dir, name, wanted)

    def run_build(
        self,
        app: str,
        *,
        user: str,
        source: Iterable[bytes],
        commit: str = "",
        on_line: Callable[[str], None],
    ) -> Build:
        """Build ``source`` (tar chunks) for ``app`` and release it; ``on_line`` gets the
        output as it comes. Returns the finished build (succeeded or failed); a failure
        of the app's own making (no language, a failed compile, a slug too large) is a
        failed build, not an exception. Raises NotFound (app), InvalidArgument (commit,
        source), FailedPrecondition (a build of this app is already running)."""
        store = self.store
        commit = commit.strip().lower()
        if commit and not COMMIT_RE.match(commit):
            raise InvalidArgument(f"commit {commit!r} is invalid; give a git commit id")
        with store.read() as tx:
            reads.require_app(tx, app)
            settings_ = tx.app_build_settings(app)
            uid = tx.app_uid(app)
            config = reads.current_release(tx, app).config
        assert settings_ is not None and uid is not None
        with self._running_lock:
            if app in self._running:
                raise FailedPrecondition(
                    f'a build of app "{app}" is running; wait for it to finish, then push '
                    "again")
            self._running.add(app)
        try:
            return self._build(app, uid=int(uid), bs=settings_, config=dict(config),
                               user=user, source=source, commit=commit, on_line=on_line)
        finally:
            with self._running_lock:
                self._running.discard(app)

    def _build(
        self, app: str, *, uid: int, bs: BuildSettings, config: dict[str, str], user: str,
        source: Iterable[bytes], commit: str, on_line: Callable[[str], None],
    ) -> Build:
        store, settings = self.store, self.settings
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
        ctx: BuildContext | None = None
        net: netns.DynoNetwork | None = None
        said = False
        try:
            with store.write() as tx:
                tx.put_build(build)
            self.events.publish(BuildStarted(app, user))
            # Receive the whole source before any output: a cut upload builds nothing. It
            # goes straight into the upper layer of the build's root, before the mount,
            # since its files say which language layers the root needs under it.
            run_dir.mkdir(mode=0o700, parents=True)
            upper_tmp = run_dir / "upper" / SOURCE_TAR.parent.relative_to("/")
            upper_tmp.mkdir(parents=True)
            upper_tmp.chmod(0o1777)
            source_bytes = receive_source(upper_tmp / SOURCE_TAR.name, source)
            build = replace(build, source_bytes=source_bytes)
            wanted = layers.layers_for(layers.source_files(upper_tmp / SOURCE_TAR.name),
                                       bs.buildpacks)
            lower = self.ensure_layers(bs.stack, wanted, emit)
            plan = mounts.RootfsPlan(dyno=f"build-{build.id[:8]}", dyno_dir=run_dir,
                                     lower=lower, binds=())
            mounts.apply_rootfs(plan)
            root = plan.root
            emit("Building source:")
            emit("")
            on = f" with the {', '.join(wanted)} layer{'s' if len(wanted) > 1 else ''}"
            emit(f"{buildpacks.STEP}Building on the {bs.stack} stack{on if wanted else ''}")

            # systemd 252 needs a user record for User= (the dynos' nss-systemd drop-ins).
            users.ensure_user(uid)
            cache = cache_path(settings, app)
            cache.mkdir(parents=True, exist_ok=True)
            os.chown(cache, uid, uid)
            cache.chmod(0o700)
            for sub in (BUILD_DIR, WORK_DIR):
                d = _in_root(root, sub)
                d.mkdir(mode=0o755, parents=True, exist_ok=True)
                os.chown(d, uid, uid)
            os.chown(_in_root(root, SOURCE_TAR), uid, uid)
            write_env_dir(_in_root(root, ENV_DIR), config, uid)

            bridge = netns.plan_bridge(settings.address_pool)
            resolv = netns.ensure_bridge(bridge, settings.runtime_dir)
            address = netns.allocate_address(bridge, netns.used_addresses())
            net = netns.plan_dyno_network(bridge, f"build-{build.id[:8]}", address)
            netns.create_dyno_network(net)
            ctx = BuildContext(app=app, build_id=build.id, uid=uid, root=root, cache=cache,
                               memory_max=parse_memory(settings.build_memory_max),
                               init=mounts.find_init(settings.dyno_init),
                               netns_path=net.netns_path, resolv=resolv)

            # Unpack as the app's uid, inside the build's root: whatever the archive holds
            # (links out, absolute names) lands in the throw-away overlay at worst.
            build_dir = _in_root(root, BUILD_DIR)
            status = ctx.run(["tar", "-x", "--no-same-owner", "--no-same-permissions",
                              "-f", str(_in_root(root, SOURCE_TAR)), "-C", str(build_dir)],
                             {"PATH": DEFAULT_PATH}, build_dir, emit)
            if status != 0:
                raise FailedPrecondition("the source archive could not be unpacked")
            _in_root(root, SOURCE_TAR).unlink()

            packs = None
            if bs.buildpacks:
                packs = [fetch_buildpack(ctx, i, url, emit)
                         for i, url in enumerate(bs.buildpacks)]
            base_env = {"PATH": DEFAULT_PATH, "LANG": "C.UTF-8",
                        "CURL_CONNECT_TIMEOUT": "30", "CURL_TIMEOUT": "180", **stack_env(app)}
            if _in_root(root, CA_BUNDLE).is_file():
                # Node.js has its own CA list; let it trust the stack's (local CAs included).
                base_env["NODE_EXTRA_CA_CERTS"] = str(CA_BUNDLE)
            said = True  # compile_app prints its own failures as its last lines
            result = buildpacks.compile_app(
                build_dir, cache, _in_root(root, ENV_DIR), _in_root(root, WORK_DIR),
                stack=bs.stack, on_line=emit, runner=ctx.run, buildpacks=packs,
                base_env=base_env, owner=uid,
            )
            said = False
            for line in addon_hints(store, app, result.addons):
                emit(line)
            emit(f"{buildpacks.STEP}Launching...")
            slug = slugs.create_slug(store, app, checksum=result.checksum, size=result.size,
                                     process_types=dict(result.process_types), commit=commit,
                                     stack=bs.stack, layers=wanted)

            def chunks() -> Iterable[bytes]:
                with result.slug.open("rb") as f:
                    while chunk := f.read(1 << 20):
                        yield chunk

            slugs.upload_slug(store, settings.state_dir / "slugs", app, slug.id, chunks())
            # ReleaseCreated: its app[api] lines, the supervisor and the release phase.
            release = releases.create_release(store, self.events, app, slug.id, user)
            self._report_release(app, release.version, release.status, emit)
            build = replace(build, status=BuildStatus.SUCCEEDED, slug_id=slug.id,
                            release=release.version, buildpacks=result.buildpacks)
            self.events.publish(BuildFinished(app, succeeded=True))
        except DynodError as exc:
            if not said:
                emit(f"{buildpacks.ERROR}{exc.message}")
            emit(f"{buildpacks.ERROR}Push failed")
            build = replace(build, status=BuildStatus.FAILED, error=exc.message)
            self.events.publish(BuildFinished(app, succeeded=False))
        except BaseException as exc:
            emit(f"{buildpacks.ERROR}Internal error: {exc}")
            emit(f"{buildpacks.ERROR}Push failed")
            build = replace(build, status=BuildStatus.FAILED, error=f"internal error: {exc}")
            self.events.publish(BuildFinished(app, succeeded=False))
            if not isinstance(exc, Exception):
                raise
        finally:
            if ctx is not None:
                systemctl.stop_build_steps(app, build.id)
            if net is not None:
                with contextlib.suppress(Exception):
                    netns.remove_dyno_network(net)
            if plan is not None:
                with contextlib.suppress(Exception):
                    mounts.remove_rootfs(plan)
            elif run_dir.exists():  # the source came, the root was never mounted
                shutil.rmtree(run_dir, ignore_errors=True)
            build = replace(build, finished_at=datetime.now(UTC))
            with contextlib.suppress(Exception), store.write() as tx:
                if tx.app(app) is not None:
                    tx.put_build(build)
            log_file.close()
        return build

    def _report_release(self, app: str, version: int, status: ReleaseStatus,
                        emit: Callable[[str], None]) -> None:
        """The end of a push's output: the release made, its release phase, and Heroku's
        "Verifying deploy" (the new web dynos up and routed, the old ones gone: issue 7;
        or the release failed to come up and the previous one keeps serving)."""
        pending = status is ReleaseStatus.PENDING
        if pending:
            emit(f"{buildpacks.ERROR}Release command declared: this new release will not be "
                 "available until the command succeeds.")
        emit(f"{buildpacks.INDENT}Released v{version}")
        emit(f"{buildpacks.INDENT}https://{app}.{self.settings.domain}/ deployed to dynod")
        emit("")
        if pending:
            # Heroku's git push waits for the release phase.
            if self.release_phase is None:
                emit("Release command declared, but this dynod runs no release phase")
            else:
                self.release_phase.follow_lines(app, version, emit)
        with self.store.read() as tx:
            phase_ok = tx.release(app, version)
        if phase_ok is None or phase_ok.status is not ReleaseStatus.SUCCEEDED:
            return  # the release phase said why (Waiting for release.... failed.)
        # Heroku's last line, only once the new release serves: a request sent the moment
        # it is printed reaches the new web dynos. Never after a release that failed.
        if self.rollout is None:
            emit(HEROKU_VERIFIED)
            return
        emit(f"{buildpacks.STEP}Verifying deploy...")
        verdict = self.rollout.follow_rollout(app, version)
        if verdict is False:
            with self.store.read() as tx:
                failed = tx.release(app, version)
            why = (failed.failure if failed is not None and failed.failure
                   else "crashed at boot or R10")  # a dynod that kept no cause
            emit(f"{buildpacks.ERROR}Release v{version} failed: its web dynos did "
                 f"not come up: {why}; the previous release keeps serving. See "
                 "dynoctl logs")
        elif verdict:
            emit(f"{buildpacks.INDENT}done.")
            emit(HEROKU_VERIFIED)
        else:
            emit(f"{buildpacks.INDENT}still rolling out; see dynoctl ps")
