"""Logs: journalctl queries, journald entries in Logplex's format; domains; certs."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from dynod.control import certs, logs
from dynod.errors import FailedPrecondition, InvalidArgument, NotFound
from dynod.model.domains import normalize_hostname
from dynod.model.events import CertsChanged, EventBus
from dynod.router.cert_store import CertStore


def entry(usec: int, source: str | None, dyno: str, message: str | list[int]) -> str:
    e: dict[str, object] = {"__REALTIME_TIMESTAMP": str(usec), "DYNOD_APP": "shop",
                            "DYNOD_DYNO": dyno, "MESSAGE": message}
    if source is not None:
        e["DYNOD_SOURCE"] = source
    return json.dumps(e)


def test_query_argv_matches_fields() -> None:
    argv = logs.journalctl_argv(logs.make_query("shop"))
    assert argv[:4] == ["journalctl", "--output=json", "--no-pager", "--all"]
    assert argv[4:] == ["DYNOD_APP=shop", "DYNOD_SOURCE=app", "DYNOD_SOURCE=dynod",
                        "--lines=100"]
    argv = logs.journalctl_argv(logs.make_query("shop", 5, True, "web.1", "heroku"))
    assert argv[4:] == ["DYNOD_APP=shop", "DYNOD_SOURCE=dynod", "DYNOD_DYNO=web.1",
                        "--lines=5", "--follow"]


@pytest.mark.parametrize(("lines", "dyno", "source", "error"), [
    (1501, "", "", "give 1 to 1500 lines"),
    (0, "", "syslog", "use app or dynod"),
    (0, "web 1", "", "use a process type"),
])
def test_bad_queries(lines: int, dyno: str, source: str, error: str) -> None:
    with pytest.raises(InvalidArgument, match=error):
        logs.make_query("shop", lines, False, dyno, source)


def test_entries_in_logplex_format_and_filters() -> None:
    raw = [
        entry(1_600_000_000_000_001, "app", "web.1", "hello"),
        entry(1_600_000_000_500_000, None, "build", "-----> Python app detected"),
        entry(1_600_000_001_000_000, "dynod", "web.2", "State changed from starting to up"),
        entry(1_600_000_002_000_000, "dynod", "router", "at=info method=GET"),
        entry(1_600_000_003_000_000, "app", "web.1", list(b"caf\xc3\xa9 \xff")),
        "not json",
    ]
    out = [logs.format_line(x) for x in logs.select(logs.make_query("shop"), raw)]
    assert out == [
        "2020-09-13T12:26:40.000001+00:00 app[web.1]: hello",
        "2020-09-13T12:26:41.000000+00:00 dynod[web.2]: State changed from starting to up",
        "2020-09-13T12:26:42.000000+00:00 dynod[router]: at=info method=GET",
        "2020-09-13T12:26:43.000000+00:00 app[web.1]: café \ufffd",
    ]
    web = list(logs.select(logs.make_query("shop", dyno="web"), raw))
    assert [x.dyno for x in web] == ["web.1", "web.2", "web.1"]
    assert len(list(logs.select(logs.make_query("shop", lines=2), raw))) == 2


def test_hostnames() -> None:
    assert normalize_hostname("WWW.Example.com.") == "www.example.com"
    for bad in ("example", "-a.example.com", "a b.com", "x" * 64 + ".com"):
        with pytest.raises(InvalidArgument, match="not a valid host name"):
            normalize_hostname(bad)


@pytest.fixture
def pem(tmp_path: Path) -> tuple[str, str]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
                    "-subj", "/CN=www.example.test", "-addext",
                    "subjectAltName=DNS:www.example.test,DNS:example.test",
                    "-keyout", str(tmp_path / "k.pem"), "-out", str(tmp_path / "c.pem")],
                   check=True, capture_output=True)
    return (tmp_path / "c.pem").read_text(), (tmp_path / "k.pem").read_text()


def test_certs(tmp_path: Path, pem: tuple[str, str]) -> None:
    cert_pem, key_pem = pem
    store = tmp_path / "certs"
    installer = CertStore(store, tmp_path / "crt-list")  # files only: no HAProxy
    events = EventBus()
    published: list[CertsChanged] = []
    events.subscribe(CertsChanged, published.append)
    cert = certs.add_cert(installer, events, cert_pem, key_pem)
    assert cert.name == "www-example-test"
    assert cert.hostnames == ("www.example.test", "example.test")
    assert cert.expires_at > datetime.now(UTC)
    assert (store / "www-example-test.pem").stat().st_mode & 0o777 == 0o600
    assert certs.list_certs(store) == [cert]
    assert (tmp_path / "crt-list").read_text() == f"{store}/www-example-test.pem\n"
    with pytest.raises(InvalidArgument, match="then the key"):
        certs.add_cert(installer, events, key_pem, cert_pem)
    other = subprocess.run(["openssl", "genrsa", "2048"], capture_output=True, text=True,
                           check=True).stdout
    with pytest.raises(InvalidArgument, match="do not go together"):
        certs.add_cert(installer, events, cert_pem, other)
    assert certs.list_certs(store) == [cert]  # nothing lost, no leftovers
    assert sorted(p.name for p in store.iterdir()) == ["www-example-test.pem"]
    with pytest.raises(FailedPrecondition, match="made and renewed by dynod"):
        certs.remove_cert(installer, events, "dynod-default")
    certs.remove_cert(installer, events, cert.name)
    with pytest.raises(NotFound):
        certs.remove_cert(installer, events, cert.name)
    assert (tmp_path / "crt-list").read_text() == ""
    # The router hears of each change that happened, and of nothing else.
    assert published == [CertsChanged("www-example-test"), CertsChanged("www-example-test")]
