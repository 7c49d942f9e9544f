"""A web process for router tests: ``echo_app.py PORT [NAME]``.

``/`` answers JSON ``{"dyno": NAME, "headers": {...}, "path": ...}``; ``/slow?s=N`` waits
N seconds first; every request is also printed (one line, to the dyno's log). Standard
library only, HTTP/1.1 with keep-alive. A well-behaved Heroku app: on SIGTERM it stops
listening, finishes the requests it has, then exits.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import os
import signal
import sys
import threading
import time
import urllib.parse


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    name = os.environ.get("DYNO", "?")
    busy = 0
    lock = threading.Lock()

    def do_GET(self) -> None:
        with Handler.lock:
            Handler.busy += 1
        try:
            self._get()
        finally:
            with Handler.lock:
                Handler.busy -= 1

    def _get(self) -> None:
        if self.headers.get("Upgrade", "").lower() == "websocket":
            self._tunnel()
            return
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        if url.path == "/slow":
            time.sleep(float(query.get("s", ["40"])[0]))
        body = json.dumps({"dyno": self.name, "path": self.path,
                           "peer": self.client_address[1],
                           "headers": {k.lower(): v for k, v in self.headers.items()}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _tunnel(self) -> None:
        """Switch protocols, then echo raw bytes (enough to show the router passes an
        upgraded connection through; no WebSocket framing)."""
        key = self.headers.get("Sec-WebSocket-Key", "")
        accept = hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode())  # noqa: S324 (RFC 6455)
        self.send_response(101)
        self.send_header("Sec-WebSocket-Accept", base64.b64encode(accept.digest()).decode())
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.end_headers()
        self.wfile.flush()
        while data := self.connection.recv(65536):
            self.connection.sendall(data)
        self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        # Not "/", which load tests hammer: a dyno's stdout blocks while journald is
        # busy, and a busy sandbox then stalls requests for seconds.
        if self.path != "/":
            print(f"{self.command} {self.path} from {self.client_address[0]}", flush=True)


def main() -> None:
    port = int(sys.argv[1])
    if len(sys.argv) > 2:
        Handler.name = sys.argv[2]
    server = http.server.ThreadingHTTPServer(("0.0.0.0", port), Handler)  # noqa: S104
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    server.serve_forever()
    server.server_close()
    while Handler.busy:
        time.sleep(0.01)
    print("SIGTERM: stopped listening and finished every request", flush=True)


if __name__ == "__main__":
    main()
