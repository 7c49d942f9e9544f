"""Add-ons across a cluster's machines (issue 19): the attached apps' dynos on any
machine reach an add-on on its home machine, and nothing else does.

Each machine publishes every dyno it has a network for (``addon-clients/<me>/``, on its
lease: web, workers, one-offs, release phases) and follows the others' into its own
add-on sets and servers' admissions (``AddonAccess.set_remote``), then says what it has
opened (``addon-admitted/<me>``). A follower thread does this every half second; a
dyno starting here whose app has an add-on on another machine does not wait for it:
``announce`` publishes it at once and returns when every home machine of its add-ons
lists its address (a release phase's ``migrate`` connects first thing). ``withdraw``
waits the other way when a dyno goes, so that its address is out of every home
machine's sets before this machine hands it to another dyno.

A home machine that does not answer within ``WAIT`` seconds (it is down: its add-ons
are unreachable anyway) is logged, and the dyno starts or its address is freed; the
home machine's records vanish with its lease, and it reads the clients again when it
comes back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from ipaddress import IPv4Address, IPv4Network

from dynod.errors import DynodError
from dynod.model.addons import Addon, Attachment
from dynod.model.cluster import AddonAdmitted, AddonBoard, AddonClient, ClusterView, Member
from dynod.runtime.addon_access import AddonAccess, LiveDyno
from dynod.runtime.follower import Follower
from dynod.store.protocol import Store

log = logging.getLogger(__name__)

# Node -> add-on -> addresses, as the home machines say.
Admitted = dict[str, Mapping[str, Iterable[str]]]
INTERVAL = 0.5
# Seconds a dyno waits for a home machine to admit it (or to let its address go).
WAIT = 15.0
POLL = 0.2


def homes_of(app: str, addons: Iterable[Addon], attachments: Iterable[Attachment],
             members: Iterable[Member], me: str) -> dict[str, str]:
    """Pure: add-on name -> home node, for ``app``'s add-ons whose server is on another
    member (the one whose pool holds the add-on's host)."""
    pools: list[tuple[IPv4Network, str]] = []
    for m in members:
        try:
            pools.append((IPv4Network(m.pool, strict=True), m.name))
        except ValueError:
            continue
    attached = {a.addon for a in attachments if a.app == app}
    found: dict[str, str] = {}
    for addon in addons:
        if addon.name not in attached:
            continue
        try:
            host = IPv4Address(addon.credentials.host)
        except ValueError:  # still provisioning
            continue
        # The narrowest pool wins (the first machine's may still be the whole range).
        holders = sorted((p for p in pools if host in p[0]), key=lambda p: -p[0].prefixlen)
        if holders and holders[0][1] != me:
            found[addon.name] = holders[0][1]
    return found


def remote_dynos(clients: Iterable[AddonClient], me: str) -> dict[str, LiveDyno]:
    """Pure: the other nodes' clients as live dynos, by ``node/key``; a malformed
    address is left out."""
    found: dict[str, LiveDyno] = {}
    for c in clients:
        if c.node == me:
            continue
        try:
            found[f"{c.node}/{c.key}"] = LiveDyno(c.app, IPv4Address(c.address))
        except ValueError:
            continue
    return found


def admitted_record(me: str, addresses: Mapping[str, Iterable[IPv4Address]]) -> AddonAdmitted:
    return AddonAdmitted(me, {name: sorted(str(a) for a in sorted(addrs))
                              for name, addrs in sorted(addresses.items())})


class AddonPeers(Follower):
    """Follows the other machines' dynos into ``access`` and publishes this machine's
    (``board``); ``access.peers`` is this object (the composition root sets it)."""

    name = "addon-peers"

    def __init__(self, view: ClusterView, board: AddonBoard, access: AddonAccess,
                 store: Store, *, interval: float = INTERVAL, wait: float = WAIT,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(interval)
        self.view = view
        self.board = board
        self.access = access
        self.store = store
        self.wait = wait
        self.clock = clock
        self._publish_lock = threading.Lock()

    def _publish_mine(self) -> None:
        me = self.view.me
        with self._publish_lock:
            self.board.publish_clients([
                AddonClient(me, d.app, key, str(d.address))
                for key, d in sorted(self.access.local_dynos().items())])

    def sync(self) -> bool:
        """One pass: apply the other machines' dynos, publish this machine's, say
        what is open. Raises DynodError (the first part needs no lease: at dynod's
        start the others' dynos are let in again before this node has one)."""
        applied = self.let_in_others()
        self._publish_mine()
        self.board.publish_admitted(admitted_record(self.view.me, applied))
        return True

    def let_in_others(self) -> dict[str, frozenset[IPv4Address]]:
        """The other machines' dynos into this machine's add-on sets and admissions;
        what is open now (``AddonAccess.set_remote``). Raises DynodError."""
        return self.access.set_remote(remote_dynos(self.board.clients(), self.view.me))

    # --- a dyno's start and end (AddonAccess.peers) ----------------------------------

    def announce(self, app: str, key: str, address: IPv4Address) -> None:
        try:
            with self.store.read() as tx:
                addons, attachments = tx.list_addons(), tx.list_attachments(app=app)
            homes = homes_of(app, addons, attachments, self.view.members(), self.view.me)
        except DynodError as exc:
            log.warning("dyno %s: its add-ons on other machines: %s", key, exc.message)
            return
        if homes:
            self._wait_until(key, lambda admitted: all(
                str(address) in admitted.get(node, {}).get(name, ())
                for name, node in homes.items()),
                f"admitted by {', '.join(sorted(set(homes.values())))}")

    def withdraw(self, key: str, address: IPv4Address) -> None:
        me = self.view.me
        self._wait_until(key, lambda admitted: not any(
            str(address) in addrs for node, names in admitted.items() if node != me
            for addrs in names.values()), "out of every machine's add-on sets")

    def _wait_until(self, key: str, done: Callable[[Admitted], bool], what: str) -> None:
        """Publish this machine's dynos, then poll the home machines' records until
        ``done`` of them, or ``wait`` passed (each retried meanwhile: at dynod's start
        the node's lease may not be there yet)."""
        deadline = self.clock() + self.wait
        published = False
        failed = ""
        while True:
            try:
                if not published:
                    self._publish_mine()
                    published = True
                if done({a.node: a.addons for a in self.board.admitted()}):
                    return
            except DynodError as exc:
                failed = exc.message
            if self.clock() >= deadline:
                log.warning("dyno %s: not %s after %.0f s%s; going on (is that machine "
                            "down?)", key, what, self.wait, f" ({failed})" if failed else "")
                return
            time.sleep(POLL)
