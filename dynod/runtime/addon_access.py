"""Which dynos may reach which add-ons, kept true on the host as dynos come and go.

An add-on is reachable from the dynos (web, workers, one-offs, the release phase) of the
apps it is attached to, and from nothing else (issue 15; Heroku's add-ons are reached
only through the attachment's URL). Two layers enforce it, both fed from here:

* the network: nftables sets of dyno addresses per add-on port on the gateway
  (``system/addon_firewall.py``); a non-member's packets are dropped;
* the servers: ``AddonServices.admit`` (pg_hba.conf per database, so an app with its own
  database on the shared Postgres port is turned away from another's; Redis sessions
  from an address that lost access are ended).

The host tells us each dyno's network as it is made, before the dyno's process starts
(``network_up``: a release phase runs ``migrate`` at once), and as it is removed
(``network_down``, before its address can be handed to another dyno). Build containers
are not dynos and are never told: they reach no add-on. Attachments come from the store;
``refresh`` follows AddonsChanged. ``rebuild`` reads the running dynos back from their
``dyno.json`` after dynod restarts (the dynos keep running).

A cluster (issue 19): an add-on's server runs on its home machine, the one whose
gateway its URL names, and only there are its sets and admissions kept. The attached
apps' dynos on the other machines are admitted too: each machine publishes its dynos
(``addon-clients/``), each home machine follows them into its sets (``set_remote``,
``runtime/addon_peers.py``), and a dyno whose app has an add-on elsewhere waits, before
its command runs, until that home machine says it is admitted (``peers.announce``);
when it goes, its address leaves the home machine's sets before it is reused
(``peers.withdraw``), as on one machine.
"""

from __future__ import annotations

import json
import logging
import pwd
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Protocol

from dynod.errors import DynodError, Unavailable
from dynod.model.addons import Addon, AddonServices, AddonState, Attachment
from dynod.model.dynos import DynoMeta
from dynod.settings import Settings
from dynod.store.protocol import Store
from dynod.system import mounts, netns
from dynod.system.addon_firewall import AddonFirewall

log = logging.getLogger(__name__)

META = "dyno.json"  # as runtime/dynos.py writes it
# Debian's packages run the servers as these users (postgresql, redis-server).
SERVER_USERS = ("postgres", "redis")


class Peers(Protocol):
    """The other machines of a cluster, as add-on access needs them
    (``runtime.addon_peers.AddonPeers``)."""

    def announce(self, app: str, key: str, address: IPv4Address) -> None:
        """Return once the home machines of ``app``'s add-ons admit ``address``."""
        ...

    def withdraw(self, key: str, address: IPv4Address) -> None:
        """Return once no home machine admits ``address`` any more. Never raises."""
        ...


class Firewall(Protocol):
    """The kernel side (``system.addon_firewall.AddonFirewall``)."""

    def read(self) -> dict[int, set[IPv4Address]]: ...
    def replace(self, members: Mapping[int, Iterable[IPv4Address]],
                stale: Iterable[int] = ()) -> None: ...
    def update(self, add: Mapping[int, Iterable[IPv4Address]],
               remove: Mapping[int, Iterable[IPv4Address]]) -> None: ...


@dataclass(frozen=True)
class LiveDyno:
    app: str
    address: IPv4Address


@dataclass(frozen=True)
class Access:
    """What may reach what: add-on name -> dyno addresses (for the servers), and
    gateway port -> dyno addresses (for the firewall; Postgres add-ons share a port)."""

    addons: Mapping[str, frozenset[IPv4Address]]
    ports: Mapping[int, frozenset[IPv4Address]]


def compute_access(addons: Iterable[Addon], attachments: Iterable[Attachment],
                   dynos: Iterable[LiveDyno], home: str | None = None) -> Access:
    """Pure: each add-on's set is the addresses of the live dynos of the apps it is
    attached to. An add-on being deprovisioned admits nobody; one without a port yet
    (still provisioning) has no firewall set. ``home``: this machine's gateway; an
    add-on whose host is another (a cluster member's server) is not this machine's to
    open, and is left out (one with no host yet is still being provisioned)."""
    apps_of: dict[str, set[str]] = {}
    for att in attachments:
        apps_of.setdefault(att.addon, set()).add(att.app)
    by_app: dict[str, set[IPv4Address]] = {}
    for d in dynos:
        by_app.setdefault(d.app, set()).add(d.address)
    per_addon: dict[str, frozenset[IPv4Address]] = {}
    per_port: dict[int, set[IPv4Address]] = {}
    for addon in addons:
        if home is not None and addon.credentials.host not in (home, ""):
            continue
        members: set[IPv4Address] = set()
        if addon.state != AddonState.DEPROVISIONED:
            for app in apps_of.get(addon.name, ()):
                members |= by_app.get(app, set())
        per_addon[addon.name] = frozenset(members)
        port = addon.credentials.port
        if port > 0:
            per_port.setdefault(port, set()).update(members)
    return Access(per_addon, {p: frozenset(a) for p, a in per_port.items()})


def read_live_dynos(runtime_dir: Path) -> dict[str, LiveDyno]:
    """Dyno key -> app and address of every dyno whose ``dyno.json`` and network
    namespace exist (web, workers, one-offs, release phases; never builds)."""
    found: dict[str, LiveDyno] = {}
    try:
        dirs = sorted(mounts.dynos_dir(runtime_dir).iterdir())
    except FileNotFoundError:
        return found
    for d in dirs:
        if not (netns.NETNS_DIR / (netns.NETNS_PREFIX + d.name)).exists():
            continue
        try:
            meta = DynoMeta(**json.loads((d / META).read_text()))
            found[d.name] = LiveDyno(meta.app, IPv4Address(meta.address))
        except (OSError, ValueError, TypeError):
            continue
    return found


class AddonAccess:
    """Keeps the firewall's sets and the servers' admissions equal to
    ``compute_access(store's add-ons, attachments, live dynos)``. Safe from any
    thread; every change is applied before the call returns."""

    def __init__(self, store: Store, runtime_dir: Path, firewall: Firewall,
                 services: AddonServices | None = None, home: str | None = None) -> None:
        self.store = store
        self.runtime_dir = runtime_dir
        self.firewall = firewall
        self.services = services
        self.home = home
        # A cluster member's other machines (the composition root sets it).
        self.peers: Peers | None = None
        self._lock = threading.RLock()
        self._dynos: dict[str, LiveDyno] = {}
        self._remote: dict[str, LiveDyno] = {}  # other machines' dynos, by node/key
        self._ports: dict[int, frozenset[IPv4Address]] | None = None  # None: unknown
        self._admitted: dict[str, frozenset[IPv4Address]] | None = None

    # --- the host's hooks ----------------------------------------------------------

    def network_up(self, app: str, key: str, address: IPv4Address) -> None:
        """Dyno ``key`` of ``app`` has its network at ``address`` and its process has
        not started: admit it to its app's add-ons now, those of other machines of a
        cluster too. Raises Unavailable when the app has add-ons and the firewall
        refuses to open them to it (the dyno must not start without the database its
        release command needs)."""
        with self._lock:
            self._dynos[key] = LiveDyno(app, address)
            try:
                self._apply()
            except DynodError as exc:
                if not self._has_addons(app):
                    log.warning("add-on access: %s", exc.message)
                    return
                raise Unavailable(
                    f"dyno {key}: add-ons cannot be opened to it: {exc.message}; "
                    "check `journalctl -u dynod` and the add-on servers' units") from exc
        if self.peers is not None:  # outside the lock: the follower applies meanwhile
            self.peers.announce(app, key, address)

    def network_down(self, key: str) -> None:
        """Dyno ``key``'s process is gone and its network goes: its address leaves
        every set before it can be reused. Never raises (teardown goes on)."""
        with self._lock:
            gone = self._dynos.pop(key, None)
            if gone is None:
                return
            self._apply_logged()
        if self.peers is not None:
            self.peers.withdraw(key, gone.address)

    # --- followers -----------------------------------------------------------------

    def refresh(self) -> None:
        """Attachments changed (AddonsChanged): a detached app loses access before
        this returns, an attached one gains it."""
        with self._lock:
            self._apply_logged()

    def rebuild(self) -> None:
        """At dynod's start: the dynos still running are read back, the sets are
        rewritten whole (what an earlier dynod left is forgotten) and the servers are
        told, even if nothing differs."""
        with self._lock:
            self._dynos = read_live_dynos(self.runtime_dir)
            self._ports = None
            self._admitted = None
            self._apply_logged()

    def local_dynos(self) -> dict[str, LiveDyno]:
        """This machine's dynos with a network, by key (for the other machines)."""
        with self._lock:
            return dict(self._dynos)

    def set_remote(self, dynos: Mapping[str, LiveDyno]) -> dict[str, frozenset[IPv4Address]]:
        """The other machines' dynos are ``dynos`` (by ``node/key``); the attachments
        are read again too (another machine's API changes them without an event here).
        Returns the add-ons' addresses as applied (``addresses``). Raises DynodError
        when the firewall refuses (what was applied stays)."""
        with self._lock:
            self._remote = dict(dynos)
            self._apply()
            return dict(self._admitted or {})

    def addresses(self) -> dict[str, frozenset[IPv4Address]]:
        """Add-on -> addresses as last applied (``dynoctl`` diagnostics, tests)."""
        with self._lock:
            return dict(self._admitted or {})

    # --- applying ------------------------------------------------------------------

    def _has_addons(self, app: str) -> bool:
        with self.store.read() as tx:
            return bool(tx.list_attachments(app=app))

    def _apply_logged(self) -> None:
        try:
            self._apply()
        except DynodError as exc:
            log.error("add-on access: %s", exc.message)

    def _apply(self) -> None:
        with self.store.read() as tx:
            addons = tx.list_addons()
            attachments = tx.list_attachments()
        access = compute_access(addons, attachments,
                                [*self._dynos.values(), *self._remote.values()], self.home)
        self._apply_firewall(dict(access.ports))
        admitted = dict(access.addons)
        if self.services is None or admitted == self._admitted:
            self._admitted = admitted
            return
        # A server that cannot be told turns the new dyno away itself (pg_hba names the
        # address), so this is logged, not raised; the next change tries again.
        try:
            self.services.admit({name: {str(a) for a in addrs}
                                 for name, addrs in admitted.items()})
        except DynodError as exc:
            log.error("add-on servers: admitting %s: %s",
                      ", ".join(sorted(admitted)) or "nobody", exc.message)
            return
        self._admitted = admitted

    def _apply_firewall(self, ports: dict[int, frozenset[IPv4Address]]) -> None:
        applied = self._ports
        if applied is not None and set(applied) == set(ports):
            add = {p: ports[p] - applied[p] for p in ports if ports[p] - applied[p]}
            remove = {p: applied[p] - ports[p] for p in ports if applied[p] - ports[p]}
            if not add and not remove:
                return
            try:
                self.firewall.update(add, remove)
                self._ports = ports
                return
            except DynodError as exc:  # someone changed the sets: rewrite them whole
                log.warning("add-on access: %s; rewriting the add-on rules", exc.message)
        # A port appeared or went, or this is the first time: sets and rules whole.
        self._ports = None
        self.firewall.replace(ports, stale=set(self.firewall.read()) - set(ports))
        self._ports = ports


def server_uids(users: Iterable[str]) -> list[int]:
    """The uids of the add-on servers' users that exist on this host."""
    found = []
    for user in users:
        try:
            found.append(pwd.getpwnam(user).pw_uid)
        except KeyError:
            continue
    return found



def make_addon_access(store: Store, settings: Settings,
                      services: AddonServices | None) -> AddonAccess:
    """The composition root's AddonAccess: nftables on this host's bridge, the
    servers' users kept off add-on ports over loopback."""
    firewall = AddonFirewall(netns.plan_bridge(settings.address_pool),
                             server_uids(SERVER_USERS))
    return AddonAccess(store, settings.runtime_dir, firewall, services,
                       home=str(firewall.plan.gateway))
