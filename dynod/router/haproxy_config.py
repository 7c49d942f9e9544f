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
# Keep-alive to dynos, with a bounded idle pool per server that is purged quickly. With
# ``http-reuse always`` a new connection is opened only when no idle one is free, so the
# connections to a dyno follow the requests in flight; at most POOL_MAX_CONN stay idle,
# and one that would be the next is closed. That bound is a trade-off, measured
# (benchmarks/router.py, 16 client connections to one dyno): at 4 the pool closed and
# reopened a connection for 0.6-1.1 of every request (HAProxy ~70 us and the app ~60 us
# CPU per request instead of ~30 and ~17); at 8, 0.35; at 16, none. A thread-per-
# connection app (http.server with threads, WEBrick) gives each open connection a thread,
# so it needs more threads per dyno than the bound, or idle connections can hold all of
# them while a request waits in its backlog (H12); gunicorn's sync workers close after
# each response and are never held. Options are repeated on each server line, since
# servers added at run time get no default-server.
POOL_MAX_CONN = 16
POOL_PURGE_DELAY = "1s"
SERVER_OPTIONS = ("weight 100 check inter 1h downinter 1s fall 2 rise 1 observe layer4 "
                  "error-limit 1 on-error mark-down "
                  f"pool-max-conn {POOL_MAX_CONN} pool-purge-delay {POOL_PURGE_DELAY}")
# HAProxy's threads: half the cores, at least one. The router shares the machine with the
# dynos; with more threads than free cores a thread preempted inside the log ring's write
# lock leaves the others spinning on it (perf on 2 cores: 7.6% of HAProxy's samples in
# that loop, and ~110 us CPU per request with 2 threads against ~70 with 1).


def router_threads(cpus: int) -> int:
    return max(1, cpus // 2)


# Heroku's Router 2.0 opt-out (features:enable http-disable-keepalive-to-dyno): that
# app's backend closes the dyno connection after each response.
NO_KEEPALIVE = "http-disable-keepalive-to-dyno"
# X-Forwarded-For lines joined into one header, in order (HAProxy 2.6 has no fetch
# for "all of them"); a request with more is refused (H25).
MAX_XFF_LINES = 16
# The router lines' ring in HAProxy: 32 MB (~100,000 lines) absorbs a reader's stall;
# its forwarder keeps its place across a reader's reconnect and counts what it drops.
LOG_RING = "dynod-log"
LOG_RING_SIZE = 32 * 1024 * 1024
LOG_MAXLEN = 16384


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


# The raw router line: safe fields first (HAProxy's own values, app and server names),
# split on spaces; then the middle of Heroku's line, written by HAProxy, with the values
# a client chooses quoted and escaped (+E escapes '"' and '\\', which +Q alone does not)
# or reduced to safe characters (the host), so no value can shift a field.
LOG_FORMAT = " ".join([
    LOG_MARK, "%[var(txn.app)]", "%[var(txn.code)]", "%tsc", "%ST", "%Tc", "%Tw", "%TR",
    "%Ta", "%s", "%B", "%[var(txn.proto)]",
    "method=%HM", "path=%{+Q,+E}[var(txn.path)]", "host=%[var(txn.host)]",
    "request_id=%[var(txn.rid)]",
    "fwd=%{+Q,+E}[var(txn.fwd)]",
])


def _forwarded_for() -> list[str]:
    """Every X-Forwarded-For line the client sent, in order, then the client's address
    (Heroku appends it); ``req.fhdr`` alone would keep only the last line."""
    hdr = "x-forwarded-for"
    rules = [f"    http-request set-var(txn.code) str(H25) if {{ req.fhdr_cnt({hdr}) gt "
             f"{MAX_XFF_LINES} }}",
             "    http-request return status 400 content-type text/plain string "
             f'"Too many X-Forwarded-For headers (more than {MAX_XFF_LINES})" '
             f"if {{ req.fhdr_cnt({hdr}) gt {MAX_XFF_LINES} }}",
             f"    http-request set-var(txn.fwd) req.fhdr({hdr},1) "
             f"if {{ req.fhdr_cnt({hdr}) ge 1 }}"]
    rules += [f'    http-request set-var-fmt(txn.fwd) "%[var(txn.fwd)], %[req.fhdr({hdr},{n})]" '
              f"if {{ req.fhdr_cnt({hdr}) ge {n} }}" for n in range(2, MAX_XFF_LINES + 1)]
    rules += ['    http-request set-var-fmt(txn.fwd) "%[var(txn.fwd)], %[src]" '
              "if { var(txn.fwd) -m found }",
              "    http-request set-var(txn.fwd) src unless { var(txn.fwd) -m found }",
              "    http-request set-header X-Forwarded-For %[var(txn.fwd)]"]
    return rules


def render_config(paths: RouterPaths, routes: Mapping[str, Sequence[Backend]], *,
                  http_port: int = 80, https_port: int = 443, tls: bool = False,
                  no_keepalive: frozenset[str] = frozenset(), threads: int = 1) -> str:
    """haproxy.cfg for these apps and their current backends (written as static servers,
    so a reload keeps them; later changes go through the runtime API). Apps in
    ``no_keepalive`` close each dyno connection after its response; ``threads`` is
    HAProxy's nbthread (``router_threads``)."""
    p = paths
    lines = [
        "# Written by dynod; changes are lost. Servers change through the admin socket.",
        "global",
        f"    stats socket {p.admin_socket} mode 600 level admin",
        "    stats timeout 30s",
        f"    nbthread {threads}",
        f"    log ring@{LOG_RING} len {LOG_MAXLEN} format raw local0",
        "    tune.http.maxhdr 1000",
        # Paths up to the request-line limit are logged whole (1024 by default).
        f"    tune.http.logurilen {MAX_REQUEST_LINE}",
        "",
        # HAProxy writes each router line into this ring and forwards it over one stream
        # to dynod's reader (log_lines.LogReader), octet-counted (RFC 6587).
        f"ring {LOG_RING}",
        "    format raw",
        f"    maxlen {LOG_MAXLEN}",
        f"    size {LOG_RING_SIZE}",
        "    timeout connect 5s",
        "    timeout server 1h",
        f"    server dynod unix@{p.log_socket} log-proto octet-count",
        "",
        "defaults",
        "    mode http",
        "    log global",
        f'    log-format "{LOG_FORMAT}"',
        # Keep-alive to the dynos (the client side is kept alive too), with bounded and
        # purged idle pools per server (SERVER_OPTIONS); any idle connection may carry a
        # request, so new ones are opened only when none is free.
        "    option http-keep-alive",
        "    http-reuse always",
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
        # txn.path: the path in origin form (pathq), as Heroku logs it: HTTP/2 requests
        # carry an absolute URI (HU would log https://host/path for them).
        "    http-request set-var(txn.path) pathq",
        # Only host-name characters: the host is logged unquoted, as on Heroku.
        "    http-request set-var(txn.host) req.fhdr(host),lower,field(1,:),"
        "regsub([^a-z0-9.-],_,g)",
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
        # (The whole last line must be valid: req.hdr would look at its last value only.)
        "    http-request set-var(txn.rid) req.fhdr(x-request-id) "
        "if { req.fhdr(x-request-id) -m reg ^[A-Za-z0-9+=/-]{20,200}$ }",
        "    http-request set-var(txn.rid) uuid unless { var(txn.rid) -m found }",
        "    http-request set-header X-Request-Id %[var(txn.rid)]",
        *_forwarded_for(),
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
            *(["    option http-server-close"] if app in no_keepalive else []),
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
