"""A thread-per-connection web process with its threads capped: ``capped_app.py PORT N``.

Python's http.server, HTTP/1.1 with keep-alive, but at most N connections served at
once (the others wait in the listen backlog), as WEBrick with a thread cap: an idle
kept-alive connection holds one of the N (gunicorn's sync workers, also one request at a
time, close each connection instead). Answers ``ok``.
"""

from __future__ import annotations

import http.server
import socketserver
import sys
import threading


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class Capped(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True

    def __init__(self, port: int, threads: int) -> None:
        self.slots = threading.BoundedSemaphore(threads)
        super().__init__(("", port), Handler)

    def process_request(self, request: object, client_address: object) -> None:
        self.slots.acquire()  # no thread for this connection until one is free
        super().process_request(request, client_address)  # type: ignore[arg-type]

    def process_request_thread(self, request: object, client_address: object) -> None:
        try:
            super().process_request_thread(request, client_address)  # type: ignore[arg-type]
        finally:
            self.slots.release()


if __name__ == "__main__":
    Capped(int(sys.argv[1]), int(sys.argv[2])).serve_forever()
