"""The HTTP router: HAProxy (dynod-router.service), driven through its runtime API.

dynod renders ``haproxy.cfg`` (one backend per app, plus maps for host names, maintenance
mode and the reason an app has no dyno) into ``/run/dynod/router`` and starts the unit.
After that, web dynos come and go with ``add server`` / ``disable server`` /
``del server`` on the admin socket, and domains and maintenance with atomic map updates
(``prepare map`` / ``commit map``): scaling, restarts, deploys, domains and maintenance
never reload HAProxy. Only creating or deleting an app reloads it (a new backend
section), hitlessly: the master starts a new worker and the old one finishes its requests.

HAProxy logs one line per request, in a raw key format of ours, to a datagram socket
that dynod reads; :func:`router_line` turns it into Heroku's router line
(``at=info method=GET path="/" ... dyno=web.1 connect=0ms service=3ms status=200``), with
the H-code derived from HAProxy's termination state, and dynod writes it to the app's
stream in journald (``dynod[router]``). journald stays the only store; if dynod is
down, router lines are lost (HAProxy never blocks on logging).
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from dynod.control import formation
from dynod.errors import Unavailable
from dynod.router.protocol import Backend
from dynod.store.protocol import Store
from dynod.system import journal, processes

log = logging.getLogger(__name__)

UNIT = "dynod-router.service"

# Heroku's timeouts (http-routing, vegur defaults): 5 s to connect, 30 s to the first
# byte of the response (H12), then a rolling 55 s idle window either way (H15).
CONNECT_TIMEOUT = "5s"
FIRST_BYTE_TIMEOUT = "30s"
IDLE_TIMEOUT = "55s"
# Heroku: a request line longer than 8 KB is refused (H25 here).
MAX_REQUEST_LINE = 8192
LOG_MARK = "dynod-router1"
# Every server (dynamic ones get no default-server): a refused or failed connection marks
# the dyno down at once, so the retry goes to another (leastconn would pick the idle dead
# one again) until a TCP check finds it listening again. Up dynos are checked hourly only:
# a check's connect-and-reset shows as noise in many apps' logs.
SERVER_OPTIONS = ("weight 100 check inter 1h downinter 1s fall 2 rise 1 observe layer4 "
                  "error-limit 1 on-error mark-down")

# Heroku error codes the router reports (error-codes page); info-level ones are not
# errors of the app.
DESCRIPTIONS = {
    "H10": "App crashed",
    "H11": "Backlog too deep",
    "H12": "Request timeout",
    "H13": "Connection closed without response",
    "H14": "No web processes running",
    "H15": "Idle connection",
    "H17": "Poorly formatted HTTP response",
    "H18": "Server Request Interrupted",
    "H19": "Backend connection timeout",
    "H21": "Backend connection refused",
    "H25": "HTTP Restriction",
    "H27": "Client Request Interrupted",
    "H28": "Client Connection Idle",
    "H80": "Maintenance mode",
    "H99": "Platform error",
}
INFO_CODES = {"H27", "H80"}

# HAProxy's termination state (first two characters of %tsc) -> Heroku code.
TERMINATION_CODES = {
    "sH": "H12",  # server timeout before the response headers
    "sD": "H15",  # server idle during the body
    "cD": "H15",  # client idle during the body
    "sC": "H19",  # connect timeout (after the retries)
    "SC": "H21",  # connection refused (after the retries)
    "SH": "H13",  # the dyno closed before answering
    "SD": "H18",  # the dyno closed during the body
    "PH": "H17",  # malformed response
    "sQ": "H11",  # queued too long
    "CH": "H27", "CD": "H27", "CR": "H27", "CC": "H27",  # the client went away
    "cR": "H28",  # the client sent no complete request in time
    "PR": "H25",  # malformed or oversized request
}


@dataclass(frozen=True)
class RouterPaths:
    """Everything the router keeps, under one runtime directory (rebuilt at start)."""

    dir: Path

    @property
    def config(self) -> Path:
        return self.dir / "haproxy.cfg"

    @property
    def admin_socket(self) -> Path:
        return self.dir / "admin.sock"

    @property
    def log_socket(self) -> Path:
        return self.dir / "log.sock"

    @property
    def hosts_map(self) -> Path:
        return self.dir / "hosts.map"

    @property
    def maintenance_map(self) -> Path:
        return self.dir / "maintenance.map"

    @property
    def empty_map(self) -> Path:
        return self.dir / "empty.map"

    @property
    def crt_list(self) -> Path:
        return self.dir / "crt-list"

    def page(self, name: str) -> Path:
        return self.dir / f"{name}.html"


# ---- pure: names, configuration, maps

def backend_name(app: str) -> str:
    return f"app_{app}"


def server_name(b: Backend) -> str:
    """``web.1_10.213.0.5_5000``: unique per dyno even when an old and a new ``web.1``
    are both up during a rollout; the dyno name is recovered from it for log lines."""
    return f"{b.dyno}_{b.ip}_{b.port}"


def dyno_of(server: str) -> str:
    return server.split("_", 1)[0]


def render_config(paths: RouterPaths, routes: Mapping[str, Sequence[Backend]], *,
                  http_port: int = 80, https_port: int = 443, tls: bool = False) -> str:
    """haproxy.cfg for these apps and their current backends (written as static servers,
    so a reload keeps them; later changes go through the runtime API)."""
    p = paths
    fmt = " ".join([
        LOG_MARK, "%{+Q}[var(txn.app)]", "%{+Q}[var(txn.code)]", "%{+Q}HM", "%{+Q}HU",
        "%{+Q}[var(txn.host)]", "%{+Q}[var(txn.rid)]", "%{+Q}[var(txn.fwd)]", "%{+Q}s",
        "%Tc", "%Tw", "%TR", "%Ta", "%ST", "%B", "%tsc", "%{+Q}[var(txn.proto)]",
    ])
    lines = [
        "# Written by dynod; changes are lost. Servers change through the admin socket.",
        "global",
        f"    stats socket {p.admin_socket} mode 600 level admin",
        "    stats timeout 30s",
        f"    log unix@{p.log_socket} len 16384 format raw local0",
        "    tune.http.maxhdr 1000",
        "",
        "defaults",
        "    mode http",
        "    log global",
        f'    log-format "{fmt}"',
        # Like Heroku's router, a new connection to the dyno per request, closed after
        # the response (the client side stays kept-alive). Pooling idle dyno connections
        # grew hundreds of them, which a thread-per-connection app cannot serve (Python's
        # http.server stalled requests 30 s, H12), and their resets when purged showed as
        # tracebacks in apps' logs.
        "    option http-server-close",
        "    option dontlognull",
        f"    timeout connect {CONNECT_TIMEOUT}",
        # HAProxy 2.6 has one server inactivity timeout (no http-response set-timeout):
        # 30 s to the first byte as on Heroku, but also 30 s (not 55) idle in a body.
        f"    timeout server {FIRST_BYTE_TIMEOUT}",
        f"    timeout client {IDLE_TIMEOUT}",
        f"    timeout tunnel {IDLE_TIMEOUT}",
        f"    timeout http-request {IDLE_TIMEOUT}",
        f"    timeout http-keep-alive {IDLE_TIMEOUT}",
        "    timeout queue 30s",
        # Heroku retries a refused or timed-out connection on other dynos, 10 attempts.
        "    retries 10",
        "    option redispatch 1",
        # Also retry when a dyno closed an idle kept-alive connection just as a request
        # went out (it is stopping): the request never reached the app.
        "    retry-on conn-failure empty-response",
        # Heroku answers its own errors with 503 and its application error page.
        *(f"    errorfile {code} {p.dir / 'error.http'}" for code in (502, 503, 504)),
        "",
        "frontend http",
        f"    bind :{http_port}",
        f"    bind :::{http_port} v6only",
    ]
    if tls:
        lines += [f"    bind {addr}{https_port}{v6} ssl crt-list {p.crt_list} alpn http/1.1"
                  for addr, v6 in ((":", ""), (":::", " v6only"))]
    lines += [
        "    http-request set-var(txn.proto) ssl_fc,iif(https,http)",
        "    http-request set-var(txn.host) req.hdr(host),lower,field(1,:)",
        f"    http-request set-var(txn.app) var(txn.host),map({p.hosts_map})",
        # Heroku: keep a valid X-Request-Id from the client, else a new UUID.
        "    http-request set-header X-Request-Id %[uuid] unless "
        "{ req.hdr(x-request-id) -m reg ^[A-Za-z0-9+=/-]{20,200}$ }",
        "    http-request set-var(txn.rid) req.hdr(x-request-id)",
        '    http-request set-header X-Forwarded-For "%[req.fhdr(x-forwarded-for)], %[src]" '
        "if { req.fhdr(x-forwarded-for) -m found }",
        "    http-request set-header X-Forwarded-For %[src] "
        "unless { req.fhdr(x-forwarded-for) -m found }",
        "    http-request set-var(txn.fwd) req.fhdr(x-forwarded-for)",
        "    http-request set-header X-Forwarded-Proto %[var(txn.proto)]",
        "    http-request set-header X-Forwarded-Port %[dst_port]",
        "    http-request set-header X-Request-Start %[date(0,ms)]",
        '    http-request set-header Via "%[req.fhdr(via)], 1.1 dynod" '
        "if { req.fhdr(via) -m found }",
        '    http-request set-header Via "1.1 dynod" unless { req.fhdr(via) -m found }',
        '    http-response set-header Via "%[res.fhdr(via)], 1.1 dynod" '
        "if { res.fhdr(via) -m found }",
        '    http-response set-header Via "1.1 dynod" unless { res.fhdr(via) -m found }',
        f"    http-request set-var(txn.code) str(H25) if {{ url_len gt {MAX_REQUEST_LINE} }}",
        "    http-request return status 414 content-type text/plain "
        'string "Request-URI Too Long" if { var(txn.code) -m str H25 }',
        "    http-request return status 404 content-type \"text/html; charset=utf-8\" "
        f"file {p.page('no-such-app')} unless {{ var(txn.app) -m found }}",
        f"    http-request set-var(txn.code) str(H80) if {{ var(txn.app),map({p.maintenance_map}) "
        "-m found }",
        "    http-request return status 503 content-type \"text/html; charset=utf-8\" "
        f"file {p.page('maintenance')} if {{ var(txn.code) -m str H80 }}",
        # A dyno may have acted on a request it closed on without answering: only
        # idempotent ones are sent again (the others get H13, as on Heroku).
        "    http-request disable-l7-retry unless { method GET HEAD OPTIONS PUT DELETE }",
        "    use_backend app_%[var(txn.app)]",
        "    default_backend no_such_app",
        "",
        "backend no_such_app",
        "    http-request return status 404 content-type \"text/html; charset=utf-8\" "
        f"file {p.page('no-such-app')}",
    ]
    for app in sorted(routes):
        lines += [
            "",
            f"backend {backend_name(app)}",
            # Least busy (Heroku: random). Not random(): in HAProxy 2.6 servers added at
            # run time to a random() backend got no traffic (2 of 10 took it all).
            "    balance leastconn",
            # No up web dyno: H14 (web=0) or H10 (crashed), as the empty map says.
            f"    http-request set-var(txn.code) var(txn.app),map({p.empty_map},H10) "
            "if { nbsrv eq 0 }",
            "    http-request return status 503 content-type \"text/html; charset=utf-8\" "
            f"file {p.page('application-error')} if {{ nbsrv eq 0 }}",
        ]
        lines += [f"    server {server_name(b)} {b.ip}:{b.port} {SERVER_OPTIONS}"
                  for b in sorted(set(routes[app]))]
    return "\n".join(lines) + "\n"


def _shape(config: str) -> list[str]:
    """A configuration without its server lines."""
    return [line for line in config.splitlines() if not line.startswith("    server ")]


def render_map(entries: Mapping[str, str]) -> str:
    return "".join(f"{k} {v}\n" for k, v in sorted(entries.items()))


_PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{title}</title></head>
<body><h1>{title}</h1><p>{text}</p></body></html>
"""
PAGES = {
    "application-error": _PAGE.format(
        title="Application Error",
        text="An error occurred in the application and your page could not be served. "
             "If you are the application owner, check your logs for details: "
             "<code>dynoctl logs --tail</code>"),
    "maintenance": _PAGE.format(
        title="Offline for Maintenance",
        text="This app is undergoing maintenance right now. Please check back later."),
    "no-such-app": _PAGE.format(
        title="No such app",
        text="There is no app configured at that hostname."),
}


def error_response() -> bytes:
    """HAProxy's own 502/503/504 become Heroku's 503 application error."""
    body = PAGES["application-error"].encode()
    head = ("HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/html; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nCache-Control: no-cache, no-store\r\n"
            "Connection: close\r\n\r\n")
    return head.encode() + body


# ---- pure: log lines

_TOKEN = re.compile(r'"((?:[^"\\]|\\.)*)"|(\S+)')


@dataclass(frozen=True)
class RouterLine:
    app: str
    message: str
    error: bool


def _field(value: str) -> str:
    return "" if value == "-" else value


def router_line(raw: str) -> RouterLine | None:
    """Heroku's router line for one raw HAProxy log line; None for other lines (server
    state changes, requests for unknown hosts)."""
    tokens = [q if q or not bare else bare for q, bare in _TOKEN.findall(raw.strip())]
    if len(tokens) != 17 or tokens[0] != LOG_MARK:
        return None
    (_, app, code, method, path, host, rid, fwd, server, tc, tw, tr, ta, status, nbytes,
     tsc, proto) = (_field(t) for t in tokens)
    if not app:
        return None
    if not code:
        code = TERMINATION_CODES.get(tsc[:2], "")
    if not code and status in ("502", "503", "504"):
        # The router answered with an error for a reason not mapped above.
        log.warning("router: unmapped termination state %s: %s", tsc, raw.strip())
        code = "H99"
    dyno = "" if server in ("", "<NOSRV>") else dyno_of(server)
    connect = service = ""
    if dyno:
        c, w, r, a = (max(int(x), 0) if x.lstrip("-").isdigit() else 0
                      for x in (tc, tw, tr, ta))
        connect = f"{c}ms"
        service = f"{max(a - c - w - r, 0)}ms"
    if code and code not in INFO_CODES and status in ("502", "503", "504"):
        status = "503"
    fields = [f"method={method}", f'path="{path}"', f"host={host}", f"request_id={rid}",
              f'fwd="{fwd}"', f"dyno={dyno}", f"connect={connect}", f"service={service}",
              f"status={status}", f"bytes={nbytes if dyno else ''}", f"protocol={proto}"]
    if code:
        at = "info" if code in INFO_CODES else "error"
        head = [f"at={at}", f"code={code}", f'desc="{DESCRIPTIONS.get(code, "")}"']
    else:
        at, head = "info", ["at=info"]
    return RouterLine(app, " ".join(head + fields), at == "error")


# ---- the runtime API

class AdminSocket:
    """One command per connection on HAProxy's admin (stats) socket."""

    def __init__(self, path: Path, timeout: float = 5.0) -> None:
        self.path = path
        self.timeout = timeout

    def __call__(self, command: str) -> str:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(self.timeout)
                s.connect(str(self.path))
                s.sendall(command.encode() + b"\n")
                chunks = []
                while chunk := s.recv(65536):
                    chunks.append(chunk)
        except OSError as exc:
            raise Unavailable(f"router: admin socket {self.path}: {exc}; see "
                              f"`systemctl status {UNIT}`") from exc
        return b"".join(chunks).decode("utf-8", "replace")


@dataclass(frozen=True)
class LiveServer:
    name: str
    ip: str
    port: int
    maintenance: bool


def parse_servers_state(text: str) -> dict[str, list[LiveServer]]:
    """``show servers state`` -> servers by backend name."""
    out: dict[str, list[LiveServer]] = {}
    for line in text.splitlines():
        cols = line.split()
        if len(cols) < 19 or not cols[0].isdigit():
            continue
        admin = int(cols[6])
        out.setdefault(cols[1], []).append(
            LiveServer(cols[3], cols[4], int(cols[18]), maintenance=bool(admin & 0x1)))
    return out


def parse_server_stat(text: str, backend: str, server: str) -> tuple[str, int] | None:
    """``show stat`` CSV -> (status, scur + qcur) of one server, None if absent."""
    head: list[str] = []
    for line in text.splitlines():
        if line.startswith("# "):
            head = line[2:].split(",")
            continue
        cols = line.split(",")
        if not head or len(cols) < len(head) or cols[0] != backend or cols[1] != server:
            continue
        row = dict(zip(head, cols, strict=False))
        busy = sum(int(row.get(k) or 0) for k in ("scur", "qcur"))
        return row.get("status", ""), busy
    return None


Systemctl = Callable[[Sequence[str]], str]


def _systemctl(argv: Sequence[str]) -> str:
    return processes.output(["systemctl", *argv], timeout=60)


class HaproxyRouter:
    """:class:`dynod.router.protocol.Router` over HAProxy; also keeps domains and maintenance
    mode (from the store) in HAProxy's maps. Thread-safe."""

    def __init__(self, store: Store, runtime_dir: Path, platform_domain: str, *,
                 state_dir: Path | None = None, http_port: int = 80, https_port: int = 443,
                 systemctl: Systemctl = _systemctl) -> None:
        self.store = store
        self.paths = RouterPaths(runtime_dir / "router")
        self.platform_domain = platform_domain
        self.certs_dir = (state_dir or Path("/var/lib/dynod")) / "certs"
        self.http_port = http_port
        self.https_port = https_port
        self.systemctl = systemctl
        self.admin = AdminSocket(self.paths.admin_socket)
        self._lock = threading.RLock()
        self._backends: dict[str, list[Backend]] = {}
        self._apps: set[str] = set()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._log_sock: socket.socket | None = None

    # -- lifecycle

    def start(self) -> threading.Thread:
        """Adopt what a running dynod-router.service routes, then start (or reconfigure)
        it for every app in a thread, which is returned: dynod starts its reconciler and
        API meanwhile (HAProxy takes ~150 ms to come up) and joins it before READY. Calls
        made meanwhile wait for it (the lock). If HAProxy cannot start, the error is
        logged and the tend loop retries."""
        self.paths.dir.mkdir(mode=0o755, parents=True, exist_ok=True)
        self._open_log_socket()
        with self._lock:
            # Adopt: the servers HAProxy routes to now are the truth until reconcile
            # says otherwise. (Not running: the admin socket does not answer.)
            with contextlib.suppress(Unavailable):
                for be, servers in parse_servers_state(self.admin("show servers state")).items():
                    if be.startswith("app_"):
                        self._backends[be[4:]] = [Backend(dyno_of(s.name), s.ip, s.port)
                                                  for s in servers if not s.maintenance]
            self._write_static_files()
        for target, name in ((self._first_sync, "router-start"), (self._read_logs, "router-log"),
                             (self._tend, "router-tend")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        return self._threads[-3]

    def _first_sync(self) -> None:
        with self._lock:
            try:
                self._sync_config()
            except Unavailable as exc:
                # dynod serves its API without a router; the tend loop retries.
                log.error("%s", exc.message)

    def stop(self) -> None:
        """Stop reading logs; the router itself keeps running (like dynos do)."""
        self._stop.set()
        if self._log_sock is not None:
            self._log_sock.close()
        for t in self._threads:
            t.join(timeout=2)

    def _active(self) -> bool:
        try:
            return self.systemctl(["is-active", "--quiet", UNIT]) is not None
        except processes.CommandFailed:
            return False

    # -- the Router protocol

    def set_backends(self, app: str, backends: list[Backend]) -> None:
        with self._lock:
            self._backends[app] = sorted(set(backends))
            if app not in self._apps:
                self._sync_config()
            else:
                self._apply(app)
            self._sync_empty()

    def remove_app(self, app: str) -> None:
        with self._lock:
            self._backends.pop(app, None)
            self._sync_config()

    def server_status(self, app: str, backend: Backend) -> tuple[str, int] | None:
        """HAProxy's view of one server: (status, requests in flight or queued), None
        when it has no such server. For reconcile's rollouts (issue 7)."""
        be = backend_name(app)
        out = self.admin(f"show stat {be} 4 -1")
        return parse_server_stat(out, be, server_name(backend))

    def ready(self, app: str, backend: Backend) -> bool:
        """The server takes requests (UP), so an old one can leave."""
        found = self.server_status(app, backend)
        return found is not None and found[0].startswith("UP")

    def in_flight(self, app: str, backend: Backend) -> int:
        """Requests the server is busy with (0 once it is gone), for draining."""
        found = self.server_status(app, backend)
        return 0 if found is None else found[1]

    # -- domains, maintenance, certificates

    def refresh(self) -> None:
        """Catch up with the store: apps (reload if the set changed), host names and
        maintenance mode (maps, no reload). Called after such changes and periodically."""
        with self._lock:
            self._sync_config()
            self._sync_maps()

    # -- internals

    def _desired_apps(self) -> set[str]:
        with self.store.read() as tx:
            return {a.name for a in tx.apps()}

    def _certs(self) -> list[Path]:
        return sorted(self.certs_dir.glob("*.pem")) if self.certs_dir.is_dir() else []

    def _write(self, path: Path, text: str | bytes) -> bool:
        """Atomically replace ``path``; True if its content changed."""
        data = text.encode() if isinstance(text, str) else text
        with contextlib.suppress(FileNotFoundError):
            if path.read_bytes() == data:
                return False
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
        return True

    def _write_static_files(self) -> None:
        for name, html in PAGES.items():
            self._write(self.paths.page(name), html)
        self._write(self.paths.dir / "error.http", error_response())

    def _map_entries(self, apps: Iterable[str]) -> tuple[dict[str, str], dict[str, str],
                                                         dict[str, str]]:
        apps = set(apps)
        hosts = {f"{a}.{self.platform_domain}": a for a in apps}
        with self.store.read() as tx:
            hosts.update({d.hostname: d.app for d in tx.domains(None) if d.app in apps})
            maint = {a: "1" for a in apps if tx.maintenance(a)}
        empty = {a: self._empty_code(a) for a in apps if not self._backends.get(a)}
        return hosts, maint, empty

    def _empty_code(self, app: str) -> str:
        """H14 when web is scaled to 0 (or not declared), H10 when web dynos should be
        running but none is up (crashed)."""
        try:
            web = [p for p in formation.get_formation(self.store, app) if p.type == "web"]
        except Exception:
            return "H14"
        return "H10" if web and web[0].quantity > 0 else "H14"

    def _sync_config(self) -> None:
        apps = self._desired_apps() | {a for a, b in self._backends.items() if b}
        for gone in set(self._backends) - apps:
            del self._backends[gone]
        hosts, maint, empty = self._map_entries(apps)
        self._write(self.paths.hosts_map, render_map(hosts))
        self._write(self.paths.maintenance_map, render_map(maint))
        self._write(self.paths.empty_map, render_map(empty))
        certs = self._certs()
        # HAProxy reads the crt-list at load only: a new or removed cert reloads.
        certs_changed = self._write(self.paths.crt_list, "".join(f"{c}\n" for c in certs))
        config = render_config(self.paths, {a: self._backends.get(a, []) for a in apps},
                               http_port=self.http_port, https_port=self.https_port,
                               tls=bool(certs))
        # Servers change at run time; only a change of anything else (apps, TLS) is
        # worth a reload. The file is rewritten only then, with the servers of the moment.
        try:
            shape_changed = _shape(self.paths.config.read_text()) != _shape(config)
        except FileNotFoundError:
            shape_changed = True
        shape_changed = shape_changed or certs_changed
        if shape_changed:
            self._write(self.paths.config, config)
        if not self._active():
            self._write(self.paths.config, config)
            self._unit("start")
            self._wait_for_backends(apps)
        elif shape_changed:
            self._unit("reload")
            self._wait_for_backends(apps)
        self._apps = apps
        # A reload starts from the file; servers added meanwhile are applied again.
        for app in apps:
            self._apply(app)
        self._sync_maps()

    def _unit(self, verb: str) -> None:
        try:
            self.systemctl([verb, UNIT])
        except processes.CommandFailed as exc:
            raise Unavailable(f"router: systemctl {verb} {UNIT} failed: {exc}; see "
                              f"`journalctl -u {UNIT}`") from exc

    def _wait_for_backends(self, apps: set[str], timeout: float = 10.0) -> None:
        """Until the (new) worker answers on the admin socket with every app's backend."""
        deadline = time.monotonic() + timeout
        want = {backend_name(a) for a in apps}
        while True:
            try:
                out = self.admin("show backend")
                if want <= set(out.split()):
                    return
            except Unavailable:
                pass
            if time.monotonic() > deadline:
                raise Unavailable(f"router: HAProxy did not come up with backends for "
                                  f"{', '.join(sorted(apps)) or 'no app'} in {timeout:.0f} s; "
                                  f"see `journalctl -u {UNIT}`")
            time.sleep(0.05)

    def _apply(self, app: str) -> None:
        """Make the app's live servers equal the desired ones, through the admin socket."""
        be = backend_name(app)
        desired = {server_name(b): b for b in self._backends.get(app, [])}
        live = {s.name: s for s in
                parse_servers_state(self.admin(f"show servers state {be}")).get(be, [])}
        for name, b in desired.items():
            s = live.get(name)
            if s is None:
                out = self.admin(f"add server {be}/{name} {b.ip}:{b.port} {SERVER_OPTIONS}")
                if "New server registered" not in out:
                    raise Unavailable(f"router: add server {be}/{name}: {out.strip()}")
                self.admin(f"enable health {be}/{name}")
                self.admin(f"enable server {be}/{name}")
            elif s.maintenance:
                self.admin(f"enable server {be}/{name}")
        for name, s in live.items():
            if name not in desired:
                # Drain: no new requests; the tend loop deletes it once it is idle.
                if not s.maintenance:
                    self.admin(f"disable server {be}/{name}")
                self.admin(f"del server {be}/{name}")

    def _sync_empty(self) -> None:
        _, _, empty = self._map_entries(self._apps)
        self._write(self.paths.empty_map, render_map(empty))
        self._commit_map(self.paths.empty_map, empty)

    def _sync_maps(self) -> None:
        hosts, maint, empty = self._map_entries(self._apps)
        for path, entries in ((self.paths.hosts_map, hosts),
                              (self.paths.maintenance_map, maint),
                              (self.paths.empty_map, empty)):
            self._write(path, render_map(entries))
            self._commit_map(path, entries)

    def _commit_map(self, path: Path, entries: Mapping[str, str]) -> None:
        """Replace a map's contents in the running HAProxy atomically."""
        out = self.admin(f"prepare map {path}")
        if "Unknown map" in out:
            return  # nothing refers to it yet (no app); the next reload reads the file
        m = re.search(r"New version created: (\d+)", out)
        if m is None:
            raise Unavailable(f"router: prepare map {path}: {out.strip()}")
        ver = m.group(1)
        for key, value in entries.items():
            self.admin(f"add map @{ver} {path} {key} {value}")
        self.admin(f"commit map @{ver} {path}")

    def _tend(self) -> None:
        """Every few seconds: delete drained servers, catch up with the store."""
        while not self._stop.wait(2.0):
            try:
                with self._lock:
                    state = parse_servers_state(self.admin("show servers state"))
                    for be, servers in state.items():
                        for s in servers:
                            if s.maintenance:
                                self.admin(f"del server {be}/{s.name}")
                    self.refresh()
            except Exception:
                log.exception("router: tending failed")

    # -- logs

    def _open_log_socket(self) -> None:
        path = self.paths.log_socket
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(path))
        path.chmod(0o600)
        sock.settimeout(1.0)
        self._log_sock = sock

    def _read_logs(self) -> None:
        sock = self._log_sock
        assert sock is not None
        # One socket to journald for every line (journal.send opens one per entry).
        out = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        while not self._stop.is_set():
            try:
                data = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            raw = data.decode("utf-8", "replace").rstrip("\n")
            line = router_line(raw)
            if line is None:
                if not raw.startswith(LOG_MARK):
                    log.info("haproxy: %s", raw)
                continue
            entry = journal.encode({
                "MESSAGE": line.message, "PRIORITY": "3" if line.error else "6",
                "SYSLOG_IDENTIFIER": journal.SYSLOG_IDENTIFIER, journal.APP: line.app,
                journal.SOURCE: "dynod", journal.DYNO: "router"})
            try:
                out.sendto(entry, journal.JOURNAL_SOCKET)
            except OSError as exc:
                log.debug("journal unavailable (%s): %s", exc, line.message)
        out.close()
