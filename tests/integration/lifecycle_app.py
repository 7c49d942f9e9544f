"""A web process for lifecycle tests: ``lifecycle_app.py PORT``.

Answers every path but /missing (404) with ``<version> <dyno>`` (the version from
/app/VERSION), HTTP/1.1 with keep-alive; requests other than / are logged, and
/burst/N/TAG logs N lines more (``burst TAG i`` and padding, ~200 bytes). Exits 1 at
boot when /app/CRASH exists (a release that never comes up).
It does NOT handle SIGTERM: Python's default kills it at once, with whatever requests it
has in flight, so only the router's draining keeps rollouts clean. Standard library only.
"""

from __future__ import annotations

import http.server
import os
import sys
from pathlib import Path


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    body = b""

    def do_GET(self) -> None:
        if self.path != "/":
            print(f"GET {self.path} {self.headers.get('User-Agent', '')}", flush=True)
        if self.path.startswith("/burst/"):
            _, _, count, tag = self.path.split("/", 3)
            pad = "x" * 180
            for i in range(int(count)):
                print(f"burst {tag} {i} {pad}", flush=True)
        if self.path == "/missing":
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    if Path("/app/CRASH").exists():
        print("crashing at boot, as asked", flush=True)
        sys.exit(1)
    version = Path("/app/VERSION").read_text().strip()
    Handler.body = f"{version} {os.environ.get('DYNO', '?')}\n".encode()
    server = http.server.ThreadingHTTPServer(("0.0.0.0", int(sys.argv[1])), Handler)  # noqa: S104
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
