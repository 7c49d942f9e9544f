"""Logs: journalctl queries, journald entries in Logplex's format; domains; certs."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from dynod.control import certs, logs
from dynod.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
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
    argv = logs.backlog_argv(logs.make_query("shop"))
    assert argv[:4] == ["journalctl", "--output=json", "--no-pager", "--all"]
    assert argv[4:] == ["DYNOD_APP=shop", "DYNOD_SOURCE=app", "DYNOD_SOURCE=dynod",
                        "--reverse", "--lines=100"]
    q = logs.make_query("shop", 5, True, "web.1", "heroku")
    assert logs.backlog_argv(q)[4:] == ["DYNOD_APP=shop", "DYNOD_SOURCE=dynod",
                                        "DYNOD_DYNO=web.1", "--reverse", "--lines=5"]
    assert logs.follow_argv(q, after_cursor="s=1")[7:] == ["--after-cursor=s=1", "--follow"]
    assert logs.follow_argv(q, cursor="s=1")[7:] == ["--cursor=s=1", "--follow"]
    assert logs.follow_argv(q)[7:] == ["--lines=all", "--follow"]
    # A process type is matched here, as far back as it takes.
    assert logs.backlog_argv(logs.make_query("shop", 5, dyno="web"))[-1] == "--reverse"


@pytest.mark.parametrize(("lines", "dyno", "source", "error"), [
    (1501, "", "", "give 1 to 1500 lines"),
    (0, "", "syslog", "use app or dynod"),
    (0, "web 1", "", "use a process type"),
])
def test_bad_queries(lines: int, dyno: str, source: str, error: str) -> None:
    with pytest.raises(InvalidArgument, match=error):
        logs.make_query("shop", lines, False, dyno, source)
    with pytest.raises(InvalidArgument, match="not a log position"):
        logs.make_query("shop", after="s=1;i=2")


class FakeJournal:
    """journalctl over a list of entries (oldest first), for the argv stream() gives:
    --reverse, --lines=N, --cursor=, --after-cursor=, --follow (then the `later`
    entries, as if they arrived), and DYNOD_DYNO=; records each argv."""

    def __init__(self, entries: list[dict[str, object]],
                 later: list[dict[str, object]] | None = None) -> None:
        self.entries = entries
        self.later = later or []
        self.argvs: list[list[str]] = []
        self.closed = 0

    def __call__(self, argv: list[str]) -> FakeJournal.Out:
        self.argvs.append(argv)
        opts = dict(a.split("=", 1) for a in argv if "=" in a and a.startswith("--"))
        rows = list(self.entries)
        if "--follow" in argv:
            rows += self.later
        dyno = next((a.split("=", 1)[1] for a in argv if a.startswith("DYNOD_DYNO=")), None)
        if dyno is not None:
            rows = [e for e in rows if e["DYNOD_DYNO"] == dyno]
        cursors = [str(e["__CURSOR"]) for e in rows]
        if "--cursor" in opts:
            rows = rows[cursors.index(opts["--cursor"]):]
        elif "--after-cursor" in opts:
            rows = rows[cursors.index(opts["--after-cursor"]) + 1:]
        elif opts.get("--lines", "all") != "all":
            rows = rows[len(rows) - int(opts["--lines"]):] if int(opts["--lines"]) else []
        if "--reverse" in argv:
            rows = rows[::-1]
        return FakeJournal.Out(self, [json.dumps(e) for e in rows])

    class Out:
        def __init__(self, journal: FakeJournal, raws: list[str]) -> None:
            self.journal, self.raws = journal, raws

        def __iter__(self) -> Iterator[str]:
            return iter(self.raws)

        def close(self) -> int | None:
            self.journal.closed += 1
            return 0

        def stderr(self) -> str:
            return ""


def jentry(n: int, dyno: str, *texts: str) -> dict[str, object]:
    e: dict[str, object] = {"__CURSOR": f"s=ab;i={n:x}", "__REALTIME_TIMESTAMP": str(n),
                            "DYNOD_APP": "shop", "DYNOD_SOURCE": "dynod",
                            "DYNOD_DYNO": dyno, "MESSAGE": "\n".join(texts)}
    if len(texts) > 1:
        e["DYNOD_TIMES"] = " ".join(str(n) for _ in texts)
    return e


def test_stream_backlog_counts_lines_of_batched_entries_and_filters_types() -> None:
    journal = FakeJournal([jentry(1, "web.1", "a"), jentry(2, "router", "r1", "r2", "r3"),
                           jentry(3, "worker.1", "w"), jentry(4, "web.2", "b")])
    out = [x.message for x in logs.stream(logs.make_query("shop", 3), journal)]
    assert out == ["r3", "w", "b"]  # three lines, though the router entry holds three
    web = [x.message for x in logs.stream(logs.make_query("shop", 5, dyno="web"), journal)]
    assert web == ["a", "b"]
    one = list(logs.stream(logs.make_query("shop", 2, dyno="router"), journal))
    assert [x.message for x in one] == ["r2", "r3"]
    assert [x.position for x in one] == ["s=ab;i=2#1", "s=ab;i=2#2"]


def test_stream_follows_from_the_newest_backlog_entry_and_resumes_inside_a_batch() -> None:
    journal = FakeJournal([jentry(1, "web.1", "a"), jentry(2, "router", "r1", "r2")],
                          later=[jentry(3, "router", "r3", "r4", "r5"), jentry(4, "web.1", "c")])
    q = logs.make_query("shop", 1, follow=True)
    seen = list(logs.stream(q, journal))
    assert [x.message for x in seen] == ["r2", "r3", "r4", "r5", "c"]
    assert "--after-cursor=s=ab;i=2" in journal.argvs[-1]
    # A tail that showed r4 and lost its stream: the rest of r4's entry, and on, once.
    after = seen[2].position
    assert after == "s=ab;i=3#1"
    resumed = list(logs.stream(logs.make_query("shop", 1, True, after=after), journal))
    assert [x.message for x in resumed] == ["r5", "c"]
    # The last line of an entry: the next entry whole.
    resumed = list(logs.stream(logs.make_query("shop", 1, True, after=seen[3].position),
                               journal))
    assert [x.message for x in resumed] == ["c"]


def test_stream_reports_a_failed_journalctl() -> None:
    class Broken(FakeJournal.Out):
        def close(self) -> int | None:
            return 1

        def stderr(self) -> str:
            return "Failed to open journal"

    journal = FakeJournal([jentry(1, "web.1", "a")])
    with pytest.raises(Unavailable, match="journalctl failed: Failed to open journal"):
        list(logs.stream(logs.make_query("shop"), lambda argv: Broken(journal, [])))


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
