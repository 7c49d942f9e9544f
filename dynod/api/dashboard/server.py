"""The dashboard's HTTPS server: cheroot (CherryPy's WSGI server, Debian's
python3-cheroot) in a thread of dynod, with its built-in TLS adapter.

cheroot rather than werkzeug's server (which Flask's own docs call a development
server) or waitress (no TLS of its own): a small, production WSGI server with a
thread pool and TLS, packaged in Debian.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from cheroot import wsgi
from cheroot.ssl.builtin import BuiltinSSLAdapter

from dynod.api.daemon import Daemon
from dynod.api.dashboard.app import make_app
from dynod.errors import Unavailable
from dynod.settings import listen_address

log = logging.getLogger(__name__)

# A page or a log poll is quick; a few threads serve a team.
THREADS = 8


@dataclass
class DashboardServer:
    server: wsgi.Server
    thread: threading.Thread = field(init=False)

    @property
    def port(self) -> int:
        return int(self.server.bind_addr[1])

    def stop(self) -> None:
        self.server.stop()
        self.thread.join(timeout=10)


def _adapter(cert_pem: str, key_pem: str) -> BuiltinSSLAdapter:
    """cheroot reads the certificate from files: they exist (0600, in a 0700 directory)
    only while the adapter loads them; the key stays in memory after."""
    with tempfile.TemporaryDirectory(prefix="dynod-dashboard-") as tmp:
        cert, key = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
        for path, pem in ((cert, cert_pem), (key, key_pem)):
            path.touch(mode=0o600)
            path.write_text(pem)
        return BuiltinSSLAdapter(str(cert), str(key))


def start_dashboard(daemon: Daemon, listen: str, cert_pem: str,
                    key_pem: str) -> DashboardServer:
    """Serve the dashboard on ``listen`` (HOST:PORT, port 0 for any) over TLS with the
    certificate chain and key given. Raises Unavailable when it cannot listen."""
    server = wsgi.Server(listen_address(listen), make_app(daemon), numthreads=THREADS,
                         server_name="dynod")
    server.ssl_adapter = _adapter(cert_pem, key_pem)
    try:
        server.prepare()
    except OSError as exc:
        raise Unavailable(f"dashboard_listen {listen}: cannot listen ({exc}); free the "
                          "address or change dashboard_listen in dynod.toml") from exc
    running = DashboardServer(server)
    running.thread = threading.Thread(target=server.serve, name="dashboard", daemon=True)
    running.thread.start()
    log.info("dashboard on https://%s:%d/", *server.bind_addr[:2])
    return running
