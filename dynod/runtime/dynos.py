"""Dynos: starting and tearing down one dyno of an app's formation.

A dyno is (app, release, process type, number, generation). Starting one:

1. the release's slug tree, unpacked once per (slug sha256, app uid) from the stored
   tarball and owned by the app's uid (``slug_tree``);
2. its root filesystem (``rootfs``: overlay of [slug tree, stack], a throw-away upper);
3. its network namespace (``netns``: an address from the pool, a veth on dynod0);
4. its transient unit (``units.start_dyno``) running as the app's uid.

What the supervisor needs to adopt a running dyno after dynod restarts (its address, port,
release, command) is written next to its root as ``dyno.json`` in the runtime
directory: it is derived, volatile state, gone with the dyno (and with a reboot).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import asdict
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Protocol

from dynod import paths
from dynod.errors import DynodError, InvalidArgument, ResourceExhausted
from dynod.model.dynos import DynoMeta, DynoRef
from dynod.model.sizes import parse_size
from dynod.runtime import truststores
from dynod.runtime.limits import limits_for_size
from dynod.settings import Settings
from dynod.slug import trees
from dynod.slug.fetch import SlugPeers
from dynod.system import hostinfo, journal, mounts, netns, unit_names, unit_properties, units
from dynod.system.unit_properties import DynoSpec, PidMode
from dynod.system.users import ensure_user

log = logging.getLogger(__name__)

# Heroku assigns a random port; each dyno has its own netns, so one fixed port is enough.
PORT = 5000
META = "dyno.json"
# The key of the network made ahead of the next start (not a dyno key: parse_key
# refuses it, so adoption removes one that a previous dynod left).
SPARE = "spare"


def unit_of(ref: DynoRef) -> str:
    """The dyno's transient unit: ``dynod-<app>-<type>.<n>-<gen>.service``."""
    return unit_names.unit_name(ref.app, ref.process_type, ref.number, ref.generation)


def cgroup_of(ref: DynoRef) -> Path:
    """The dyno's cgroup, relative to the hierarchy root."""
    return Path(unit_names.ROOT_SLICE) / unit_names.slice_name(ref.app) / unit_of(ref)


def ref_of(name: unit_names.DynoName) -> DynoRef:
    return DynoRef(name.app, name.process_type, name.number, name.generation)


def read_meta(settings: Settings, ref: DynoRef) -> DynoMeta | None:
    path = mounts.dynos_dir(settings.runtime_dir) / ref.key / META
    try:
        return DynoMeta(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def trust_bundle(settings: Settings, stack: Path) -> Path | None:
    """The stack's CA bundle plus dynod's local CA, for the dynos on ``stack`` (written
    under the runtime directory when either changed); None when there is no local CA
    or the stack has no bundle. The stack itself is never written: it is shared and
    may be read-only."""
    try:
        ca = paths.ca_certificate(settings.state_dir).read_text()
        base = (stack / str(mounts.CA_BUNDLE_PATH).lstrip("/")).read_text()
    except OSError:
        return None
    text = base.rstrip("\n") + "\n# dynod local CA\n" + ca
    out = settings.runtime_dir / "tls" / f"{stack.name}-ca-certificates.crt"
    try:
        if out.read_text() == text:
            return out
    except FileNotFoundError:
        pass
    out.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(text)
    tmp.chmod(0o644)
    tmp.replace(out)
    return out


class NetworkWatcher(Protocol):
    """Told of every dyno's network (``runtime.addon_access.AddonAccess``): made, before
    the dyno's process starts; going, before its address can be given to another."""

    def network_up(self, app: str, key: str, address: IPv4Address) -> None: ...
    def network_down(self, key: str) -> None: ...


class Host:
    """The machine-wide parts every dyno shares: the bridge, dyno-init, the PID mode.
    ``start`` and ``teardown`` are safe to call from several threads."""

    def __init__(self, settings: Settings,
                 require_stack: Callable[[str, str], tuple[Path, ...]],
                 *, mode: PidMode | None = None, watcher: NetworkWatcher | None = None,
                 slug_peers: SlugPeers | None = None,
                 peer_pools: Callable[[], Iterable[IPv4Network]] = tuple) -> None:
        self.settings = settings
        self.watcher = watcher
        # In a cluster, the other machines a slug this one lacks is fetched from.
        self.slug_peers = slug_peers
        # A cluster's other dyno pools (runtime.cluster_network), out of each dyno's
        # IPAddressAllow= as they are when it starts.
        self.peer_pools = peer_pools
        # A dyno's root is laid over the stack its slug was built on, by name, with the
        # language layers of its build, by the slug's checksum: the lower directories,
        # top first (the build owns stacks, the store knows each slug's: injected).
        self.require_stack = require_stack
        self.bridge = netns.plan_bridge(settings.address_pool)
        self.resolv = netns.ensure_bridge(self.bridge, settings.runtime_dir)
        self.init = mounts.find_init(settings.dyno_init)
        self.journal_dir = settings.runtime_dir / "journal"
        journal.link_stdout_socket(self.journal_dir)
        self.mode = mode or unit_properties.pid_mode_for(hostinfo.systemd_version())
        self._addresses = threading.RLock()
        # Addresses in use, read from the veths once and kept up to date here (reading
        # every link on each start costs ~10 ms).
        self._used = netns.used_addresses()
        self._spare: netns.DynoNetwork | None = None

    def rootfs_plan(self, ref: DynoRef, tree: Path,
                    stack: tuple[Path, ...]) -> mounts.RootfsPlan:
        """``stack``: the stack's language layers the slug needs, then the stack itself."""
        hosts = self.settings.runtime_dir / "hosts"
        bundle = trust_bundle(self.settings, stack[-1])
        java = (truststores.java_trust_store(self.settings.runtime_dir, stack[-1].name, bundle)
                if bundle is not None and truststores.has_java(stack) else None)
        return mounts.plan_rootfs(
            self.settings.runtime_dir, ref.key, tree, stack,
            mounts.dyno_binds(self.init, self.resolv, hosts if hosts.exists() else None,
                              bundle, java, journal_dir=self.journal_dir))

    def start(self, ref: DynoRef, *, release: int, command: str, size: str,
              checksum: str, uid: int, config: dict[str, str], stack: str,
              stdio: tuple[int, int, int] | None = None) -> DynoMeta:
        """Unpack (once), mount, wire and start the dyno on ``stack`` (its slug's).
        On failure nothing is left.
        ``stdio``: the command's stdin, stdout, stderr (one-off dynos; systemd dups
        them). Raises NotFound, InvalidArgument, FailedPrecondition (its stack is not
        built) or Unavailable."""
        if not command:
            raise InvalidArgument(f"app {ref.app}: process type {ref.process_type} has no command")
        # What the unpacker refused or changed goes to the app's log stream, e.g.
        # dynod[web.1]: slug entry "./app/x": device node; skipped.
        # A slug fetched from another machine (or refused from one) is said there too.
        tree = trees.slug_tree(self.settings, checksum, uid,
                               lambda message: journal.app_event(ref.app, ref.dyno, message,
                                                                 priority=4),
                               peers=self.slug_peers)
        ensure_user(uid)
        journal.link_stdout_socket(self.journal_dir)  # two stat() calls when it is there
        plan = self.rootfs_plan(ref, tree, self.require_stack(stack, checksum))
        with self._addresses:
            # Leftovers of an earlier run of the same dyno go first.
            if (mounts.dynos_dir(self.settings.runtime_dir) / ref.key).exists() or (
                    netns.NETNS_DIR / (netns.NETNS_PREFIX + ref.key)).exists():
                self.teardown(ref)
            spare, self._spare = self._spare, None
            if spare is not None:
                net = netns.rename_dyno_network(spare, ref.key)
            else:
                net = self._new_network(ref.key)
            address = net.address
        # The next dyno's network is made now, off this start's path.
        threading.Thread(target=self._refill, name="netns spare", daemon=True).start()
        meta = DynoMeta(ref.app, ref.process_type, ref.number, ref.generation, release,
                        command, size, str(address), PORT)
        try:
            if self.watcher is not None:  # add-ons open to it before its command runs
                self.watcher.network_up(ref.app, ref.key, address)
            mounts.apply_rootfs(plan)
            (plan.dyno_dir / META).write_text(json.dumps(asdict(meta)))
            spec = DynoSpec(
                app=ref.app, process_type=ref.process_type, number=ref.number,
                release=release, command=command, root=plan.root,
                env=unit_properties.make_env(config), binds=plan.binds, netns_path=net.netns_path,
                ip_allow=tuple(netns.ip_allow_list(net, self.bridge.pool, self.peer_pools())),
                limits=limits_for_size(parse_size(size)),
                user=str(uid), group=str(uid), port=PORT, generation=ref.generation,
                stdio=stdio,
            )
            units.start_dyno(spec, self.mode)
        except BaseException:
            self.teardown(ref)
            raise
        return meta

    def _new_network(self, key: str) -> netns.DynoNetwork:
        """Allocate an address and make a netns for ``key`` (under the lock)."""
        try:
            # The veths read back too: a build's network takes an address behind our
            # back, and a dyno given the same one loses its traffic.
            address = netns.allocate_address(self.bridge, self._used | netns.used_addresses())
        except ResourceExhausted:
            self._used = netns.used_addresses()  # forget addresses freed behind our back
            address = netns.allocate_address(self.bridge, self._used)
        net = netns.plan_dyno_network(self.bridge, key, address)
        self._used.add(address)
        try:
            netns.create_dyno_network(net)
        except BaseException:
            self._used.discard(address)
            raise
        return net

    def _refill(self) -> None:
        """Keep one spare network ready: making a netns and its veth is about half of a
        dyno's start. A spare left by a stopped dynod is removed as an orphan at start."""
        with self._addresses:
            if self._spare is not None:
                return
            try:
                self._spare = self._new_network(f"{SPARE}.{os.getpid()}")
            except DynodError as exc:
                log.warning("no spare network: %s", exc.message)

    def teardown(self, ref: DynoRef) -> None:
        """Unload the unit (it must have stopped), unmount, remove the netns. Idempotent."""
        units.reset_dyno(unit_of(ref))
        if self.watcher is not None:  # its address leaves the add-on sets before reuse
            self.watcher.network_down(ref.key)
        meta = read_meta(self.settings, ref)
        plan = mounts.RootfsPlan(ref.key, mounts.dynos_dir(self.settings.runtime_dir) / ref.key,
                                 (), ())
        mounts.remove_rootfs(plan)
        address = IPv4Address(meta.address) if meta else self.bridge.gateway + 1
        net = netns.DynoNetwork(ref.key, address, self.bridge.gateway,
                                self.bridge.pool.prefixlen, self.bridge.bridge)
        if meta is not None:
            netns.remove_dyno_network(net)
            with self._addresses:
                self._used.discard(address)
        else:
            # Without the dyno's address, removing the netns frees its veth pair.
            netns.remove_netns(net.netns)
