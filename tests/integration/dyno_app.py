"""A test app that runs inside a dyno (copied into the slug as /app/server.py).

Serves ``/`` (hello), ``/probe`` (what the dyno sees, as JSON), ``/write`` (writes to
/app and /tmp) and ``/hog?mb=N`` (allocates N MiB and holds it). Standard library only:
it runs on the host's /usr, bound read-only into the dyno.
"""

from __future__ import annotations

import ctypes
import http.server
import json
import os
import socket
import socketserver
import sys
import urllib.parse
from pathlib import Path
from typing import Any

HELD: list[bytearray] = []


def _status() -> dict[str, str]:
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        out[key] = value.strip()
    return out


def _try_connect(host: str, port: int) -> str:
    s = socket.socket()
    s.settimeout(1.0)
    try:
        s.connect((host, port))
    except OSError as exc:
        return f"blocked: {exc}"
    finally:
        s.close()
    return "open"


def _try_mount() -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(b"none", b"/tmp", b"tmpfs", 0, None) == 0:
        return 0
    return ctypes.get_errno()


def _try_load_module() -> int:
    """finit_module(-1, "", 0): EPERM when module loading is denied, EBADF if allowed."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(313, -1, b"", 0) == 0:  # x86_64 finit_module
        return 0
    return ctypes.get_errno()


def probe(query: dict[str, list[str]]) -> dict[str, Any]:
    status = _status()
    result: dict[str, Any] = {
        "pid": os.getpid(),
        "pids": sorted(int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()),
        "init": Path("/proc/1/cmdline").read_bytes().split(b"\0")[0].decode(),
        "uid": os.getuid(),
        "caps": {k: status[k] for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")},
        "no_new_privs": status.get("NoNewPrivs"),
        "seccomp": status.get("Seccomp"),
        "env": {k: os.environ.get(k) for k in ("PORT", "DYNO", "HOME", "FROM_PROFILE_D")},
        "cwd": str(Path.cwd()),
        "app_marker": Path("/app/marker").exists(),
        "tmp_marker": Path("/tmp/marker").exists(),
        "mount_errno": _try_mount(),
        "module_errno": _try_load_module(),
    }
    for path in query.get("exists", []):
        result.setdefault("exists", {})[path] = Path(path).exists()
    for target in query.get("connect", []):
        host, _, port = target.rpartition(":")
        result.setdefault("connect", {})[target] = _try_connect(host, int(port))
    return result


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        if url.path == "/":
            body = b"hello from dyno\n"
        elif url.path == "/probe":
            body = json.dumps(probe(query)).encode()
        elif url.path == "/write":
            Path("/app/marker").write_text("x")
            Path("/tmp/marker").write_text("x")
            body = b"written\n"
        elif url.path == "/hog":
            mb = int(query.get("mb", ["1"])[0])
            for _ in range(mb):
                HELD.append(bytearray(b"\1" * (1 << 20)))
            body = f"holding {len(HELD)} MiB\n".encode()
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        sys.stdout.write("request " + (format % args) + "\n")
        sys.stdout.flush()


class Server(socketserver.TCPServer):
    allow_reuse_address = True


if __name__ == "__main__":
    port = int(os.environ["PORT"])
    print(f"listening on {port}", flush=True)
    Server(("0.0.0.0", port), Handler).serve_forever()  # noqa: S104 - a dyno listens on all
