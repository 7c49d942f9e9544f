"""``dynod``: the daemon and its composition root. Build every long-lived object, hand
each its collaborators, start, tell systemd READY, ping the watchdog, stop on SIGTERM.

No other module keeps a process-wide instance: what one subsystem needs of another it is
given here (DESIGN.md, "Code layout").
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from ipaddress import IPv4Address
from pathlib import Path
from types import FrameType

import sdnotify

from dynod import __version__, paths
from dynod.addons.backups import BackupEngine
from dynod.addons.manager import AddonManager
from dynod.addons.schedule import Scheduler
from dynod.api.daemon import Daemon
from dynod.api.dashboard.server import start_dashboard
from dynod.api.metrics import DrainFigures, Metrics
from dynod.api.peers import PeerSlugs, PeerTls, start_peer_api
from dynod.api.server import TcpListen, start_api
from dynod.build import gitrepos, layers
from dynod.build.pipeline import Builder
from dynod.control import addons as control_addons
from dynod.control import drain_shipper
from dynod.control.audit import Audit
from dynod.control.cluster import Membership
from dynod.control.keys import AuthorizedKeys
from dynod.control.pg import Databases
from dynod.errors import DynodError, InvalidArgument
from dynod.model.cluster import PEER_PORT, ClusterView, Node, check_node_name
from dynod.model.events import (
    DYNOS_CHANGED,
    ROUTES_CHANGED,
    AcmChanged,
    AddonsChanged,
    AppDestroyed,
    DomainsChanged,
    DrainsChanged,
    EventBus,
    KeysChanged,
)
from dynod.router import local_ca
from dynod.router.acm import AcmManager
from dynod.router.acme import AcmeIssuer
from dynod.router.haproxy import HaproxyRouter
from dynod.runtime.addon_access import make_addon_access
from dynod.runtime.addon_peers import AddonPeers
from dynod.runtime.cluster_network import ClusterNetwork
from dynod.runtime.cluster_routes import ClusterRoutes
from dynod.runtime.dynos import Host
from dynod.runtime.leader import Leader, NodeLease, Share
from dynod.runtime.located import located_of
from dynod.runtime.metrics import RuntimeMetrics
from dynod.runtime.oneoff import OneOffs
from dynod.runtime.release_phase import ReleasePhase
from dynod.runtime.supervisor import Supervisor
from dynod.settings import DEFAULT_CONFIG, Settings, listen_address, load_settings
from dynod.slug.fetch import SlugPeers
from dynod.store.etcd import EtcdSettings, EtcdStore
from dynod.store.etcd_addon_board import EtcdAddonBoard
from dynod.store.etcd_cluster import EtcdClusterView, cluster_kv
from dynod.store.etcd_leader import EtcdLeaderSeat
from dynod.store.etcd_node import NodeKeeper
from dynod.store.protocol import Store
from dynod.store.sqlite import SqliteStore
from dynod.system import dyno_names, etcd, hostinfo, netns, systemctl

log = logging.getLogger("dynod")

# In a cluster, how often the git user's authorized_keys is compared with the store's
# keys (those added through another machine's API raise no event here).
KEYS_FOLLOW_INTERVAL = 2.0


def _watchdog_interval() -> float | None:
    """Half of WATCHDOG_USEC, when systemd asked for pings (and they are for us)."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and int(pid) != os.getpid()):
        return None
    return int(usec) / 2_000_000


def tls_pair(settings: Settings, ca: local_ca.LocalCA, prefix: str) -> tuple[str, str]:
    """The certificate chain and key for ``<prefix>_listen``: the admin's
    (``<prefix>_tls_cert``, ``<prefix>_tls_key``), else one from the local CA for
    ``api_names`` (default: this machine's name, its FQDN, localhost), made at each start
    and kept in memory only. Raises InvalidArgument."""
    cert, key = getattr(settings, f"{prefix}_tls_cert"), getattr(settings, f"{prefix}_tls_key")
    if bool(cert) != bool(key):
        raise InvalidArgument(f"dynod.toml: set both {prefix}_tls_cert and {prefix}_tls_key, "
                              f"or neither (then dynod's local CA signs the certificate)")
    if cert:
        try:
            return Path(cert).read_text(), Path(key).read_text()
        except OSError as exc:
            raise InvalidArgument(f"dynod.toml: {prefix}_tls_cert/{prefix}_tls_key: {exc}; "
                                  "fix the paths") from exc
    names = tuple(n.strip() for n in settings.api_names.split(",") if n.strip()) or tuple(
        dict.fromkeys((socket.gethostname(), socket.getfqdn(), "localhost")))
    return local_ca.issue(ca, names, datetime.now(UTC))


def api_tcp(settings: Settings, ca: local_ca.LocalCA) -> TcpListen | None:
    """The API's TCP listener of the settings (:func:`tls_pair`'s certificate). Raises
    InvalidArgument."""
    if not settings.api_listen:
        return None
    return TcpListen(settings.api_listen, *tls_pair(settings, ca, "api"))


def etcd_settings(settings: Settings) -> EtcdSettings:
    """dynod.toml's etcd_* settings."""
    def path(value: str) -> Path | None:
        return Path(value) if value else None

    return EtcdSettings(tuple(e.strip() for e in settings.etcd_endpoints.split(",")),
                        path(settings.etcd_ca_file), path(settings.etcd_cert_file),
                        path(settings.etcd_key_file))


def open_store(settings: Settings) -> Store:
    """The store dynod.toml names: SQLite (the default) or etcd."""
    if settings.store == "etcd":
        etcd = EtcdStore(etcd_settings(settings))
        log.info("state in etcd at %s", settings.etcd_endpoints)
        return etcd
    sqlite = SqliteStore.open(settings.db_path)
    log.info("state %s, schema version %d", settings.db_path, sqlite.schema_version)
    return sqlite


def cluster_view(settings: Settings, store: Store) -> ClusterView | None:
    """The cluster this machine is node ``node_name`` of, None for one machine.
    Raises InvalidArgument for a node name without the etcd store."""
    if not settings.node_name:
        return None
    check_node_name(settings.node_name)
    if not isinstance(store, EtcdStore):
        raise InvalidArgument("dynod.toml: node_name is set but store is not \"etcd\"; a "
                              "cluster keeps its state in etcd (set store = \"etcd\")")
    return EtcdClusterView(cluster_kv(store), settings.node_name)


def restart_soon(delay: float = 1.0) -> None:
    """Restart dynod.service shortly, once the reply of the call that asked is out
    (cluster:init and join switch the store so). The dynos go on running."""
    def later() -> None:
        threading.Event().wait(delay)
        systemctl.systemctl(["--no-block", "restart", "dynod.service"])
    threading.Thread(target=later, name="restart", daemon=True).start()


def node_keeper(store: Store, settings: Settings, supervisor: Supervisor) -> NodeKeeper | None:
    """A cluster member's lease keeper (nodes/<me>, its dynos' records); None on a
    machine of its own."""
    if not isinstance(store, EtcdStore) or not settings.node_name:
        return None
    port = settings.api_listen.rpartition(":")[2] or "5443"
    node = Node(settings.node_name, settings.node_address,
                f"{settings.node_address}:{port}", settings.address_pool,
                hostinfo.memory_mb())
    return NodeKeeper(cluster_kv(store), node,
                      lambda: located_of(node.name, supervisor.executor.records()))


@dataclass(frozen=True)
class ClusterPlacement:
    """A cluster member's share of placement: its view of the cluster, the election
    and placement loop, and the dynos placed on it (``Supervisor.share``)."""

    view: EtcdClusterView
    leader: Leader
    share: Share


def placement(keeper: NodeKeeper, supervisor: Supervisor) -> ClusterPlacement:
    """Placement on the keeper's cluster keys, with its lease."""
    view = EtcdClusterView(keeper.kv, keeper.node.name)
    lease = NodeLease(lambda: keeper.lease, keeper.lease_surely_gone_at)
    leader = Leader(view, EtcdLeaderSeat(keeper.kv, keeper.node.name), lease,
                    supervisor.formations)
    return ClusterPlacement(view, leader, Share(view, lease))


def router_peers(view: EtcdClusterView, http_port: int) -> list[str]:
    """The other live nodes' routers, "host:port" of their HTTP."""
    return [f"[{n.address}]:{http_port}" if ":" in n.address else f"{n.address}:{http_port}"
            for n in view.nodes() if n.name != view.me and n.address]


def follow_keys(keys: AuthorizedKeys, stop: threading.Event) -> None:
    """Keep the git user's authorized_keys in step with the store's keys until ``stop``."""
    while not stop.wait(KEYS_FOLLOW_INTERVAL):
        try:
            keys.sync()
        except (DynodError, OSError) as exc:
            log.warning("authorized_keys: %s", getattr(exc, "message", exc))


def serve(config: Path) -> int:
    settings = load_settings(config)
    settings.state_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    settings.runtime_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    notify = sdnotify.SystemdNotifier()
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    store = open_store(settings)
    view = cluster_view(settings, store)
    # The router before the dynos: the supervisor tells it about up web dynos from the start.
    # HAProxy comes up in a thread meanwhile (router calls wait for it).
    # HTTPS on the default domain from the first start: dynod's local CA (made by the
    # package's postinst, else now) signs its certificate, which the router renews.
    ca = local_ca.ensure_ca(paths.tls_dir(settings.state_dir))
    tcp = api_tcp(settings, ca)  # a bad setting stops dynod before anything starts
    dashboard_tls = tls_pair(settings, ca, "dashboard") if settings.dashboard_listen else None
    bridge = netns.plan_bridge(settings.address_pool)
    # Dynos resolve every app's <app>.<domain> to the router (their hosts file).
    dyno_hosts = partial(dyno_names.add_dyno_hosts, settings.runtime_dir / "hosts",
                         gateway=bridge.gateway)
    # /metrics (opt-in): the router's log reader counts requests into it; dynos, builds
    # and health are read at each scrape (the supervisor is made below).
    metrics = Metrics(store, dynos=lambda app: supervisor.dynos(app),  # noqa: PLW0108
                      restarts=lambda: dict(supervisor.executor.starts))
    router = HaproxyRouter(store, settings.runtime_dir, settings.domain,
                           state_dir=settings.state_dir, ca=ca, publish_hosts=dyno_hosts,
                           observe_lines=metrics.observe_router,
                           is_local=lambda ip: IPv4Address(ip) in bridge.pool)
    router_started = router.start()
    # The dyno host lays each dyno's root over the stack its slug was built on, with the
    # language layers its build had (the build pipeline made both).
    def require_stack(stack: str, checksum: str) -> tuple[Path, ...]:
        with store.read() as tx:
            wanted = tx.slug_layers(checksum) or ()
        return layers.lowers(settings.state_dir, stack, wanted)
    # The control plane's events (and the platform's verdicts): after a committed change,
    # its app[api] lines first, then whatever follows the desired state.
    events = EventBus()
    events.subscribe(Audit.EVENTS, Audit())
    # The add-on servers listen on the bridge's gateway: they make the bridge first.
    addon_services = AddonManager(
        settings.state_dir, str(bridge.gateway),
        ensure_network=partial(netns.ensure_bridge, bridge, settings.runtime_dir))
    # Which dynos reach which add-on (nftables sets, the servers' admissions): the dyno
    # host tells it of every dyno network before the dyno's process starts and before
    # its address is freed; attachments follow AddonsChanged at once.
    access = make_addon_access(store, settings, addon_services)
    # pg:backups: files verified by a restore into a scratch database of the same
    # cluster; daily ones are persistent systemd timers asking this daemon for a capture.
    databases = Databases(store, events, addon_services,
                          BackupEngine(addon_services.postgres,
                                       settings.state_dir / "addons" / "backups"),
                          Scheduler(settings.socket_path))
    events.subscribe(AppDestroyed, lambda e: databases.forget_app(e.app))
    events.subscribe(AddonsChanged, lambda e: databases.prune_schedules(e.app))
    events.subscribe((AddonsChanged, AppDestroyed), lambda _e: access.refresh())
    # In a cluster, a slug this machine lacks is fetched from another that has it, over
    # the peer API (mutual TLS with the etcd member's certificate); this machine serves
    # its own slugs there to the others.
    slug_peers: SlugPeers | None = None
    peer_api = None
    if isinstance(store, EtcdStore):
        tls_dir = etcd.cluster_dir(settings.state_dir) / "tls"

        def peer_tls() -> PeerTls:
            return PeerTls.read(tls_dir, etcd.CA_CERT, etcd.MEMBER_CERT, etcd.MEMBER_KEY)
        me = settings.node_name or socket.gethostname()
        slug_peers = PeerSlugs(EtcdClusterView(cluster_kv(store), me), peer_tls)
        # A member made by cluster:init or join (which gave it its certificates) serves
        # it at its address, PEER_PORT.
        listen = settings.peer_listen or (
            f"{settings.node_address}:{PEER_PORT}"
            if settings.node_address and (tls_dir / etcd.MEMBER_CERT).exists() else "")
        if listen:
            try:
                peer_api = start_peer_api(listen, peer_tls(),
                                          settings.state_dir / "slugs", me)
            except OSError as exc:
                raise InvalidArgument(f"peer_listen: the cluster's certificates in {tls_dir}"
                                      f" ({exc}); join the cluster first") from exc
    # A cluster: routes to the other members' dyno pools, their routers let in and
    # dynos kept off them (followed from the members); the other nodes' up web dynos
    # routed to by this machine's router too (followed from what they publish).
    cluster_net = (None if view is None else
                   ClusterNetwork(view, bridge, settings.runtime_dir))
    cluster_routes = None if view is None else ClusterRoutes(view, router)
    supervisor = Supervisor(store, settings, router,
                            partial(Host, settings, require_stack, watcher=access,
                                    slug_peers=slug_peers,
                                    peer_pools=cluster_net.peer_pools if cluster_net
                                    else tuple), events)
    oneoffs = OneOffs(store, settings, lambda: supervisor.host)
    phase = ReleasePhase(store, settings, oneoffs, supervisor.changed, events)
    events.subscribe(DYNOS_CHANGED, lambda e: supervisor.changed(e.app))
    events.subscribe(DYNOS_CHANGED, lambda e: phase.kick(e.app))
    # The router also catches up with the store on its own within seconds, so a change
    # is kept (and reported done) even while it is down.
    events.subscribe(ROUTES_CHANGED, lambda _e: router.refresh())
    # Automated Certificate Management: orders from the ACME directory of the settings,
    # http-01 answered and certificates installed by the router, without a reload.
    acm = AcmManager(store, router,
                     AcmeIssuer(settings.acme_directory, settings.acme_ca_file,
                                settings.state_dir))
    events.subscribe((AcmChanged, DomainsChanged, AppDestroyed), lambda _e: acm.kick())
    # At start too: the git user's files follow the state (a restore, a reinstall).
    authorized_keys = AuthorizedKeys(store, gitrepos.git_user_home(settings.state_dir),
                                     gitrepos.shell_command())
    gitrepos.ensure_layout(settings.state_dir)
    authorized_keys.sync()
    events.subscribe(KeysChanged, authorized_keys.sync)
    if isinstance(store, EtcdStore):
        threading.Thread(target=follow_keys, args=(authorized_keys, stop),
                         name="keys follower", daemon=True).start()
    # Log drains: a reader and a sender thread per drain, each following the journal
    # from its own position; TLS trusts the system's CAs and dynod's local CA.
    ca_file = paths.ca_certificate(settings.state_dir)
    drains = drain_shipper.DrainShippers(store, settings.state_dir / "drains",
                                         drain_shipper.connect(ca_file))
    events.subscribe((DrainsChanged, AppDestroyed), lambda _e: drains.sync())
    # /metrics shows each drain's buffer and what it dropped.
    metrics.register_drains(lambda: [
        DrainFigures(d.app, d.token, d.buffered, drain_shipper.BUFFER_LINES, d.dropped)
        for d in drains.stats()])
    # A push reports on the release phase and the rollout it started.
    builder = Builder(store, settings, events, rollout=supervisor, release_phase=phase)
    # cluster:init, cluster:join (each ends with a restart of dynod on etcd), cluster.
    membership = Membership(
        store, settings, config, restart=restart_soon,
        dyno_addresses=lambda: [d.meta.address for d in supervisor.executor.records()
                                if d.meta is not None])
    keeper = node_keeper(store, settings, supervisor)
    placed = None
    if keeper is not None:
        events.subscribe(DYNOS_CHANGED, lambda _e: keeper.changed())
        # Placement: this node runs only the dynos placed on it (none once fenced); the
        # leader re-plans on every formation change and node change, and alone orders
        # ACM certificates.
        placed = placement(keeper, supervisor)
        supervisor.share = placed.share
        acm.leading = placed.leader.leading
        # Every machine's router answers ACM's challenges: the leader waits for the
        # others' before the CA validates (a user's DNS may point at any machine).
        acm.peers = partial(router_peers, placed.view, router.http_port)
        events.subscribe(DYNOS_CHANGED, lambda _e: placed.leader.kick())
    # Add-ons across the cluster: this machine's dynos published for the others' add-on
    # servers, the others' let into its own; a dyno whose add-on is elsewhere waits for
    # its home machine to admit it.
    addon_peers = None
    if keeper is not None and view is not None:
        addon_peers = AddonPeers(view, EtcdAddonBoard(keeper.kv, keeper.node.name,
                                                      lambda: keeper.lease),
                                 access, store)
        access.peers = addon_peers
    daemon = Daemon(store, settings, events=events, supervisor=supervisor, oneoffs=oneoffs,
                    release_phase=phase, addons=addon_services,
                    databases=databases, certs=router.certs,
                    router_log_drops=router.log_drops,
                    drain_probe=drain_shipper.probe(ca_file), membership=membership,
                    cluster=None if placed is None else placed.view)
    # Dynos before READY: running ones are adopted (never restarted), the formation is
    # started; a dyno that fails to start is retried by the supervisor's own thread.
    # The servers before the dynos (a release phase migrates at once), and access as the
    # dynos still running from before a restart of dynod need it.
    try:
        addon_services.ensure_running()
        control_addons.recover(store, addon_services)
    except DynodError as exc:
        log.error("add-on servers: %s", exc.message)
    access.rebuild()
    if addon_peers is not None:
        try:  # the other machines' dynos back in this one's add-on sets at once
            addon_peers.let_in_others()
        except DynodError as exc:
            log.warning("add-ons across the cluster: %s; retrying", exc.message)
    # Backups a stop interrupted are recorded Failed; the scratch databases they left go.
    try:
        databases.recover()
    except DynodError as exc:
        log.error("backups: %s", exc.message)
    if cluster_net is not None:
        try:  # the routes and sets before the dynos' allow-lists are made
            cluster_net.sync()
        except DynodError as exc:
            log.error("cluster network: %s; retrying", exc.message)
        cluster_net.start()
    supervisor.start()
    if keeper is not None:
        keeper.start()
    if addon_peers is not None:
        addon_peers.start()
    if placed is not None:
        placed.leader.start()
    # labs:enable log-runtime-metrics: dyno memory and load lines, read from the cgroups.
    runtime_metrics = RuntimeMetrics(store, supervisor.executor.records)
    runtime_metrics.start()
    drains.sync()
    oneoffs.recover()
    phase.kick_all()
    api = start_api(settings.socket_path, settings.api_group, daemon, builder=builder,
                    tcp=tcp)
    router_started.join()
    if cluster_routes is not None:
        cluster_routes.start()
    acm.start()
    if settings.metrics_listen:
        try:
            metrics.serve(*listen_address(settings.metrics_listen))
        except OSError as exc:
            log.error("metrics_listen %s: %s; /metrics is off until that address is "
                      "free (or the setting changed) and dynod restarts",
                      settings.metrics_listen, exc)
    dashboard = None
    if dashboard_tls is not None:
        try:
            dashboard = start_dashboard(daemon, settings.dashboard_listen, *dashboard_tls)
        except DynodError as exc:
            log.error("%s; the dashboard is off until then", exc.message)
    log.info("dynod %s listening on %s%s", __version__, settings.socket_path,
             f" and {settings.api_listen} (TLS)" if settings.api_listen else "")
    # READY only now: the socket accepts calls and the router answers, so `systemctl start`
    # returning means usable.
    notify.notify(f"READY=1\nSTATUS=listening on {settings.socket_path}")

    interval = _watchdog_interval()
    while not stop.wait(interval if interval is not None else 3600.0):
        if interval is not None:
            notify.notify("WATCHDOG=1")

    notify.notify("STOPPING=1\nSTATUS=stopping")
    if dashboard is not None:
        dashboard.stop()
    api.stop(grace=5.0)
    if peer_api is not None:
        peer_api.stop(5.0).wait()
    runtime_metrics.stop()
    metrics.stop()
    if placed is not None:
        placed.leader.stop()
    for follower in (cluster_routes, cluster_net, addon_peers, keeper):
        if follower is not None:
            follower.stop()
    supervisor.stop()
    drains.stop()
    acm.stop()
    router.stop()
    store.close()
    log.info("dynod stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dynod", description="the dynod daemon")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG,
                        help=f"settings file (default {DEFAULT_CONFIG})")
    parser.add_argument("--version", action="version", version=f"dynod {__version__}")
    parser.add_argument("--init-ca", action="store_true",
                        help="make the local CA (under the state directory) if there is "
                             "none, print its certificate's path and exit (the package's "
                             "postinst)")
    args = parser.parse_args(argv)
    # journald adds its own timestamps and priority; keep the line plain.
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)
    try:
        if args.init_ca:
            state_dir = load_settings(args.config).state_dir
            local_ca.ensure_ca(paths.tls_dir(state_dir))
            print(paths.ca_certificate(state_dir))
            return 0
        return serve(args.config)
    except DynodError as exc:
        log.error("%s", exc.message)
        return 1


if __name__ == "__main__":
    sys.exit(main())
