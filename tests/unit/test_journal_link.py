"""journal.link_stdout_socket: the directory dynos get as /run/systemd/journal holds a
hard link of journald's stream socket, and follows the socket when it is made again."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import pytest

from dynod.system import journal


def _listen(path: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.listen()
    return s


def _reaches(link: Path, server: socket.socket) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
        c.connect(str(link))
        conn, _ = server.accept()
        conn.close()
    return True


def test_links_the_socket_and_follows_a_new_one(tmp_path: Path) -> None:
    sock, links = tmp_path / "stdout", tmp_path / "links"
    first = _listen(sock)
    journal.link_stdout_socket(links, sock)
    assert sorted(p.name for p in links.iterdir()) == ["stdout"]
    assert (links / "stdout").stat().st_ino == sock.stat().st_ino
    assert _reaches(links / "stdout", first)
    # systemd-journald.socket started again: unlink, bind, a new inode.
    first.close()
    sock.unlink()
    second = _listen(sock)
    with pytest.raises(ConnectionRefusedError):
        _reaches(links / "stdout", second)
    journal.link_stdout_socket(links, sock)
    assert _reaches(links / "stdout", second)
    assert sorted(p.name for p in links.iterdir()) == ["stdout"]
    second.close()


def test_no_socket_is_a_warning_not_an_error(tmp_path: Path,
                                            caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        journal.link_stdout_socket(tmp_path / "links", tmp_path / "missing")
    assert (tmp_path / "links").is_dir()  # a dyno's bind source exists all the same
    assert "cannot reconnect to journald" in caplog.text
