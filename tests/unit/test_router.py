"""Router: the HAProxy configuration, its log lines turned into Heroku's, server state."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from dynod.control import logs
from dynod.router import admin_socket, haproxy_config, log_lines
from dynod.router.haproxy_config import RouterPaths, render_config
from dynod.router.log_lines import LogReader, router_line
from dynod.router.protocol import Backend
from dynod.system import journal

LINE = ('dynod-router1 shop - ---- 200 1 0 0 12 web.2_10.213.0.3_5000 717 http '
        'method=GET path="/a?b=1" host=shop.dynod.localhost request_id=rid-1 '
        'fwd="1.2.3.4, 127.0.0.1"')


def raw(code: str = "-", tsc: str = "----", status: str = "200",
        server: str = "web.2_10.213.0.3_5000") -> str:
    return LINE.replace(" - ---- 200 ", f" {code} {tsc} {status} ").replace(
        "web.2_10.213.0.3_5000", server)


def test_a_request_becomes_herokus_info_line() -> None:
    line = router_line(LINE)
    assert line is not None and line.app == "shop" and not line.error
    assert line.message == (
        'at=info method=GET path="/a?b=1" host=shop.dynod.localhost request_id=rid-1 '
        'fwd="1.2.3.4, 127.0.0.1" dyno=web.2 connect=1ms service=11ms status=200 '
        "bytes=717 protocol=http")


@pytest.mark.parametrize(("code", "tsc", "status", "want"), [
    ("-", "sH--", "504", 'at=error code=H12 desc="Request timeout"'),
    ("-", "SC--", "503", 'at=error code=H21 desc="Backend connection refused"'),
    ("-", "sC--", "503", 'at=error code=H19 desc="Backend connection timeout"'),
    ("-", "SH--", "502", 'at=error code=H13 desc="Connection closed without response"'),
    ("-", "SD--", "200", 'at=error code=H18 desc="Server Request Interrupted"'),
    ("-", "sD--", "200", 'at=error code=H15 desc="Idle connection"'),
    ("-", "PH--", "502", 'at=error code=H17 desc="Poorly formatted HTTP response"'),
    ("-", "CD--", "200", 'at=info code=H27 desc="Client Request Interrupted"'),
    ("-", "CR--", "400", 'at=info code=H27 desc="Client Request Interrupted"'),
    ("-", "cR--", "408", 'at=error code=H28 desc="Client Connection Idle"'),
    ("H80", "LR--", "503", 'at=info code=H80 desc="Maintenance mode"'),
    ("-", "IH--", "500", 'at=error code=H99 desc="Platform error"'),
    ("-", "KC--", "503", 'at=error code=H99 desc="Platform error"'),
    ("-", "DD--", "200", 'at=error code=H99 desc="Platform error"'),
    ("-", "UQ--", "503", 'at=error code=H99 desc="Platform error"'),
    ("-", "RC--", "503", 'at=error code=H99 desc="Platform error"'),
    ("-", "xx--", "503", 'at=error code=H99 desc="Platform error"'),
])
def test_termination_states_become_h_codes(code: str, tsc: str, status: str,
                                           want: str) -> None:
    line = router_line(raw(code, tsc, status))
    assert line is not None and line.message.startswith(want + " method=GET"), line
    if want.startswith("at=error") and status[0] == "5":
        assert " status=503 " in line.message  # Heroku answers its errors with 503


def test_every_termination_state_gets_a_code() -> None:
    for first in "CSPLRIDUKcs-x":
        for second in "RQCHDLT-":
            tsc = f"{first}{second}--"
            code = log_lines.code_for(tsc, "200", "web.1_1_2")
            assert (code == "") == (first in "-L"), tsc
            assert code == "" or code in log_lines.DESCRIPTIONS, tsc


def test_the_apps_own_errors_are_not_the_routers() -> None:
    line = router_line(raw(status="500"))
    assert line is not None and line.message.startswith("at=info method=GET")
    assert " status=500 " in line.message
    # HAProxy's own 5xx with no server and a clean state: H99, not silence.
    line = router_line(raw(status="500", server="<NOSRV>"))
    assert line is not None and line.message.startswith('at=error code=H99')


def test_no_dyno_leaves_dyno_fields_empty() -> None:
    line = router_line(raw("H14", "LR--", "503", "<NOSRV>"))
    assert line is not None and line.message.endswith(
        'dyno= connect= service= status=503 bytes= protocol=http')
    assert 'code=H14 desc="No web processes running"' in line.message


def test_other_lines_are_not_router_lines() -> None:
    assert router_line("Server app_shop/web.1 is UP") is None
    assert router_line(LINE.replace(" shop ", " - ", 1)) is None  # unknown host
    assert router_line("dynod-router1 shop short") is None


def test_octet_counted_frames_come_off_the_stream_whole() -> None:
    buf = bytearray(b"5 hello11 hello world3 ab")
    assert log_lines.frames(buf) == [b"hello", b"hello world"]
    assert bytes(buf) == b"3 ab"
    buf += b"c"
    assert log_lines.frames(buf) == [b"abc"] and not buf
    with pytest.raises(ValueError, match="not an octet-counted frame"):
        log_lines.frames(bytearray(b"garbage without any length at all"))


def test_servers_state_parsing() -> None:
    tail = "5 1 0 0 0 0 0 0 - 5000 - 0 0 - - 0"
    text = ("1\n# be_id be_name srv_id srv_name ...\n"
            f"4 app_shop 1 web.1_10.0.0.2_5000 10.0.0.2 2 0 1 1 {tail}\n"
            f"4 app_shop 2 web.2_10.0.0.3_5000 10.0.0.3 0 1 1 1 {tail}\n")
    state = admin_socket.parse_servers_state(text)
    assert [(s.name, s.maintenance) for s in state["app_shop"]] == [
        ("web.1_10.0.0.2_5000", False), ("web.2_10.0.0.3_5000", True)]
    assert haproxy_config.dyno_of("web.12_10.0.0.3_5000") == "web.12"


def test_config_is_valid_haproxy(tmp_path: Path) -> None:
    paths = RouterPaths(tmp_path)
    for p in (paths.hosts_map, paths.maintenance_map, paths.empty_map, paths.crt_list,
              paths.acme_map):
        p.write_text("")
    for name, html in haproxy_config.PAGES.items():
        paths.page(name).write_text(html)
    (tmp_path / "error.http").write_bytes(haproxy_config.error_response())
    config = render_config(paths, {"shop": [Backend("web.1", "10.0.0.2", 5000)], "b": []},
                           http_port=18080)
    assert "backend app_shop" in config and "backend app_b" in config
    assert "    server web.1_10.0.0.2_5000 10.0.0.2:5000 " in config
    # Only a change of something other than servers reloads.
    other = render_config(paths, {"shop": [], "b": []}, http_port=18080)
    assert haproxy_config.config_shape(config) == haproxy_config.config_shape(other)
    binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not Path(binary).exists():
        pytest.skip("haproxy is not installed")
    (tmp_path / "haproxy.cfg").write_text(config)
    check = subprocess.run([binary, "-c", "-f", str(tmp_path / "haproxy.cfg")],
                           capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr


def _frame(line: str) -> bytes:
    data = line.encode()
    return str(len(data)).encode() + b" " + data


def test_log_reader_batches_router_lines_into_the_apps_journal_stream(
        tmp_path: Path) -> None:
    journald = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    journald.bind(str(tmp_path / "journal.sock"))
    journald.settimeout(10)
    reader = LogReader(tmp_path / "log.sock", journal_socket=str(tmp_path / "journal.sock"),
                       clock=lambda: 1700000000.25)
    reader.open()
    stop = threading.Event()
    thread = threading.Thread(target=reader.run, args=(stop,))
    thread.start()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as haproxy:
            haproxy.connect(str(tmp_path / "log.sock"))
            stream = b"".join(_frame(x) for x in (
                "Server app_shop/web.1 is UP", LINE, LINE.replace("rid-1", "rid-2"),
                "7 events dropped"))
            # Split mid-frame: the reader waits for the rest.
            haproxy.sendall(stream[:50])
            haproxy.sendall(stream[50:])
            first = journald.recv(1 << 20)
            second = journald.recv(1 << 20)
        # A broken stream ends only that connection; the next one is read.
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as bad:
            bad.connect(str(tmp_path / "log.sock"))
            bad.sendall(b"this is not octet counted at all, not at all")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as haproxy:
            haproxy.connect(str(tmp_path / "log.sock"))
            haproxy.sendall(_frame(LINE.replace("rid-1", "rid-3")))
            third = journald.recv(1 << 20)
    finally:
        stop.set()
        reader.close()
        thread.join(timeout=5)
        journald.close()
    line = router_line(LINE)
    assert line is not None
    two = line.message + "\n" + line.message.replace("rid-1", "rid-2")
    assert first == journal.encode({
        "MESSAGE": two, "PRIORITY": "6", "DYNOD_TIMES": "1700000000250000 1700000000250000",
        "SYSLOG_IDENTIFIER": "dynod", "DYNOD_APP": "shop", "DYNOD_SOURCE": "dynod",
        "DYNOD_DYNO": "router"})
    assert b"Error L10 (output buffer overflow): 7 messages dropped since " \
           b"2023-11-14T22:13:20.250000+00:00." in second
    assert b"rid-3" in third
    assert reader.dropped == 7 and reader.lines == 3
    assert not thread.is_alive()


class _Chunks:
    """A connection whose reads return these chunks, then the end of the stream."""

    def __init__(self, *chunks: bytes) -> None:
        self.chunks = list(chunks)

    def settimeout(self, _: float) -> None:
        pass

    def recv(self, n: int) -> bytes:
        assert n == log_lines.READ_CHUNK
        return self.chunks.pop(0) if self.chunks else b""

    def __enter__(self) -> _Chunks:
        return self

    def __exit__(self, *_: object) -> None:
        pass


class _Waits(threading.Event):
    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float | None] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout)
        return False


def test_log_reader_pauses_after_a_short_read_so_lines_come_many_to_a_read(
        tmp_path: Path) -> None:
    reader = LogReader(tmp_path / "log.sock", journal_socket=str(tmp_path / "none"))
    taken: list[int] = []
    reader.take = lambda raws: taken.append(len(raws))  # type: ignore[method-assign]
    pad = log_lines.READ_CHUNK - len(_frame(LINE)) - 7  # one frame filling a whole read
    full = _frame(LINE) + _frame("x" * pad)
    assert len(full) == log_lines.READ_CHUNK
    stop = _Waits()
    reader._read(_Chunks(_frame(LINE), full, _frame(LINE) * 3), stop)  # type: ignore[arg-type]
    # A full read is followed by the next at once; a short one by a pause.
    assert taken == [1, 2, 3]
    assert stop.waits == [log_lines.READ_PAUSE, log_lines.READ_PAUSE]


def test_batched_entries_read_back_as_lines() -> None:
    entry = {"DYNOD_SOURCE": "dynod", "DYNOD_DYNO": "router", "__REALTIME_TIMESTAMP": "5",
             "MESSAGE": "at=info one\nat=info two", "DYNOD_TIMES": "1000000 2000000"}
    lines = logs.parse_entry(json.dumps(entry))
    assert [(x.message, x.time.timestamp()) for x in lines] == [("at=info one", 1.0),
                                                                  ("at=info two", 2.0)]
    del entry["DYNOD_TIMES"]
    assert [x.message for x in logs.parse_entry(json.dumps(entry))] == [
        "at=info one\nat=info two"]


def test_config_keeps_dyno_connections_alive_unless_the_app_opts_out(tmp_path: Path) -> None:
    config = render_config(RouterPaths(tmp_path), {"a": [], "b": []},
                           no_keepalive=frozenset({"b"}))
    a = config.split("backend app_a")[1].split("backend app_b")[0]
    b = config.split("backend app_b")[1]
    assert "http-reuse always" in config and "option http-server-close" not in a
    assert "    option http-server-close" in b
    assert f"pool-max-conn {haproxy_config.POOL_MAX_CONN} " in haproxy_config.SERVER_OPTIONS
    assert "tune.http.logurilen 8192" in config


def test_the_router_takes_half_the_cores_as_threads(tmp_path: Path) -> None:
    # With as many threads as cores, a thread preempted in the log ring's lock left the
    # other spinning (benchmarks/router.py): the dynos need the rest of the machine.
    assert [haproxy_config.router_threads(n) for n in (1, 2, 3, 8)] == [1, 1, 1, 4]
    config = render_config(RouterPaths(tmp_path), {"a": []}, threads=4)
    assert config.splitlines()[4] == "    nbthread 4"
