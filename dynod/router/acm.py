"""Automated Certificate Management: every custom domain of an app with ACM on gets a
certificate from the ACME directory of dynod.toml, renewed before it expires (30 days,
or a third of a short lifetime), installed in the running router without a reload.

One thread: ``plan`` (pure: the store's domains and ACM records, the time -> orders to
place, when to wake), then the orders, one at a time. It wakes when ACM or a domain
changes (``kick``) and when the next one is due. A failed order leaves the domain
Failing with the CA's reason, and any certificate it had keeps serving. The router
answers the CA's http-01 requests itself (``Certs``).

The store holds what every machine's router serves, so a user's DNS may point a custom
domain at any machine of a cluster: each certificate issued (``acm_certs``), and the
http-01 challenges of the order in flight (``acm_challenges``). Each pass, every
machine (leader or not) makes its router's ACM certificates and challenges what the
store says (``plan_certs``); in a cluster that pass runs every ``CLUSTER_SYNC``. Only
the leader orders (one order per domain, not one per machine), and before it has the CA
validate, it waits (at most ``PEER_WAIT``) until every other machine's router answers
the challenge.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

import requests

from dynod.errors import DynodError
from dynod.model import acm
from dynod.model.acm import AcmChallenge, AcmDomain
from dynod.router.acme import AcmeFailure, Issued
from dynod.router.cert_store import ACM_PREFIX, normalize_bundle
from dynod.store.protocol import Store
from dynod.system.loop import Loop

log = logging.getLogger(__name__)

# Wake at least this often (a clock jump, a record changed behind our back).
MAX_SLEEP = timedelta(hours=1)
# After a failed pass (the store unreachable).
RETRY = timedelta(minutes=1)
# In a cluster every machine follows the store's certificates and challenges this
# often (another machine's leader wrote them; nothing here is told).
CLUSTER_SYNC = timedelta(seconds=1)
# The longest the leader waits for the other machines' routers to answer a challenge
# (a machine that is down must not hold up every order: the CA may ask another one).
PEER_WAIT = timedelta(seconds=20)
PROBE_EVERY = 0.25  # seconds between two rounds of asking the other routers


class Certs(Protocol):
    """What ACM needs of the router (``HaproxyRouter``)."""

    def set_challenge(self, host: str, token: str, key_authorization: str) -> None: ...
    def clear_challenge(self, host: str, token: str) -> None: ...
    def install_cert(self, name: str, bundle: str) -> None: ...
    def remove_cert(self, name: str) -> None: ...
    def cert_names(self) -> list[str]: ...
    def cert_bundle(self, name: str) -> str | None: ...


class Issuer(Protocol):
    def issue(self, hostname: str, answer: Callable[[str, str, str],
                                                    contextlib.AbstractContextManager[None]]
              ) -> Issued: ...


# (a router's address "host:port", a challenge) -> that router answers it
Probe = Callable[[str, AcmChallenge], bool]


@dataclass(frozen=True)
class Plan:
    orders: tuple[AcmDomain, ...]  # due now, in host name order
    wake: datetime  # when to look again


def plan(managed: list[tuple[str, str]], records: dict[str, AcmDomain],
         now: datetime) -> Plan:
    """``managed``: (host name, app) of every custom domain of an app with ACM on;
    ``records``: ACM's record per host name."""
    orders: list[AcmDomain] = []
    wake = now + MAX_SLEEP
    for host, app in sorted(managed):
        record = records.get(host) or acm.pending(host, app, now)
        due = acm.due_at(record)
        if due is None:
            continue
        if due <= now:
            orders.append(record)
        else:
            wake = min(wake, due)
    return Plan(tuple(orders), wake)


@dataclass(frozen=True)
class CertSync:
    install: tuple[tuple[str, str], ...]  # (host name, bundle) the router serves anew
    remove: tuple[str, ...]  # host names whose ACM certificate leaves the router
    adopt: tuple[tuple[str, str], ...]  # (host name, bundle) the store is to hold
    forget: tuple[str, ...]  # host names whose certificate leaves the store


def plan_certs(managed: set[str], stored: Mapping[str, str], served: Mapping[str, str],
               leading: bool) -> CertSync:
    """What makes this router's ACM certificates the store's. ``managed``: the host
    names ACM manages; ``stored``: the store's certificate per host name; ``served``:
    the router's; ``leading``: this machine orders (it alone writes the store). A
    certificate the router has for a managed domain and the store has none of (issued
    before the store kept them) is adopted by the leader rather than dropped; one the
    store has for a domain no longer managed is forgotten."""
    adopt = tuple(sorted((h, b) for h, b in served.items()
                         if leading and h in managed and h not in stored))
    wanted = {h: b for h, b in stored.items() if h in managed} | dict(adopt)
    install = tuple(sorted((h, b) for h, b in wanted.items() if served.get(h) != b))
    remove = tuple(sorted(set(served) - set(wanted)))
    forget = tuple(sorted(h for h in stored if leading and h not in managed))
    return CertSync(install, remove, adopt, forget)


def answers(address: str, challenge: AcmChallenge) -> bool:
    """The router at ``address`` ("host:port") answers ``challenge`` as the CA will ask
    it: ``GET /.well-known/acme-challenge/<token>`` with the domain as Host."""
    try:
        got = requests.get(f"http://{address}/.well-known/acme-challenge/{challenge.token}",
                           headers={"Host": challenge.hostname}, timeout=2,
                           allow_redirects=False)
    except requests.RequestException:
        return False
    return got.status_code == 200 and got.text.strip() == challenge.key_authorization


class AcmManager(Loop):
    """The ACM thread. ``start``, ``kick`` after a change, ``stop``."""

    name = "acm"

    def __init__(self, store: Store, certs: Certs, issuer: Issuer, *,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 leading: Callable[[], bool] | None = None,
                 peers: Callable[[], list[str]] | None = None,
                 probe: Probe = answers) -> None:
        super().__init__(MAX_SLEEP.total_seconds(), retry=RETRY.total_seconds())
        self.store = store
        # In a cluster only the leader orders (one order per domain, not one per node).
        self.leading = leading
        # In a cluster: the other machines' routers ("host:port" of their HTTP), each of
        # which must answer a challenge before the CA is asked to validate it.
        self.peers = peers
        self.probe = probe
        self.peer_wait = PEER_WAIT
        # The challenges this router answers (host/token -> key authorization).
        self._answering: dict[tuple[str, str], str] = {}
        self.certs = certs
        self.issuer = issuer
        self.clock = clock

    @staticmethod
    def cert_name(hostname: str) -> str:
        """The router's name for ACM's certificate of ``hostname`` (``CertStore``)."""
        return ACM_PREFIX + hostname

    def step(self) -> float:
        return max((self.reconcile() - self.clock()).total_seconds(), 0.05)

    def reconcile(self) -> datetime:
        """Make the router's ACM certificates and challenges the store's, place the
        orders due (the leader); returns when to look again."""
        leading = self.leading is None or self.leading()
        with self.store.read() as tx:
            managed = [(d.hostname, d.app) for a in tx.apps() if tx.acm(a.name)
                       for d in tx.domains(a.name)]
            records = {r.hostname: r for r in tx.acm_domains(None)}
            stored = tx.acm_certs()
            challenges = tx.acm_challenges()
        if leading and challenges:
            # No order is in flight between two passes of the leader's one thread: these
            # were left by one that could not remove them (the store unreachable then).
            with self.store.write() as tx:
                for c in challenges:
                    tx.remove_acm_challenge(c.hostname, c.token)
            challenges = []
        self._answer_only(challenges)
        self._sync_certs(plan_certs({h for h, _ in managed}, stored, self._served(),
                                    leading))
        now = self.clock()
        todo = plan(managed, records, now)
        wake = todo.wake if self.leading is None else min(todo.wake, now + CLUSTER_SYNC)
        if not leading:
            return wake
        for record in todo.orders:
            if self.stopping():
                break
            self._order(record)
        if todo.orders:
            return self.clock()  # look again at once: records changed
        return wake

    def _served(self) -> dict[str, str]:
        """The router's ACM certificates, by host name."""
        found = {}
        for name in self.certs.cert_names():
            if name.startswith(ACM_PREFIX):
                bundle = self.certs.cert_bundle(name)
                if bundle is not None:
                    found[name.removeprefix(ACM_PREFIX)] = bundle
        return found

    def _sync_certs(self, sync: CertSync) -> None:
        if sync.adopt or sync.forget:
            with self.store.write() as tx:
                for host, bundle in sync.adopt:
                    tx.put_acm_cert(host, bundle)
                for host in sync.forget:
                    tx.remove_acm_cert(host)
        for host in sync.remove:
            log.info("acm: %s is no longer managed; its certificate is removed", host)
            self.certs.remove_cert(self.cert_name(host))
        for host, bundle in sync.install:
            try:
                self.certs.install_cert(self.cert_name(host), bundle)
            except DynodError as exc:
                log.warning("acm: %s: the certificate in the store is not served: %s",
                            host, exc.message)
            else:
                log.info("acm: %s: serving the certificate the store holds", host)

    def _answer_only(self, challenges: list[AcmChallenge]) -> None:
        """Have the router answer exactly ``challenges``."""
        wanted = {(c.hostname, c.token): c.key_authorization for c in challenges}
        for (host, token), ka in wanted.items():
            if self._answering.get((host, token)) != ka:
                self.certs.set_challenge(host, token, ka)
                self._answering[(host, token)] = ka
        for host, token in set(self._answering) - set(wanted):
            self.certs.clear_challenge(host, token)
            del self._answering[(host, token)]

    def _order(self, record: AcmDomain) -> None:
        host = record.hostname
        log.info("acm: ordering a certificate for %s", host)
        try:
            issued = self.issuer.issue(host, self._answer)
            bundle = normalize_bundle(issued.bundle)
            # This router first: one that HAProxy refuses is never handed to the others.
            self.certs.install_cert(self.cert_name(host), bundle)
        except AcmeFailure as exc:
            self._record(acm.after_failure(record, exc.reason, self.clock()))
            log.warning("acm: %s: %s", host, exc.reason)
            return
        except DynodError as exc:
            self._record(acm.after_failure(record, exc.message, self.clock()))
            log.warning("acm: %s: %s", host, exc.message)
            return
        self._record(acm.after_issue(record, issued.not_before, issued.not_after,
                                     self.clock()), bundle)
        log.info("acm: %s: certificate issued, valid until %s", host,
                 issued.not_after.isoformat())

    def _record(self, record: AcmDomain, bundle: str | None = None) -> None:
        """Keep ``record`` (and the certificate issued, for every machine's router)."""
        with self.store.write() as tx:
            if tx.acm(record.app):
                tx.put_acm_domain(record)
                if bundle is not None:
                    tx.put_acm_cert(record.hostname, bundle)

    @contextlib.contextmanager
    def _answer(self, host: str, token: str, key_authorization: str) -> Iterator[None]:
        challenge = AcmChallenge(host, token, key_authorization)
        with self.store.write() as tx:
            tx.put_acm_challenge(challenge)
        try:
            with self.store.read() as tx:
                self._answer_only(tx.acm_challenges())
            self._await_peers(challenge)
            yield
        finally:
            with self.store.write() as tx:
                tx.remove_acm_challenge(host, token)
                left = tx.acm_challenges()
            self._answer_only(left)

    def _await_peers(self, challenge: AcmChallenge) -> None:
        """Until every other machine's router answers ``challenge`` (they follow the
        store every CLUSTER_SYNC), at most ``peer_wait``: then the CA is asked anyway,
        and may reach a machine that does answer."""
        if self.peers is None:
            return
        waiting = set(self.peers())
        deadline = time.monotonic() + self.peer_wait.total_seconds()
        asked = len(waiting)
        while waiting:
            waiting = {a for a in waiting if not self.probe(a, challenge)}
            if not waiting:
                log.info("acm: %s: the challenge is answered by the %d other routers",
                         challenge.hostname, asked)
                return
            if self.stopping():
                return
            if time.monotonic() >= deadline:
                log.warning("acm: %s: the routers at %s do not answer the challenge after "
                            "%d s; the CA validates anyway", challenge.hostname,
                            ", ".join(sorted(waiting)), self.peer_wait.total_seconds())
                return
            self._stop.wait(PROBE_EVERY)  # a stop ends the wait
