"""Automated Certificate Management without a CA: renewal timing and back-off (pure),
the ACM thread's plan and its orders against fakes of the issuer and the router, the
control use cases on a real store, certs:auto's output, and bad input."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dynod.cli.acm import distance, render_status, status_label
from dynod.control import acm as control_acm
from dynod.control.apps import create_app
from dynod.control.domains import add_domain, remove_domain
from dynod.errors import FailedPrecondition, InvalidArgument, NotFound
from dynod.model import acm
from dynod.model.acm import AcmChallenge, AcmDomain, AcmStatus
from dynod.model.events import EventBus
from dynod.router.acm import AcmManager, plan, plan_certs
from dynod.router.acme import AcmeFailure, Issued
from dynod.router.cert_store import CertStore
from dynod.router.haproxy_config import RouterPaths, render_config
from dynod.settings import load_settings
from dynod.store.protocol import Store
from dynod.v1 import domains_pb2
from tests.unit.conftest import open_store

T0 = datetime(2026, 1, 1, tzinfo=UTC)


# -- renewal timing and back-off


def test_a_90_day_certificate_renews_30_days_before_it_expires() -> None:
    assert acm.renew_at(T0, T0 + timedelta(days=90)) == T0 + timedelta(days=60)


def test_a_short_lived_certificate_renews_when_a_third_of_its_life_is_left() -> None:
    assert acm.renew_at(T0, T0 + timedelta(seconds=60)) == T0 + timedelta(seconds=40)
    assert acm.renew_at(T0, T0 + timedelta(days=6)) == T0 + timedelta(days=4)


def test_failures_back_off_then_fail_and_keep_the_certificate() -> None:
    issued = acm.after_issue(acm.pending("a.example.com", "shop", T0), T0,
                             T0 + timedelta(days=90), T0)
    assert acm.due_at(issued) == T0 + timedelta(days=60)
    d = issued
    waits = []
    for _ in range(acm.FAILURES_BEFORE_FAILED - 1):
        d = acm.after_failure(d, "DNS problem", T0)
        assert d.status == AcmStatus.FAILING and d.reason == "DNS problem"
        assert d.not_after == T0 + timedelta(days=90)  # still served
        assert d.next_attempt is not None
        waits.append(d.next_attempt - T0)
    assert waits[:3] == [timedelta(minutes=1), timedelta(minutes=2), timedelta(minutes=4)]
    assert max(waits) == timedelta(hours=1)
    d = acm.after_failure(d, "DNS problem", T0)
    assert d.status == AcmStatus.FAILED and acm.due_at(d) is None
    again = acm.refreshed(d, T0 + timedelta(hours=2))
    assert (again.status, again.failures, acm.due_at(again)) == (
        AcmStatus.PENDING, 0, T0 + timedelta(hours=2))
    assert acm.refreshed(issued, T0) == issued


def test_plan_orders_what_is_due_and_wakes_for_the_next() -> None:
    renewing = acm.after_issue(acm.pending("b.example.com", "shop", T0), T0,
                               T0 + timedelta(seconds=60), T0)
    now = T0 + timedelta(seconds=10)
    p = plan([("b.example.com", "shop"), ("a.example.com", "shop")],
             {"b.example.com": renewing}, now)
    assert [o.hostname for o in p.orders] == ["a.example.com"]
    assert p.wake == T0 + timedelta(seconds=40)


def test_the_router_follows_the_stores_certificates() -> None:
    managed = {"a.example.com", "b.example.com", "c.example.com"}
    stored = {"a.example.com": "A2", "b.example.com": "B", "off.example.com": "O"}
    served = {"a.example.com": "A1", "b.example.com": "B", "c.example.com": "C",
              "gone.example.com": "G"}
    # A follower: a renewed one replaced, what the store lacks removed.
    s = plan_certs(managed, stored, served, leading=False)
    assert s.install == (("a.example.com", "A2"),)
    assert s.remove == ("c.example.com", "gone.example.com")
    assert (s.adopt, s.forget) == ((), ())
    # The leader keeps c's (issued before the store held certificates) by adopting it,
    # and drops from the store what ACM no longer manages.
    s = plan_certs(managed, stored, served, leading=True)
    assert s.install == (("a.example.com", "A2"),)
    assert s.remove == ("gone.example.com",)
    assert s.adopt == (("c.example.com", "C"),)
    assert s.forget == ("off.example.com",)
    # A fresh machine gets every managed one; one in step changes nothing.
    assert plan_certs(managed, stored, {}, False).install == (
        ("a.example.com", "A2"), ("b.example.com", "B"))
    assert plan_certs(managed, {"b.example.com": "B"}, {"b.example.com": "B"}, False) == (
        plan_certs(set(), {}, {}, False))


# -- the ACM thread's work, with a fake CA and router


class FakeCerts:
    def __init__(self) -> None:
        self.installed: dict[str, str] = {}
        self.challenges: dict[str, str] = {}
        self.seen: list[dict[str, str]] = []

    def set_challenge(self, host: str, token: str, key_authorization: str) -> None:
        self.challenges[f"{host}/{token}"] = key_authorization

    def clear_challenge(self, host: str, token: str) -> None:
        del self.challenges[f"{host}/{token}"]

    def install_cert(self, name: str, bundle: str) -> None:
        self.installed[name] = bundle

    def remove_cert(self, name: str) -> None:
        self.installed.pop(name, None)

    def cert_names(self) -> list[str]:
        return ["dynod-default", "www-example-org", *self.installed]

    def cert_bundle(self, name: str) -> str | None:
        return self.installed.get(name, "a user's" if name == "www-example-org" else None)


Answer = Callable[[str, str, str], contextlib.AbstractContextManager[None]]


class FakeCA:
    def __init__(self, certs: FakeCerts) -> None:
        self.certs = certs
        self.fail: str = ""
        self.lifetime = timedelta(seconds=60)
        self.now = T0

    def issue(self, hostname: str, answer: Answer) -> Issued:
        with answer(hostname, "tok", "tok.thumb"):
            self.certs.seen.append(dict(self.certs.challenges))  # answered meanwhile
            if self.fail:
                raise AcmeFailure(self.fail)
        return Issued(f"CERT {hostname} {self.now}\n", self.now, self.now + self.lifetime)


@pytest.fixture
def store(tmp_path: Path, store_kind: str, request: pytest.FixtureRequest) -> Iterator[Store]:
    """Each kind of store (SQLite, etcd), with the app shop and a custom domain."""
    s = open_store(store_kind, tmp_path, request)
    events = EventBus()
    create_app(s, events, "shop", "me")
    add_domain(s, events, "shop", "www.example.com", "dynod.localhost")
    yield s
    s.close()


def test_orders_install_renew_and_a_failure_keeps_the_certificate(
        store: Store, tmp_path: Path) -> None:
    certs = FakeCerts()
    ca = FakeCA(certs)
    # The control plane stamps records with the real time.
    t0 = ca.now = datetime.now(UTC) + timedelta(seconds=1)
    clock = [t0]
    manager = AcmManager(store, certs, ca, clock=lambda: clock[0])
    cert = "acm--www.example.com"  # beside the default and a user's, which ACM leaves
    events = EventBus()
    assert manager.reconcile() == t0 + timedelta(hours=1)  # ACM off: nothing
    assert certs.installed == {}

    control_acm.set_acm(store, events, "shop", True)
    state = control_acm.acm_state(store, "shop")
    assert state.enabled and state.domains[0][1] is not None
    assert state.domains[0][1].status == AcmStatus.PENDING
    manager.reconcile()
    assert certs.installed == {cert: f"CERT www.example.com {t0}\n"}
    assert certs.seen == [{"www.example.com/tok": "tok.thumb"}] and certs.challenges == {}
    record = control_acm.acm_state(store, "shop").domains[0][1]
    assert record is not None and record.status == AcmStatus.CERT_ISSUED
    assert manager.reconcile() == t0 + timedelta(seconds=40)

    # Renewal at 40 s; then a failing one leaves the renewed certificate served.
    clock[0] = ca.now = t0 + timedelta(seconds=40)
    manager.reconcile()
    assert certs.installed[cert] == f"CERT www.example.com {ca.now}\n"
    clock[0] = t0 + timedelta(seconds=80)
    ca.fail = "DNS problem: NXDOMAIN looking up A for www.example.com"
    manager.reconcile()
    assert certs.installed[cert] == f"CERT www.example.com {ca.now}\n"
    record = control_acm.acm_state(store, "shop").domains[0][1]
    assert record is not None
    assert (record.status, record.reason) == (AcmStatus.FAILING, ca.fail)
    assert record.next_attempt == clock[0] + timedelta(minutes=1)

    # Removing the domain (or disabling ACM) removes its certificate.
    remove_domain(store, events, "shop", "www.example.com")
    manager.reconcile()
    assert certs.installed == {}


def test_every_machine_serves_the_certificate_and_answers_the_challenge(
        store: Store) -> None:
    """A leader and a follower on one store: the follower's router answers the challenge
    before the CA validates (the leader asks it), and serves what the leader issued,
    renewed, and nothing once ACM is off."""
    leader_certs, follower_certs = FakeCerts(), FakeCerts()
    ca = FakeCA(leader_certs)
    t0 = ca.now = datetime.now(UTC) + timedelta(seconds=1)
    clock = [t0]
    follower = AcmManager(store, follower_certs, ca, clock=lambda: clock[0],
                          leading=lambda: False, peers=list)
    asked: list[tuple[str, AcmChallenge]] = []

    def probe(address: str, challenge: AcmChallenge) -> bool:
        asked.append((address, challenge))
        follower.reconcile()  # the follower's own thread, meanwhile
        key = f"{challenge.hostname}/{challenge.token}"
        return follower_certs.challenges.get(key) == challenge.key_authorization

    leader = AcmManager(store, leader_certs, ca, clock=lambda: clock[0],
                        leading=lambda: True, peers=lambda: ["10.0.0.2:80"], probe=probe)
    cert = "acm--www.example.com"
    control_acm.set_acm(store, EventBus(), "shop", True)
    # The follower orders nothing (the CA would be asked twice).
    assert follower.reconcile() == t0 + timedelta(seconds=1)
    assert follower_certs.installed == {} and ca.certs.seen == []

    leader.reconcile()
    assert [a for a, _ in asked] == ["10.0.0.2:80"]
    assert ca.certs.seen == [{"www.example.com/tok": "tok.thumb"}]
    with store.read() as tx:
        assert tx.acm_challenges() == []
    follower.reconcile()
    assert follower_certs.challenges == {}
    assert follower_certs.installed == {cert: f"CERT www.example.com {t0}\n"}
    assert leader_certs.installed == follower_certs.installed

    clock[0] = ca.now = t0 + timedelta(seconds=40)
    leader.reconcile()
    follower.reconcile()
    assert follower_certs.installed == {cert: f"CERT www.example.com {ca.now}\n"}

    control_acm.set_acm(store, EventBus(), "shop", False)
    leader.reconcile()
    follower.reconcile()
    assert leader_certs.installed == follower_certs.installed == {}
    with store.read() as tx:
        assert tx.acm_certs() == {}


def test_a_router_that_never_answers_does_not_hold_up_the_order(store: Store) -> None:
    certs = FakeCerts()
    ca = FakeCA(certs)
    ca.now = datetime.now(UTC) + timedelta(seconds=1)
    asked: list[str] = []

    def probe(address: str, _challenge: AcmChallenge) -> bool:
        asked.append(address)
        return False

    manager = AcmManager(store, certs, ca, clock=lambda: ca.now, leading=lambda: True,
                         peers=lambda: ["10.0.0.3:80"], probe=probe)
    manager.peer_wait = timedelta(0)
    control_acm.set_acm(store, EventBus(), "shop", True)
    manager.reconcile()
    assert asked == ["10.0.0.3:80"]
    assert list(certs.installed) == ["acm--www.example.com"]


def test_a_certificate_from_before_the_store_kept_them_is_adopted(store: Store) -> None:
    certs = FakeCerts()
    certs.installed["acm--www.example.com"] = "OLD\n"
    ca = FakeCA(certs)
    ca.now = datetime.now(UTC) + timedelta(seconds=1)
    with store.write() as tx:
        tx.set_acm("shop", True)
        tx.put_acm_domain(acm.after_issue(acm.pending("www.example.com", "shop", ca.now),
                                          ca.now, ca.now + timedelta(days=90), ca.now))
    AcmManager(store, certs, ca, clock=lambda: ca.now).reconcile()
    assert certs.installed == {"acm--www.example.com": "OLD\n"} and certs.seen == []
    with store.read() as tx:
        assert tx.acm_certs() == {"www.example.com": "OLD\n"}


# -- control use cases and bad input


def test_refresh_needs_acm_on_and_unknown_apps_are_named(store: Store) -> None:
    events = EventBus()
    with pytest.raises(FailedPrecondition, match="certs:auto:enable -a shop"):
        control_acm.refresh_acm(store, events, "shop")
    with pytest.raises(NotFound, match='app "nope" not found'):
        control_acm.set_acm(store, events, "nope", True)


def test_acme_directory_must_be_an_https_url(tmp_path: Path) -> None:
    conf = tmp_path / "dynod.toml"
    conf.write_text('acme_directory = "http://acme.example/dir"\n')
    with pytest.raises(InvalidArgument, match="'acme_directory' must be the https:// URL"):
        load_settings(conf)
    conf.write_text('acme_directory = "https://127.0.0.1:14000/dir"\n'
                    'acme_ca_file = "/tmp/pebble.pem"\n')
    s = load_settings(conf)
    assert (s.acme_directory, s.acme_ca_file) == ("https://127.0.0.1:14000/dir",
                                                  Path("/tmp/pebble.pem"))


def test_a_pem_haproxy_refuses_changes_nothing(tmp_path: Path) -> None:
    cert = tmp_path / "certs" / "acm--www.example.com.pem"
    cert.parent.mkdir()
    cert.write_text("OLD\n")
    sent: list[str] = []

    def admin(command: str) -> str:
        sent.append(command.split(" <<", maxsplit=1)[0])
        if command.startswith("show ssl cert"):
            return f"# filename\n{cert}\n"
        if command.startswith("set ssl cert"):
            return "unable to load certificate\nCan't update!\n"
        return ""

    store = CertStore(tmp_path / "certs", tmp_path / "crt-list", admin)
    with pytest.raises(InvalidArgument, match="HAProxy refused the certificate acm--www"):
        store.install_bundle("acm--www.example.com", "garbage")
    assert cert.read_text() == "OLD\n"
    assert sent[-1] == f"abort ssl cert {cert}"
    assert not any(c.startswith(("commit", "add ssl")) for c in sent)


def test_the_router_answers_acme_challenges_before_routing(tmp_path: Path) -> None:
    paths = RouterPaths(tmp_path)
    config = render_config(paths, {"shop": []}).splitlines()
    answer = next(i for i, line in enumerate(config) if "lf-string" in line)
    no_app = next(i for i, line in enumerate(config) if "no-such-app" in line)
    maintenance = next(i for i, line in enumerate(config) if "maintenance.map" in line)
    assert answer < no_app and answer < maintenance
    assert f"map({paths.acme_map})" in config[answer - 1]


# -- certs:auto's output (Heroku's)


def test_status_labels_are_herokus() -> None:
    assert [status_label(s) for s in ("cert issued", "failing", "failed", "pending", "",
                                      "dns-verified")] == [
        "Cert issued", "Failing", "Failed", "Pending", "Waiting", "DNS Verified"]
    assert [distance(s) for s in (5, 70, 600, 3600, 7200, 86400 * 3)] == [
        "less than a minute", "1 minute", "10 minutes", "about 1 hour", "about 2 hours",
        "3 days"]


def _reply(*domains: tuple[str, str, str]) -> domains_pb2.GetAcmResponse:
    out = domains_pb2.GetAcmResponse(enabled=True)
    for host, status, reason in domains:
        d = out.domains.add(hostname=host, status=status, reason=reason)
        d.updated_at.FromDatetime(T0)
    return out


def test_certs_auto_shows_each_domain_and_what_to_do() -> None:
    now = T0 + timedelta(minutes=2)
    assert render_status("shop", domains_pb2.GetAcmResponse(enabled=False)) == [
        "=== Automatic Certificate Management is disabled on ⬢ shop"]
    assert render_status("shop", _reply(), now)[-1] == (
        "=== Add a custom domain to your app by running: dynoctl domains:add "
        "<yourdomain.com>")
    assert render_status("shop", _reply(("www.example.com", "cert issued", "")), now) == [
        "=== Automatic Certificate Management is enabled on ⬢ shop",
        "",
        "Domain           Status       Last Updated",
        "www.example.com  Cert issued  2 minutes",
    ]
    lines = render_status("shop", _reply(("a.example.com", "cert issued", ""),
                                         ("b.example.com", "failing", "DNS problem")), now)
    assert lines[2:] == [
        "Domain         Status       Reason       Last Updated",
        "a.example.com  Cert issued               2 minutes",
        "b.example.com  Failing      DNS problem  2 minutes",
        "",
        "=== Some domains are failing validation, please verify that your DNS matches: "
        "dynoctl domains",
    ]


def test_acm_records_go_with_their_domain(store: Store) -> None:
    events = EventBus()
    control_acm.set_acm(store, events, "shop", True)
    with store.read() as tx:
        assert [d.hostname for d in tx.acm_domains("shop")] == ["www.example.com"]
    remove_domain(store, events, "shop", "www.example.com")
    with store.read() as tx:
        assert tx.acm_domains(None) == []
        record = AcmDomain("www.example.com", "shop", AcmStatus.PENDING, T0)
    with store.write() as tx:
        tx.put_acm_domain(record)  # the domain is gone: nothing is recorded
    with store.read() as tx:
        assert tx.acm_domains(None) == []
