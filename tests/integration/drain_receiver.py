"""Runs inside a sandbox machine: the far ends of log drains, and a latency probe.

    drain_receiver.py https PORT CERT KEY OUT   Heroku-style HTTPS drain receiver: each
                        frame of each POST as a JSON line {time, host, app, proc, msg,
                        frame_id, count} appended to OUT
    drain_receiver.py blackhole PORT            accepts TCP connections, never reads
    drain_receiver.py p50 HOST N                N requests through the router; JSON
                        {"p50_ms": ...}
"""

from __future__ import annotations

import http.client
import http.server
import json
import socket
import ssl
import statistics
import sys
import threading
import time
from pathlib import Path


def parse_frames(body: bytes) -> list[bytes]:
    """Octet-counted frames: ``LEN SP MSG`` one after another."""
    out, i = [], 0
    while i < len(body):
        space = body.index(b" ", i)
        n = int(body[i:space])
        out.append(body[space + 1:space + 1 + n])
        i = space + 1 + n
    return out


def https(port: int, cert: str, key: str, out: str) -> None:
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            frames = parse_frames(body)
            ok = (self.headers["Content-Type"] == "application/logplex-1"
                  and int(self.headers["Logplex-Msg-Count"]) == len(frames))
            rows = []
            for f in frames:
                _pri, stamp, host, app, proc, _id, _sd, msg = f.decode().split(" ", 7)
                rows.append({"time": stamp, "host": host, "app": app, "proc": proc,
                             "msg": msg.removesuffix("\n"), "ok": ok,
                             "token": self.headers["Logplex-Drain-Token"],
                             "frame_id": self.headers["Logplex-Frame-Id"]})
            with lock, Path(out).open("a") as log:
                log.writelines(json.dumps(r) + "\n" for r in rows)
            self.send_response(200 if ok else 400)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    server.serve_forever()


def blackhole(port: int) -> None:
    held = []
    with socket.create_server(("127.0.0.1", port)) as s:
        while True:
            conn, _ = s.accept()
            held.append(conn)  # never read: the sender's buffers fill, then it blocks


def p50(host: str, n: int) -> None:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        conn = http.client.HTTPConnection("127.0.0.1", 80, timeout=30)
        conn.request("GET", "/", headers={"Host": host})
        conn.getresponse().read()
        conn.close()
        times.append(time.perf_counter() - start)
    print(json.dumps({"p50_ms": statistics.median(times) * 1000}))


def main() -> None:
    mode = sys.argv[1]
    if mode == "https":
        https(int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5])
    elif mode == "blackhole":
        blackhole(int(sys.argv[2]))
    elif mode == "p50":
        p50(sys.argv[2], int(sys.argv[3]))


if __name__ == "__main__":
    main()
