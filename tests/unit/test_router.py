"""Router: the HAProxy configuration, its log lines turned into Heroku's, server state."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from dynod.router import admin_socket, haproxy_config
from dynod.router.haproxy_config import RouterPaths, render_config
from dynod.router.log_lines import LogReader, router_line
from dynod.router.protocol import Backend
from dynod.system import journal

LINE = ('dynod-router1 "shop" "" "GET" "/a?b=1" "shop.dynod.localhost" "rid-1" '
        '"1.2.3.4, 127.0.0.1" "web.2_10.213.0.3_5000" 1 0 0 12 200 717 ---- "http"')


def test_a_request_becomes_herokus_info_line() -> None:
    line = router_line(LINE)
    assert line is not None and line.app == "shop" and not line.error
    assert line.message == (
        'at=info method=GET path="/a?b=1" host=shop.dynod.localhost request_id=rid-1 '
        'fwd="1.2.3.4, 127.0.0.1" dyno=web.2 connect=1ms service=11ms status=200 '
        "bytes=717 protocol=http")


@pytest.mark.parametrize(("code", "tsc", "status", "want"), [
    ("", "sH--", "504", 'at=error code=H12 desc="Request timeout"'),
    ("", "SC--", "503", 'at=error code=H21 desc="Backend connection refused"'),
    ("", "sC--", "503", 'at=error code=H19 desc="Backend connection timeout"'),
    ("", "SH--", "502", 'at=error code=H13 desc="Connection closed without response"'),
    ("", "CD--", "200", 'at=info code=H27 desc="Client Request Interrupted"'),
    ("H80", "LR--", "503", 'at=info code=H80 desc="Maintenance mode"'),
    ("", "IH--", "503", 'at=error code=H99 desc="Platform error"'),
])
def test_termination_states_become_h_codes(code: str, tsc: str, status: str,
                                           want: str) -> None:
    raw = LINE.replace('"shop" ""', f'"shop" "{code}"').replace("200 717 ----",
                                                               f"{status} 0 {tsc}")
    line = router_line(raw)
    assert line is not None and line.message.startswith(want + " method=GET")
    if want.startswith("at=error"):
        assert " status=503 " in line.message  # Heroku answers its errors with 503


def test_no_dyno_leaves_dyno_fields_empty() -> None:
    raw = ('dynod-router1 "shop" "H14" "GET" "/" "shop.x" "r" "1.2.3.4" "<NOSRV>" -1 -1 0 0 '
           '503 415 LR-- "http"')
    line = router_line(raw)
    assert line is not None and line.message.endswith(
        'dyno= connect= service= status=503 bytes= protocol=http')
    assert 'code=H14 desc="No web processes running"' in line.message


def test_other_lines_are_not_router_lines() -> None:
    assert router_line("Server app_shop/web.1 is UP") is None
    assert router_line(LINE.replace('"shop"', '"-"', 1)) is None  # unknown host


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


def test_log_reader_writes_router_lines_to_the_apps_journal_stream(tmp_path: Path) -> None:
    journald = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    journald.bind(str(tmp_path / "journal.sock"))
    journald.settimeout(10)
    reader = LogReader(tmp_path / "log.sock", journal_socket=str(tmp_path / "journal.sock"))
    reader.open()
    stop = threading.Event()
    thread = threading.Thread(target=reader.run, args=(stop,))
    thread.start()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as haproxy:
            haproxy.sendto(b"Server app_shop/web.1 is UP\n", str(tmp_path / "log.sock"))
            haproxy.sendto(LINE.encode() + b"\n", str(tmp_path / "log.sock"))
        entry = journald.recv(65536)  # the first line is not a router line: not sent
    finally:
        stop.set()
        reader.close()
        thread.join(timeout=5)
        journald.close()
    line = router_line(LINE)
    assert line is not None
    assert entry == journal.encode({
        "MESSAGE": line.message, "PRIORITY": "6", "SYSLOG_IDENTIFIER": "dynod",
        "DYNOD_APP": "shop", "DYNOD_SOURCE": "dynod", "DYNOD_DYNO": "router"})
    assert not thread.is_alive()
