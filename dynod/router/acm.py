"""Automated Certificate Management: every custom domain of an app with ACM on gets a
certificate from the ACME directory of dynod.toml, renewed before it expires (30 days,
or a third of a short lifetime), installed in the running router without a reload.

One thread: ``plan`` (pure: the store's domains and ACM records, the certificate files,
the time -> orders to place, files to remove, when to wake), then the orders, one at a
time. It wakes when ACM or a domain changes (``kick``) and when the next one is due. A
failed order leaves the domain Failing with the CA's reason, and any certificate it had
keeps serving. The router answers the CA's http-01 requests itself (``Certs``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from dynod.errors import DynodError
from dynod.model import acm
from dynod.model.acm import AcmDomain
from dynod.router.acme import AcmeFailure, Issued
from dynod.router.cert_store import ACM_PREFIX
from dynod.store.protocol import Store
from dynod.system.loop import Loop

log = logging.getLogger(__name__)

# Wake at least this often (a clock jump, a record changed behind our back).
MAX_SLEEP = timedelta(hours=1)
# A node that is not the leader looks again this often: it may become the leader.
FOLLOWER_WAKE = timedelta(seconds=30)
# After a failed pass (the store unreachable).
RETRY = timedelta(minutes=1)


class Certs(Protocol):
    """What ACM needs of the router (``HaproxyRouter``)."""

    def set_challenge(self, host: str, token: str, key_authorization: str) -> None: ...
    def clear_challenge(self, host: str, token: str) -> None: ...
    def install_cert(self, name: str, bundle: str) -> None: ...
    def remove_cert(self, name: str) -> None: ...
    def cert_names(self) -> list[str]: ...


class Issuer(Protocol):
    def issue(self, hostname: str, answer: Callable[[str, str, str],
                                                    contextlib.AbstractContextManager[None]]
              ) -> Issued: ...


@dataclass(frozen=True)
class Plan:
    orders: tuple[AcmDomain, ...]  # due now, in host name order
    remove: tuple[str, ...]  # host names whose ACM certificate goes
    wake: datetime  # when to look again


def plan(managed: list[tuple[str, str]], records: dict[str, AcmDomain],
         cert_hosts: set[str], now: datetime) -> Plan:
    """``managed``: (host name, app) of every custom domain of an app with ACM on;
    ``records``: ACM's record per host name; ``cert_hosts``: the host names that have an
    ACM certificate file."""
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
    hosts = {h for h, _ in managed}
    return Plan(tuple(orders), tuple(sorted(cert_hosts - hosts)), wake)


class AcmManager(Loop):
    """The ACM thread. ``start``, ``kick`` after a change, ``stop``."""

    name = "acm"

    def __init__(self, store: Store, certs: Certs, issuer: Issuer,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 leading: Callable[[], bool] | None = None) -> None:
        super().__init__(MAX_SLEEP.total_seconds(), retry=RETRY.total_seconds())
        self.store = store
        # In a cluster only the leader orders (one order per domain, not one per node).
        self.leading = leading
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
        """Place the orders due, remove certificates no longer managed; returns when to
        look again."""
        with self.store.read() as tx:
            managed = [(d.hostname, d.app) for a in tx.apps() if tx.acm(a.name)
                       for d in tx.domains(a.name)]
            records = {r.hostname: r for r in tx.acm_domains(None)}
        files = {n.removeprefix(ACM_PREFIX) for n in self.certs.cert_names()
                 if n.startswith(ACM_PREFIX)}
        todo = plan(managed, records, files, self.clock())
        if todo.orders and self.leading is not None and not self.leading():
            todo = Plan((), todo.remove, min(todo.wake, self.clock() + FOLLOWER_WAKE))
        for host in todo.remove:
            log.info("acm: %s is no longer managed; its certificate is removed", host)
            self.certs.remove_cert(self.cert_name(host))
        for record in todo.orders:
            if self.stopping():
                break
            self._order(record)
        if todo.orders:
            return self.clock()  # look again at once: records changed
        return todo.wake

    def _order(self, record: AcmDomain) -> None:
        host = record.hostname
        log.info("acm: ordering a certificate for %s", host)
        try:
            issued = self.issuer.issue(host, self._answer)
            self.certs.install_cert(self.cert_name(host), issued.bundle)
        except AcmeFailure as exc:
            self._record(acm.after_failure(record, exc.reason, self.clock()))
            log.warning("acm: %s: %s", host, exc.reason)
            return
        except DynodError as exc:
            self._record(acm.after_failure(record, exc.message, self.clock()))
            log.warning("acm: %s: %s", host, exc.message)
            return
        self._record(acm.after_issue(record, issued.not_before, issued.not_after,
                                     self.clock()))
        log.info("acm: %s: certificate issued, valid until %s", host,
                 issued.not_after.isoformat())

    def _record(self, record: AcmDomain) -> None:
        with self.store.write() as tx:
            if tx.acm(record.app):
                tx.put_acm_domain(record)

    @contextlib.contextmanager
    def _answer(self, host: str, token: str, key_authorization: str) -> Iterator[None]:
        self.certs.set_challenge(host, token, key_authorization)
        try:
            yield
        finally:
            self.certs.clear_challenge(host, token)
