"""Automated Certificate Management (Heroku's ACM): per custom domain of an app with ACM
on, a certificate from an ACME CA (Let's Encrypt by default), renewed before it expires.

Pure: the statuses Heroku shows, when a certificate is due for renewal and when a failed
attempt is tried again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum


class AcmStatus(StrEnum):
    """A domain's ``acm_status``, with Heroku's API values (``certs:auto`` shows them
    capitalised: ``Cert issued``, ``Failing``, ``Failed``, ``Pending``)."""

    PENDING = "pending"  # no certificate yet; an order is under way or due
    CERT_ISSUED = "cert issued"
    FAILING = "failing"  # the last attempt failed; tried again after a back-off
    FAILED = "failed"  # gave up after FAILURES_BEFORE_FAILED attempts; certs:auto:refresh


# Heroku: renewal "30 days before expiry"; for a short-lived certificate (an ACME test
# CA's, or a 6-day one), when a third of its lifetime is left, which is what Let's
# Encrypt itself recommends for 90-day ones (at 60 days).
RENEW_BEFORE = timedelta(days=30)
# After a failure: 1, 2, 4, ... minutes, at most an hour; then Failed.
FIRST_RETRY = timedelta(minutes=1)
MAX_RETRY = timedelta(hours=1)
FAILURES_BEFORE_FAILED = 8


@dataclass(frozen=True)
class AcmDomain:
    """What ACM knows of one custom domain: its status, the ACME error of the last
    failure (``reason``), the current certificate's validity (None before the first),
    when the next attempt is due (None: nothing to do until renewal)."""

    hostname: str
    app: str
    status: AcmStatus
    updated_at: datetime
    reason: str = ""
    not_before: datetime | None = None
    not_after: datetime | None = None
    failures: int = 0
    next_attempt: datetime | None = None


@dataclass(frozen=True)
class AcmChallenge:
    """An http-01 challenge of an order in flight: what every machine's router answers
    for ``GET http://<hostname>/.well-known/acme-challenge/<token>`` until the order
    ends (a user's DNS may point the domain at any machine of a cluster)."""

    hostname: str
    token: str
    key_authorization: str


def renew_at(not_before: datetime, not_after: datetime) -> datetime:
    """When a certificate valid from ``not_before`` to ``not_after`` is renewed: 30 days
    before it expires, or when a third of its lifetime is left if that is sooner."""
    lifetime = max(not_after - not_before, timedelta(0))
    return not_after - min(RENEW_BEFORE, lifetime / 3)


def retry_delay(failures: int) -> timedelta:
    """The wait after the ``failures``-th failure in a row (1 or more)."""
    return min(FIRST_RETRY * (1 << min(max(failures - 1, 0), 16)), MAX_RETRY)


def due_at(domain: AcmDomain) -> datetime | None:
    """When this domain needs an ACME order next (None: never, until a refresh)."""
    if domain.status == AcmStatus.FAILED:
        return None
    if domain.next_attempt is not None:
        return domain.next_attempt
    if domain.not_before is not None and domain.not_after is not None:
        return renew_at(domain.not_before, domain.not_after)
    return domain.updated_at


def after_failure(domain: AcmDomain, reason: str, now: datetime) -> AcmDomain:
    """The state after a failed order: Failing with the reason and a back-off, or Failed
    after too many. A certificate it had is kept (and keeps serving)."""
    failures = domain.failures + 1
    if failures >= FAILURES_BEFORE_FAILED:
        return AcmDomain(domain.hostname, domain.app, AcmStatus.FAILED, now, reason,
                         domain.not_before, domain.not_after, failures, None)
    return AcmDomain(domain.hostname, domain.app, AcmStatus.FAILING, now, reason,
                     domain.not_before, domain.not_after, failures,
                     now + retry_delay(failures))


def after_issue(domain: AcmDomain, not_before: datetime, not_after: datetime,
                now: datetime) -> AcmDomain:
    return AcmDomain(domain.hostname, domain.app, AcmStatus.CERT_ISSUED, now, "",
                     not_before, not_after, 0, None)


def refreshed(domain: AcmDomain, now: datetime) -> AcmDomain:
    """``certs:auto:refresh``: a domain without a good certificate (Failing, Failed) is
    tried again now, from a clean slate; an issued one is left alone."""
    if domain.status == AcmStatus.CERT_ISSUED:
        return domain
    return AcmDomain(domain.hostname, domain.app, AcmStatus.PENDING, now, "",
                     domain.not_before, domain.not_after, 0, now)


def pending(hostname: str, app: str, now: datetime) -> AcmDomain:
    return AcmDomain(hostname, app, AcmStatus.PENDING, now, next_attempt=now)
