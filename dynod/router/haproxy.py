"""The HTTP router: HAProxy (dynod-router.service), driven through its runtime API.

dynod renders ``haproxy.cfg`` (``haproxy_config``) into ``/run/dynod/router`` and starts
the unit. After that, web dynos come and go with ``add server`` / ``disable server`` /
``del server`` on the admin socket (``admin_socket``), and domains and maintenance with
atomic map updates (``prepare map`` / ``commit map``): scaling, restarts, deploys,
domains and maintenance never reload HAProxy. Only creating or deleting an app reloads
it (a new backend section), hitlessly: the master starts a new worker and the old one
finishes its requests. Router log lines take their own path (``log_lines``).

HTTPS is always on (port 443): certificates, the default domain's included, reach
HAProxy through ``cert_store`` without a reload; the default one (signed by dynod's
local CA, ``local_ca``) is checked daily and renewed 30 days before it expires.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from dynod.errors import NotFound, Unavailable
from dynod.router import local_ca
from dynod.router.admin_socket import (
    AdminSocket,
    LiveServer,
    parse_server_stat,
    parse_servers_state,
)
from dynod.router.cert_store import DEFAULT, CertStore
from dynod.router.haproxy_config import (
    NO_KEEPALIVE,
    PAGES,
    SERVER_OPTIONS,
    UNIT,
    RouterPaths,
    backend_name,
    config_shape,
    dyno_of,
    error_response,
    render_config,
    render_map,
    router_threads,
    server_name,
)
from dynod.router.log_lines import LogReader, RouterLine
from dynod.router.protocol import Backend
from dynod.store.protocol import Store
from dynod.system import processes
from dynod.system.systemctl import systemctl as call_systemctl

log = logging.getLogger(__name__)

Systemctl = Callable[[Sequence[str]], str]
Clock = Callable[[], datetime]
# How often the default certificate's expiry is looked at (it is renewed when due).
RENEW_CHECK = 24 * 3600.0


def adopted(state: Mapping[str, Sequence[LiveServer]], is_local: Callable[[str], bool],
            ) -> tuple[dict[str, list[Backend]], dict[str, list[Backend]]]:
    """The servers a running HAProxy routes to (``show servers state``), by app: this
    machine's own dynos, then other machines' (by address, ``is_local``). Another
    machine's are the cluster follower's to keep or drop; the supervisor only ever
    routes this machine's, and would leave an app with no web dyno here routed to a
    dyno whose node is gone. Draining servers (maintenance) are left out."""
    local: dict[str, list[Backend]] = {}
    remote: dict[str, list[Backend]] = {}
    for be, servers in state.items():
        if not be.startswith("app_"):
            continue
        found = [Backend(dyno_of(s.name), s.ip, s.port) for s in servers if not s.maintenance]
        local[be[4:]] = [b for b in found if is_local(b.ip)]
        if theirs := [b for b in found if not is_local(b.ip)]:
            remote[be[4:]] = theirs
    return local, remote


class HaproxyRouter:
    """:class:`dynod.router.protocol.Router` over HAProxy; also keeps domains and maintenance
    mode (from the store) in HAProxy's maps. Thread-safe."""

    def __init__(self, store: Store, runtime_dir: Path, platform_domain: str, *,
                 state_dir: Path | None = None, http_port: int = 80, https_port: int = 443,
                 ca: local_ca.LocalCA | None = None, clock: Clock = lambda: datetime.now(UTC),
                 publish_hosts: Callable[[Iterable[str]], None] | None = None,
                 systemctl: Systemctl = call_systemctl,
                 observe_lines: Callable[[list[RouterLine]], None] | None = None,
                 is_local: Callable[[str], bool] = lambda _ip: True) -> None:
        self.store = store
        self.paths = RouterPaths(runtime_dir / "router")
        self.platform_domain = platform_domain
        self.certs_dir = (state_dir or Path("/var/lib/dynod")) / "certs"
        self._challenges: dict[str, str] = {}
        self.http_port = http_port
        self.https_port = https_port
        self.systemctl = systemctl
        self.admin = AdminSocket(self.paths.admin_socket)
        # Every certificate the router serves; ACME and certs:add install through it.
        self.certs = CertStore(self.certs_dir, self.paths.crt_list, self.admin)
        self.ca = ca
        self.clock = clock
        self._renew_checked = float("-inf")
        # Told every app's default host name, so dynos resolve them to the router.
        self.publish_hosts = publish_hosts
        self._lock = threading.RLock()
        self._backends: dict[str, list[Backend]] = {}
        # Other machines' up web dynos, by app (a cluster: ``runtime.cluster_routes``),
        # told apart from this machine's by address (``is_local``: in its own pool).
        self._remote: dict[str, list[Backend]] = {}
        self.is_local = is_local
        self._apps: set[str] = set()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        # observe_lines: told of each router line (the metrics' request counters).
        self._log = LogReader(self.paths.log_socket, observe=observe_lines)

    # -- lifecycle

    def start(self) -> threading.Thread:
        """Adopt what a running dynod-router.service routes, then start (or reconfigure)
        it for every app in a thread, which is returned: dynod starts its supervisor and
        API meanwhile (HAProxy takes ~150 ms to come up) and joins it before READY. Calls
        made meanwhile wait for it (the lock). If HAProxy cannot start, the error is
        logged and the tend loop retries."""
        self.paths.dir.mkdir(mode=0o755, parents=True, exist_ok=True)
        self._log.open()
        with self._lock:
            # Adopt: the servers HAProxy routes to now are the truth until the supervisor
            # says otherwise. (Not running: the admin socket does not answer.)
            with contextlib.suppress(Unavailable):
                self._backends, self._remote = adopted(
                    parse_servers_state(self.admin("show servers state")), self.is_local)
            self._write_static_files()
            # HTTPS from the first start: the default certificate is there before HAProxy.
            self._renew_default()
        for target, name in ((self._first_sync, "router-start"), (self._read_logs, "router-log"),
                             (self._tend, "router-tend")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        return self._threads[-3]

    def _first_sync(self) -> None:
        with self._lock:
            try:
                self._sync_config()
            except Unavailable as exc:
                # dynod serves its API without a router; the tend loop retries.
                log.error("%s", exc.message)

    def stop(self) -> None:
        """Stop reading logs; the router itself keeps running (like dynos do)."""
        self._stop.set()
        self._log.close()
        for t in self._threads:
            t.join(timeout=2)

    def _active(self) -> bool:
        try:
            return self.systemctl(["is-active", "--quiet", UNIT]) is not None
        except processes.CommandFailed:
            return False

    # -- the Router protocol

    def set_backends(self, app: str, backends: list[Backend]) -> None:
        with self._lock:
            self._backends[app] = sorted(set(backends))
            if app not in self._apps:
                self._sync_config()
            else:
                self._apply(app)
                self._keep_file()
            self._sync_empty()

    def remove_app(self, app: str) -> None:
        with self._lock:
            self._backends.pop(app, None)
            self._sync_config()

    def set_remote(self, backends: dict[str, list[Backend]]) -> None:
        """Route each app also to these web dynos of other machines (the whole set,
        as ``cluster_routes`` reads it), through the runtime API without a reload."""
        with self._lock:
            old, self._remote = self._remote, {a: sorted(set(b)) for a, b in backends.items()}
            changed = {a for a in set(old) | set(self._remote)
                       if old.get(a) != self._remote.get(a)}
            for app in sorted(changed & self._apps):
                self._apply(app)
            if changed:
                self._keep_file()
                self._sync_empty()

    def _servers(self, app: str) -> list[Backend]:
        """What ``app`` is routed to: this machine's up web dynos and the others'."""
        return sorted(set(self._backends.get(app, [])) | set(self._remote.get(app, [])))

    def server_status(self, app: str, backend: Backend) -> tuple[str, int] | None:
        """HAProxy's view of one server: (status, requests in flight or queued), None
        when it has no such server. For the supervisor's rollouts (issue 7)."""
        be = backend_name(app)
        out = self.admin(f"show stat {be} 4 -1")
        return parse_server_stat(out, be, server_name(backend))

    def ready(self, app: str, backend: Backend) -> bool:
        """The server takes requests (UP), so an old one can leave."""
        found = self.server_status(app, backend)
        return found is not None and found[0].startswith("UP")

    def in_flight(self, app: str, backend: Backend) -> int:
        """Requests the server is busy with (0 once it is gone), for draining."""
        found = self.server_status(app, backend)
        return 0 if found is None else found[1]

    # -- domains, maintenance, certificates

    def refresh(self) -> None:
        """Catch up with the store: apps (reload if the set changed), host names and
        maintenance mode (maps, no reload). Called after such changes and periodically."""
        with self._lock:
            self._sync_config()
            self._sync_maps()

    # -- internals

    def _desired_apps(self) -> set[str]:
        with self.store.read() as tx:
            return {a.name for a in tx.apps()}

    def _renew_default(self) -> None:
        """Install the default domain's certificate if it is missing or due (at most
        once per RENEW_CHECK unless it failed). Logged, never raised: an old certificate
        keeps serving meanwhile."""
        if self.ca is None:
            return
        self._renew_checked = time.monotonic()
        try:
            if local_ca.renew_default(self.certs, DEFAULT, self.ca, self.platform_domain,
                                      self.clock()):
                log.info("router: new certificate for *.%s from the local CA",
                         self.platform_domain)
        except Exception as exc:  # retried on the next pass, the old one still serves
            self._renew_checked = float("-inf")
            log.error("router: the default certificate: %s", getattr(exc, "message", exc))

    # -- ACME (dynod.router.acme): http-01 answers and certificates, without a reload

    def set_challenge(self, host: str, token: str, key_authorization: str) -> None:
        """Answer ``GET /.well-known/acme-challenge/<token>`` for ``host`` with the key
        authorization, from now on until ``clear_challenge``."""
        with self._lock:
            self._challenges[f"{host}/{token}"] = key_authorization
            self._sync_challenges()

    def clear_challenge(self, host: str, token: str) -> None:
        with self._lock:
            self._challenges.pop(f"{host}/{token}", None)
            self._sync_challenges()

    def _sync_challenges(self) -> None:
        self._write(self.paths.acme_map, render_map(self._challenges))
        self._commit_map(self.paths.acme_map, self._challenges)

    def install_cert(self, name: str, bundle: str) -> None:
        """Serve ``bundle`` (chain, then key) as certificate ``name`` (ACM's), without a
        reload (``CertStore``). Raises InvalidArgument, Unavailable."""
        self.certs.install_bundle(name, bundle)

    def remove_cert(self, name: str) -> None:
        """Stop serving certificate ``name`` and remove it; gone already is fine."""
        with contextlib.suppress(NotFound):
            self.certs.remove(name)

    def cert_names(self) -> list[str]:
        return self.certs.names()

    def cert_bundle(self, name: str) -> str | None:
        """The PEM bundle certificate ``name`` is stored with (``CertStore.read``)."""
        return self.certs.read(name)

    def _no_keepalive(self, apps: Iterable[str]) -> frozenset[str]:
        """Apps with features:enable http-disable-keepalive-to-dyno."""
        with self.store.read() as tx:
            return frozenset(a for a in apps if NO_KEEPALIVE in tx.features(a))

    def log_drops(self) -> tuple[int, datetime | None]:
        """Router lines lost since dynod started (HAProxy's ring and journald), and
        when the first was lost."""
        return self._log.dropped, self._log.dropped_since


    def _write(self, path: Path, text: str | bytes) -> bool:
        """Atomically replace ``path``; True if its content changed."""
        data = text.encode() if isinstance(text, str) else text
        with contextlib.suppress(FileNotFoundError):
            if path.read_bytes() == data:
                return False
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
        return True

    def _write_static_files(self) -> None:
        for name, html in PAGES.items():
            self._write(self.paths.page(name), html)
        self._write(self.paths.dir / "error.http", error_response())
        self._write(self.paths.acme_map, render_map(self._challenges))

    def _map_entries(self, apps: Iterable[str]) -> tuple[dict[str, str], dict[str, str],
                                                         dict[str, str]]:
        apps = set(apps)
        hosts = {f"{a}.{self.platform_domain}": a for a in apps}
        with self.store.read() as tx:
            hosts.update({d.hostname: d.app for d in tx.domains(None) if d.app in apps})
            maint = {a: "1" for a in apps if tx.maintenance(a)}
        empty = {a: self._empty_code(a) for a in apps if not self._servers(a)}
        return hosts, maint, empty

    def _empty_code(self, app: str) -> str:
        """H14 when web is scaled to 0 (or the newest release declares none), H10 when
        web dynos should be running but none is up (crashed)."""
        try:
            with self.store.read() as tx:
                release = tx.latest_release(app)
                slug = (None if release is None or release.slug_id is None
                        else tx.slug(app, release.slug_id))
                if slug is None or "web" not in slug.process_types:
                    return "H14"
                web = [p.quantity for p in tx.processes(app) if p.type == "web"]
        except Exception:  # a map entry is never worth failing a router sync for
            return "H14"
        return "H10" if web and web[0] > 0 else "H14"

    def _sync_config(self) -> None:
        apps = self._desired_apps() | {a for a, b in self._backends.items() if b}
        for gone in set(self._backends) - apps:
            del self._backends[gone]
        hosts, maint, empty = self._map_entries(apps)
        self._write(self.paths.hosts_map, render_map(hosts))
        self._write(self.paths.maintenance_map, render_map(maint))
        self._write(self.paths.empty_map, render_map(empty))
        # Certificates change at run time (cert_store); the file is for HAProxy's start.
        self.certs.write_crt_list()
        config = self._render(apps)
        # Servers change at run time; only a change of anything else (apps, TLS) is
        # worth a reload. (The file follows the servers too: ``_keep_file``.)
        try:
            shape_changed = config_shape(self.paths.config.read_text()) != config_shape(config)
        except FileNotFoundError:
            shape_changed = True
        if shape_changed:
            self._write(self.paths.config, config)
        if not self._active():
            self._write(self.paths.config, config)
            self._unit("start")
            self._wait_for_backends(apps)
        elif shape_changed:
            self._unit("reload")
            self._wait_for_backends(apps)
        self._apps = apps
        # A reload starts from the file; servers added meanwhile are applied again.
        for app in apps:
            self._apply(app)
        self._sync_maps()

    def _render(self, apps: set[str]) -> str:
        return render_config(self.paths, {a: self._servers(a) for a in apps},
                             http_port=self.http_port, https_port=self.https_port,
                             tls=bool(self.certs.names()),
                             no_keepalive=self._no_keepalive(apps),
                             threads=router_threads(os.cpu_count() or 1))

    def _keep_file(self) -> None:
        """Rewrite the file with the servers of the moment (no reload): when HAProxy dies
        and systemd restarts it (Restart=always) before dynod notices, it comes up routing
        to the dynos that are up now, not to those of the last reload (gone, or their
        addresses since given to another app's dynos)."""
        if self._apps:
            self._write(self.paths.config, self._render(self._apps))

    def _unit(self, verb: str) -> None:
        try:
            self.systemctl([verb, UNIT])
        except processes.CommandFailed as exc:
            raise Unavailable(f"router: systemctl {verb} {UNIT} failed: {exc}; see "
                              f"`journalctl -u {UNIT}`") from exc

    def _wait_for_backends(self, apps: set[str], timeout: float = 10.0) -> None:
        """Until the (new) worker answers on the admin socket with every app's backend."""
        deadline = time.monotonic() + timeout
        want = {backend_name(a) for a in apps}
        while True:
            try:
                out = self.admin("show backend")
                if want <= set(out.split()):
                    return
            except Unavailable:
                pass
            if time.monotonic() > deadline:
                raise Unavailable(f"router: HAProxy did not come up with backends for "
                                  f"{', '.join(sorted(apps)) or 'no app'} in {timeout:.0f} s; "
                                  f"see `journalctl -u {UNIT}`")
            time.sleep(0.05)

    def _apply(self, app: str) -> None:
        """Make the app's live servers equal the desired ones, through the admin socket."""
        be = backend_name(app)
        desired = {server_name(b): b for b in self._servers(app)}
        live = {s.name: s for s in
                parse_servers_state(self.admin(f"show servers state {be}")).get(be, [])}
        for name, b in desired.items():
            s = live.get(name)
            if s is None:
                out = self.admin(f"add server {be}/{name} {b.ip}:{b.port} {SERVER_OPTIONS}")
                if "New server registered" not in out:
                    raise Unavailable(f"router: add server {be}/{name}: {out.strip()}")
                self.admin(f"enable health {be}/{name}")
                self.admin(f"enable server {be}/{name}")
            elif s.maintenance:
                self.admin(f"enable server {be}/{name}")
        for name, s in live.items():
            if name not in desired:
                # Drain: no new requests; the tend loop deletes it once it is idle.
                if not s.maintenance:
                    self.admin(f"disable server {be}/{name}")
                self.admin(f"del server {be}/{name}")

    def _sync_empty(self) -> None:
        _, _, empty = self._map_entries(self._apps)
        self._write(self.paths.empty_map, render_map(empty))
        self._commit_map(self.paths.empty_map, empty)

    def _sync_maps(self) -> None:
        hosts, maint, empty = self._map_entries(self._apps)
        if self.publish_hosts is not None:
            self.publish_hosts(f"{a}.{self.platform_domain}" for a in self._apps)
        for path, entries in ((self.paths.hosts_map, hosts),
                              (self.paths.maintenance_map, maint),
                              (self.paths.empty_map, empty)):
            self._write(path, render_map(entries))
            self._commit_map(path, entries)

    def _commit_map(self, path: Path, entries: Mapping[str, str]) -> None:
        """Replace a map's contents in the running HAProxy atomically."""
        out = self.admin(f"prepare map {path}")
        if "Unknown map" in out:
            return  # nothing refers to it yet (no app); the next reload reads the file
        m = re.search(r"New version created: (\d+)", out)
        if m is None:
            raise Unavailable(f"router: prepare map {path}: {out.strip()}")
        ver = m.group(1)
        for key, value in entries.items():
            self.admin(f"add map @{ver} {path} {key} {value}")
        self.admin(f"commit map @{ver} {path}")

    def _tend(self) -> None:
        """Every few seconds: delete drained servers, catch up with the store."""
        while not self._stop.wait(2.0):
            try:
                with self._lock:
                    state = parse_servers_state(self.admin("show servers state"))
                    for be, servers in state.items():
                        for s in servers:
                            if s.maintenance:
                                self.admin(f"del server {be}/{s.name}")
                    self.refresh()
                    if time.monotonic() - self._renew_checked >= RENEW_CHECK:
                        self._renew_default()
            except Exception:
                log.exception("router: tending failed")


    def _read_logs(self) -> None:
        self._log.run(self._stop)
