"""HAProxy's configuration for dynod: ``haproxy.cfg``, its maps and its pages. Pure.

One backend per app, plus maps for host names, maintenance mode and the reason an app has
no dyno (H10 or H14), all under one runtime directory (``RouterPaths``). Servers are
written as static ones so a reload keeps them; after that they change through the admin
socket (``admin_socket``), and only a change of the rest of the file (``config_shape``)
is worth a reload.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from dynod.router.protocol import Backend

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

    @property
    def acme_map(self) -> Path:
        """ACME http-01 answers: ``<host>/<token>`` -> the key authorization."""
        return self.dir / "acme.map"

    def page(self, name: str) -> Path:
        return self.dir / f"{name}.html"


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
    # txn.path: the path in origin form (pathq), as Heroku logs it: HTTP/2 requests carry
    # an absolute URI (HU would log https://host/path for them).
    fmt = " ".join([
        LOG_MARK, "%{+Q}[var(txn.app)]", "%{+Q}[var(txn.code)]", "%{+Q}HM", "%{+Q}[var(txn.path)]",
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
        # HTTP/2 to the clients that offer it (ALPN), HTTP/1.1 to the others; the dynos
        # get HTTP/1.1 either way.
        lines += [f"    bind {addr}{https_port}{v6} ssl crt-list {p.crt_list} alpn h2,http/1.1"
                  for addr, v6 in ((":", ""), (":::", " v6only"))]
    lines += [
        "    http-request set-var(txn.proto) ssl_fc,iif(https,http)",
        "    http-request set-var(txn.path) pathq",
        "    http-request set-var(txn.host) req.hdr(host),lower,field(1,:)",
        # ACME http-01 (RFC 8555 8.3): the router itself answers the CA for a domain's
        # token, from a map dynod updates at run time, before anything else (an app in
        # maintenance, without dynos or redirecting to HTTPS still gets its certificate).
        "    http-request set-var(txn.acme_token) path,field(4,/) "
        "if { path_beg /.well-known/acme-challenge/ }",
        "    http-request set-var(txn.acme) "
        f"var(txn.host),concat(/,txn.acme_token),map({p.acme_map}) "
        "if { var(txn.acme_token) -m found }",
        "    http-request return status 200 content-type text/plain lf-string "
        '"%[var(txn.acme)]" if { var(txn.acme) -m found }',
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


def config_shape(config: str) -> list[str]:
    """A configuration without its server lines: what a reload would change."""
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
