"""Isolation probes run from inside a dyno, a one-off dyno or a build of one app at
another app's resources (test_isolation_probes.py). Standard library only: it runs on
the stack's python3.

``python3 probe_app.py serve NAME``: a web server on $PORT answering ``/`` with
``hello from NAME`` and ``/probe`` with the probes' results (JSON).
``python3 probe_app.py probe [ENV_DIR]``: the probes' results on one line,
``PROBE-RESULT {json}``.

The probes come from the PROBE_TARGETS config var (JSON; from ENV_DIR in a build), so
nothing naming the other app is on any command line. Each result is
``{"kind": ..., "reached": bool, "detail": str}``; ``reached`` true for a ``deny``
probe is a breach.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import sys
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

TIMEOUT = 3.0


def tcp(target: str) -> tuple[bool, str]:
    host, _, port = target.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=TIMEOUT):
            return True, "connected"
    except OSError as exc:
        return False, str(exc) or type(exc).__name__


def unix(path: str) -> tuple[bool, str]:
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(TIMEOUT)
    try:
        s.connect(path)
        return True, "connected"
    except OSError as exc:
        return False, str(exc) or type(exc).__name__
    finally:
        s.close()


def path(target: str) -> tuple[bool, str]:
    """Reached when the path can be stat'ed at all (its mere existence names the other
    app's files), and listed or read when it is a directory or a file."""
    p = Path(target)
    try:
        st = p.stat()
    except OSError as exc:
        return False, str(exc)
    try:
        if p.is_dir():
            return True, f"listed: {sorted(c.name for c in p.iterdir())[:5]}"
        with p.open("rb") as f:
            return True, f"read {len(f.read(64))} bytes"
    except OSError as exc:
        return True, f"exists (mode {st.st_mode:o}), then {exc}"


def glob(patterns: str) -> tuple[bool, str]:
    """``PATTERN[,PATTERN...]``: any path matching one of them."""
    found = [str(p) for pat in patterns.split(",") for p in Path("/").glob(pat.lstrip("/"))]
    return bool(found), f"found {found[:3]}" if found else "nothing matches"


def processes(spec: str) -> tuple[bool, str]:
    """``UID:MARKER``: any process of that uid, or with MARKER in its command line."""
    uid, _, marker = spec.partition(":")
    seen = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            owner = entry.stat().st_uid
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(owner) == uid or marker in cmdline:
            seen.append(f"{entry.name} uid {owner}: {cmdline[:60]}")
    return bool(seen), "; ".join(seen) or "none visible"


def environ(name: str) -> tuple[bool, str]:
    """Any visible process's environment holding the variable ``name``."""
    needle = name.encode() + b"="
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = (entry / "environ").read_bytes()
        except OSError:
            continue
        if any(v.startswith(needle) for v in env.split(b"\0")):
            return True, f"read in /proc/{entry.name}/environ"
    return False, "in no readable /proc/*/environ"


def router(target: str) -> tuple[bool, str]:
    """``NAME``: GET https://NAME/ as an app would (curl resolves *.localhost to
    loopback itself; so does this), the body's first line."""
    try:
        host = socket.gethostbyname(target)
    except OSError:
        host = "127.0.0.1"
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((host, 443), timeout=TIMEOUT * 2) as raw, \
                ctx.wrap_socket(raw, server_hostname=target) as s:
            s.sendall(f"GET / HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := s.recv(4096):
                data += chunk
    except OSError as exc:
        return False, str(exc) or type(exc).__name__
    head, _, body = data.decode(errors="replace").partition("\r\n\r\n")
    status = head.split("\r\n")[0]
    return status.split(" ")[1:2] == ["200"], f"{status}: {body.strip()[:60]}"


KINDS = {"tcp": tcp, "unix": unix, "path": path, "glob": glob, "processes": processes,
         "environ": environ, "router": router}


def run_probes(probes: dict[str, list[str]]) -> dict[str, dict[str, Any]]:
    """``{name: [kind, target]}`` -> ``{name: {"reached": ..., "detail": ...}}``."""
    def one(item: tuple[str, list[str]]) -> tuple[str, dict[str, Any]]:
        name, (kind, target) = item
        reached, detail = KINDS[kind](target)
        return name, {"kind": kind, "reached": reached, "detail": detail}

    with ThreadPoolExecutor(max_workers=8) as pool:
        return dict(pool.map(one, probes.items()))


def targets(env_dir: str | None) -> dict[str, list[str]]:
    text = (Path(env_dir) / "PROBE_TARGETS").read_text() if env_dir else \
        os.environ["PROBE_TARGETS"]
    loaded: dict[str, list[str]] = json.loads(text)
    return loaded


class Handler(BaseHTTPRequestHandler):
    name = ""

    def do_GET(self) -> None:
        if self.path == "/probe":
            body = json.dumps(run_probes(targets(None))).encode()
        else:
            body = f"hello from {self.name}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def main(argv: list[str]) -> None:
    if argv[1] == "serve":
        Handler.name = argv[2]
        port = int(os.environ["PORT"])
        ThreadingHTTPServer(("0.0.0.0", port), Handler).serve_forever()  # noqa: S104
    else:
        results = run_probes(targets(argv[2] if len(argv) > 2 else None))
        print("PROBE-RESULT", json.dumps(results), flush=True)


if __name__ == "__main__":
    main(sys.argv)
