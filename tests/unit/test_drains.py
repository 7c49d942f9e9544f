"""Log drains without a network: URLs, frames, the store, the use cases, and a shipper
between a fake journal and a fake receiver."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from dynod.control import apps, drains
from dynod.control.drain_shipper import (
    DrainShipper,
    DrainShippers,
    Position,
    journal_argv,
    read_position,
)
from dynod.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from dynod.model.drains import Drain, Scheme, Target, frame, overflow_message, parse_url
from dynod.model.events import DrainsChanged, EventBus
from dynod.store.protocol import Store
from dynod.system.drain_sockets import DeliveryFailed
from tests.unit.conftest import open_store

T0 = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)


def test_urls_are_parsed_or_refused_with_the_fix() -> None:
    assert parse_url("syslog+tls://logs.example.com:6514") == Target(
        Scheme.SYSLOG_TLS, "logs.example.com", 6514)
    assert parse_url("syslog://10.0.0.1:514").tls is False
    assert parse_url("https://u:p@example.com/logs?x=1") == Target(
        Scheme.HTTPS, "example.com", 443, "/logs?x=1")
    for bad, says in [("ftp://x:1", "unknown scheme 'ftp'"), ("example.com", "no scheme"),
                      ("syslog://host", "has no port"), ("https://", "has no host"),
                      ("syslog://h:99999", "Port out of range"),
                      ("syslog://h:514/path", "no path"), ("a b", "not a URL")]:
        with pytest.raises(InvalidArgument, match=says):
            parse_url(bad)


def test_frames_are_octet_counted_rfc5424_as_logplex_writes_them() -> None:
    data = frame(T0, "d.abc", "app", "web.1", "hello")
    length, _, body = data.partition(b" ")
    assert int(length) == len(body)
    assert body == b"<190>1 2024-05-01T12:00:00.123456+00:00 d.abc app web.1 - - hello\n"
    assert frame(T0, "d.abc", "heroku", "router", "at=info").split(b" ")[1] == b"<158>1"
    assert overflow_message(500, T0) == ("Error L10 (output buffer overflow): 500 messages "
                                         "dropped since 2024-05-01T12:00:00+00:00.")


@pytest.fixture
def store(tmp_path: Path, store_kind: str, request: pytest.FixtureRequest) -> Iterator[Store]:
    """Each kind of store (SQLite, etcd), with the app shop."""
    s = open_store(store_kind, tmp_path, request)
    apps.create_app(s, EventBus(), "shop", "jane")
    yield s
    s.close()


def test_add_list_remove_by_url_or_token(store: Store) -> None:
    events, seen = EventBus(), list[DrainsChanged]()
    events.subscribe(DrainsChanged, seen.append)
    probed: list[Target] = []
    a = drains.add_drain(store, events, "shop", "syslog+tls://a.example:6514", probed.append)
    b = drains.add_drain(store, events, "shop", "https://b.example/x", probed.append)
    assert a.token.startswith("d.") and len(a.token) == 38
    assert [d.url for d in drains.list_drains(store, "shop")] == [a.url, b.url]
    assert [t.host for t in probed] == ["a.example", "b.example"]
    with pytest.raises(AlreadyExists, match="already has the drain"):
        drains.add_drain(store, events, "shop", a.url, None)
    assert drains.remove_drain(store, events, "shop", a.token) == a
    assert drains.remove_drain(store, events, "shop", b.url) == b
    with pytest.raises(NotFound, match='drain "x" not found on app "shop"'):
        drains.remove_drain(store, events, "shop", "x")
    assert seen == [DrainsChanged("shop")] * 4
    with pytest.raises(NotFound, match='app "nope" not found'):
        drains.list_drains(store, "nope")


def test_a_receiver_that_does_not_answer_or_a_bad_url_adds_nothing(
        store: Store) -> None:
    def refuse(_t: Target) -> None:
        raise DeliveryFailed("it refused the connection")
    with pytest.raises(FailedPrecondition, match="cannot reach h:1: it refused the "
                       "connection; check the host, the port"):
        drains.add_drain(store, EventBus(), "shop", "syslog://h:1", refuse)
    with pytest.raises(InvalidArgument, match="unknown scheme"):
        drains.add_drain(store, EventBus(), "shop", "gopher://h:1", None)
    assert drains.list_drains(store, "shop") == []
    for i in range(5):
        drains.add_drain(store, EventBus(), "shop", f"syslog://h{i}:1", None)
    with pytest.raises(FailedPrecondition, match="has 5 drains, the most"):
        drains.add_drain(store, EventBus(), "shop", "syslog://h9:1", None)
    # Drains go with their app.
    with store.write() as tx:
        tx.remove_app("shop")
    with store.read() as tx:
        assert tx.drains() == []


def _entry(cursor: str, message: str, source: str = "app", dyno: str = "web.1",
           times: str = "") -> str:
    fields = {"__CURSOR": cursor, "__REALTIME_TIMESTAMP": "1714564800000000",
              "DYNOD_SOURCE": source, "DYNOD_DYNO": dyno, "MESSAGE": message}
    if times:
        fields["DYNOD_TIMES"] = times
    return json.dumps(fields)


class FakeJournal:
    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        self.closed = threading.Event()

    def __iter__(self) -> Iterator[str]:
        yield from self.lines
        self.closed.wait()

    def close(self) -> int | None:
        self.closed.set()
        return None


class Receiver:
    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.up = threading.Event()
        self.up.set()

    def send(self, frames: list[bytes]) -> None:
        if not self.up.is_set():
            raise DeliveryFailed("it refused the connection")
        self.frames += frames

    def close(self) -> None:
        pass

    def messages(self) -> list[str]:
        return [f.decode().split(" - - ", 1)[1].rstrip("\n") for f in self.frames]


def _wait(what: str, check: object, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def _drain() -> Drain:
    return Drain("shop", "d.00000000-0000-0000-0000-000000000001", "syslog://h:1", T0)


def test_shipper_sends_every_line_in_order_and_resumes_from_its_position(
        tmp_path: Path) -> None:
    receiver, argvs = Receiver(), []
    entries = [_entry("c1", "one"), _entry("c2", "r1\nr2\nr3", "dynod", "router", "1 2 3"),
               _entry("c3", "Release v2", "app", "api")]

    def journal(argv: list[str]) -> FakeJournal:
        argvs.append(argv)
        return FakeJournal(entries if len(argvs) == 1 else entries[1:])
    pos = tmp_path / "d.position"
    s = DrainShipper(_drain(), pos, lambda _d, _t: receiver, journal)
    s.start()
    _wait("all lines", lambda: s.delivered == 5)
    s.stop(wait=2)
    assert receiver.messages() == ["one", "r1", "r2", "r3", "Release v2"]
    assert b" d.00000000-0000-0000-0000-000000000001 heroku router - - r2" in \
        receiver.frames[2]
    assert b" app api - - Release v2" in receiver.frames[4]
    assert read_position(pos) == Position("c3", 0)
    assert argvs[0][-1] == f"--since=@{T0.timestamp():.6f}"
    # A restart resumes at the stored entry and skips what was delivered of it.
    write_position_file = pos.write_text
    write_position_file("c2\n1\n")
    receiver2 = Receiver()
    s = DrainShipper(_drain(), pos, lambda _d, _t: receiver2, journal)
    s.start()
    _wait("the rest", lambda: s.delivered == 2)
    s.stop(wait=2)
    assert argvs[1][-1] == "--cursor=c2"
    assert receiver2.messages() == ["r3", "Release v2"]


def test_a_dead_receiver_fills_only_its_buffer_then_gets_l10_and_the_newest_lines(
        tmp_path: Path) -> None:
    receiver = Receiver()
    receiver.up.clear()
    entries = [_entry(f"c{i}", f"line {i}") for i in range(30)]
    s = DrainShipper(_drain(), tmp_path / "p", lambda _d, _t: receiver,
                     lambda _a: FakeJournal(entries), buffer_lines=10)
    s.start()
    _wait("the buffer to fill and drop", lambda: s.dropped >= 19 and s.last_error)
    assert s.buffered() <= 11 and s.delivered == 0 and not s.connected
    assert "refused" in s.stats().last_error
    receiver.up.set()
    _wait("delivery", lambda: s.delivered + s.dropped == 30, timeout=15)
    s.stop(wait=2)
    got = receiver.messages()
    assert got[0].startswith(f"Error L10 (output buffer overflow): {s.dropped} messages "
                             "dropped since ")
    assert b"heroku logplex" in receiver.frames[0]
    assert got[-1] == "line 29"
    numbers = [int(m.split()[1]) for m in got[1:] if m.startswith("line ")]
    assert numbers == sorted(numbers) and len(numbers) == 30 - s.dropped


def test_shippers_follow_the_store(store: Store, tmp_path: Path) -> None:
    receiver = Receiver()
    shippers = DrainShippers(store, tmp_path / "drains", lambda _d, _t: receiver,
                             lambda _a: FakeJournal([]))
    d = drains.add_drain(store, EventBus(), "shop", "syslog://h:1", None)
    shippers.sync()
    assert [(s.token, s.buffered, s.dropped) for s in shippers.stats()] == [(d.token, 0, 0)]
    drains.remove_drain(store, EventBus(), "shop", d.token)
    shippers.sync()
    assert shippers.stats() == []
    shippers.stop()


def test_journal_argv_reads_the_apps_stream_only() -> None:
    argv = journal_argv("shop", T0, Position("s=1", 3))
    assert "DYNOD_APP=shop" in argv and "--follow" in argv and "--no-tail" in argv
    assert argv[-1] == "--cursor=s=1"
