"""The cluster tests' web process: answers ``DYNO ADDRESS`` (its dyno's name and the
address it was reached at, which names its machine's dyno pool). Standard library only."""

import http.server
import os


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = f"{os.environ['DYNO']} {self.connection.getsockname()[0]}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


if __name__ == "__main__":
    http.server.ThreadingHTTPServer(("", int(os.environ["PORT"])), Handler).serve_forever()
