"""Runs inside a sandbox machine: HTTP clients against the router on 127.0.0.1:80.

    router_client.py count HOST N        N requests (new connection each); JSON counts
    router_client.py steady HOST STOPFILE  requests back to back until STOPFILE exists
    router_client.py upgrade HOST          Upgrade: websocket, then echo over the tunnel
    router_client.py tls-steady HOST CAFILE STOPFILE  HTTPS requests from 4 threads until
                                           STOPFILE exists; JSON counts and the serials seen
    router_client.py raw HEX               send these request bytes; print the response
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import sys
import threading
import time
from collections import Counter
from pathlib import Path


def one(host: str) -> tuple[int, str]:
    # 30 s, as the router's own H12: a request slowed by a busy host has not failed.
    conn = http.client.HTTPConnection("127.0.0.1", 80, timeout=30)
    try:
        conn.request("GET", "/", headers={"Host": host})
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    dyno = json.loads(body)["dyno"] if resp.status == 200 else ""
    return resp.status, dyno


def upgrade(host: str) -> None:
    """Print the status line, then what came back for two messages 2 s apart (kept open
    past any per-request timeout that would cut a tunnel)."""
    with socket.create_connection(("127.0.0.1", 80), timeout=10) as s:
        s.sendall(f"GET /ws HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\n"
                  "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                  "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(4096)
        print(head.split(b"\r\n", 1)[0].decode())
        for word in (b"ping", b"pong"):
            s.sendall(word)
            print(s.recv(4096).decode())
            time.sleep(2)


def tls_steady(host: str, cafile: str, stop: Path, threads: int = 4) -> None:
    ctx = ssl.create_default_context(cafile=cafile)
    serials: Counter[str] = Counter()
    failures: list[str] = []
    count = [0]
    lock = threading.Lock()

    def loop() -> None:
        while not stop.exists():
            try:
                status, serial = tls_one_sni(host, ctx)
            except (OSError, http.client.HTTPException, ValueError) as exc:
                with lock:
                    failures.append(f"{time.time():.3f} {exc!r}")
                continue
            with lock:
                count[0] += 1
                serials[serial] += 1
                if status != 200:
                    failures.append(f"{time.time():.3f} status {status}")

    workers = [threading.Thread(target=loop) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    print(json.dumps({"requests": count[0], "serials": serials, "failures": failures}))


def tls_one_sni(host: str, ctx: ssl.SSLContext) -> tuple[int, str]:
    """One HTTPS request on a new connection (a full handshake) to 127.0.0.1:443 with
    SNI and the name check for HOST: (status, the certificate's serial)."""
    with socket.create_connection(("127.0.0.1", 443), timeout=30) as raw, \
            ctx.wrap_socket(raw, server_hostname=host) as s:
        serial = str(s.getpeercert().get("serialNumber", ""))  # type: ignore[union-attr]
        s.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else 0
    return status, serial


def raw(request: bytes) -> None:
    """One request as given (bytes no HTTP library would send), the whole answer out."""
    with socket.create_connection(("127.0.0.1", 80), timeout=30) as s:
        s.sendall(request)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    sys.stdout.buffer.write(data)


def main() -> None:
    mode, host = sys.argv[1], sys.argv[2]
    if mode == "raw":
        raw(bytes.fromhex(host))
        return
    if mode == "upgrade":
        upgrade(host)
        return
    if mode == "tls-steady":
        tls_steady(host, sys.argv[3], Path(sys.argv[4]))
        return
    dynos: Counter[str] = Counter()
    failures: list[str] = []
    n = 0
    if mode == "count":
        todo = int(sys.argv[3])
        stop = None
    else:
        todo = 10**9
        stop = Path(sys.argv[3])
    while n < todo and not (stop is not None and stop.exists()):
        n += 1
        try:
            status, dyno = one(host)
        except (OSError, http.client.HTTPException, ValueError) as exc:
            failures.append(f"{time.time():.3f} {exc!r}")
            continue
        if status != 200:
            failures.append(f"{time.time():.3f} status {status}")
        else:
            dynos[dyno] += 1
    print(json.dumps({"requests": n, "dynos": dynos, "failures": failures}))


if __name__ == "__main__":
    main()
