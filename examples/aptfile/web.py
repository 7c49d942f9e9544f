"""A web process that answers with jq's work: jq (and its libraries, libjq and libonig)
come from the Aptfile, not from the stack."""
import http.server
import os
import subprocess


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        done = subprocess.run(["jq", "-c", "[.[] | . * .] | add"], input="[1, 2, 3, 4]",
                              capture_output=True, text=True, check=False)
        where = subprocess.run(["sh", "-c", "command -v jq"], capture_output=True,
                               text=True, check=False).stdout.strip()
        body = f"jq at {where} says the sum of squares is {done.stdout.strip()}\n".encode()
        self.send_response(200 if done.returncode == 0 else 500)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


http.server.ThreadingHTTPServer(("", int(os.environ["PORT"])), Handler).serve_forever()
