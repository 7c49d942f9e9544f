"""The dashboard's pages (Flask, Jinja templates): sign in, the app list, and per app
its dynos and formation, releases, config vars, domains and certificates, add-ons and
a live log tail.

Every action calls the use case the gRPC API calls (dynod/control/*, the supervisor),
with the signed-in user's email, so ``app[api]`` lines, releases and the audit name
them; access is checked as the API's gate checks it (:mod:`dynod.control.access`).
Unauthenticated clients reach ``/health`` and the sign-in page only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from flask import Flask, Response, abort, g, jsonify, redirect, render_template, request
from werkzeug.exceptions import HTTPException

from dynod.api.daemon import Daemon
from dynod.api.dashboard.session import (
    CSRF_FIELD,
    SESSION_COOKIE,
    SIGNIN_COOKIE,
    csrf_for,
    csrf_ok,
    new_signin_token,
)
from dynod.api.logs import journal_opener
from dynod.control import (
    access,
    addons,
    apps,
    certs,
    config_vars,
    domains,
    formation,
    logs,
    releases,
    users,
)
from dynod.errors import (
    AlreadyExists,
    DynodError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
)
from dynod.model.dynos import DynoInfo
from dynod.model.formation import ScaleChange
from dynod.system import processes

# A dashboard session lasts a working day; the API's CLI tokens last a year.
SESSION_HOURS = 12
PUBLIC = frozenset({"health", "signin", "signin_post"})
STATUS = {NotFound: 404, PermissionDenied: 403, InvalidArgument: 400, AlreadyExists: 409,
          FailedPrecondition: 409, ResourceExhausted: 429, Unauthenticated: 401}
TAIL_LINES = 100
SIGNIN_TOKEN_LENGTH = 32


@dataclass(frozen=True)
class Page:
    """One tab of an app's page."""

    endpoint: str
    title: str


TABS = (Page("dynos", "Resources"), Page("releases", "Activity"), Page("config", "Settings"),
        Page("domains", "Domains"), Page("addons", "Add-ons"), Page("logs", "Logs"))


def _status(exc: DynodError) -> int:
    return next((code for kind, code in STATUS.items() if isinstance(exc, kind)), 500)


def _cpu(nsec: int | None) -> str:
    return "-" if nsec is None else f"{nsec / 1e9:.1f} s"


def _mib(count: int | None) -> str:
    return "-" if not count else f"{count / 2**20:.1f} MiB"


def _age(since: float) -> str:
    seconds = max(0, int(datetime.now(UTC).timestamp() - since))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def make_app(daemon: Daemon) -> Flask:
    """The dashboard's WSGI application over ``daemon``'s store and collaborators."""
    web = Flask(__name__, static_folder=str(Path(__file__).parent / "static"))
    web.config.update(TEMPLATES_AUTO_RELOAD=False, MAX_CONTENT_LENGTH=1 << 20)
    web.jinja_env.globals.update(tabs=TABS, cpu=_cpu, mib=_mib, age=_age)
    store = daemon.store

    def user() -> str:
        return str(g.user)

    def app_page(name: str) -> Any:
        """The app, after the signed-in user's access to it is checked."""
        access.require(store, user(), name)
        return apps.get_app(store, name)

    def render(template: str, status: int = 200, **values: Any) -> Response:
        values.setdefault("error", "")
        values.setdefault("notice", request.args.get("done", ""))
        return Response(render_template(template, user=g.get("user"),
                                        csrf=g.get("csrf", ""), **values), status)

    def back(endpoint: str, name: str, done: str) -> Response:
        tail = "" if endpoint == "dynos" else f"/{endpoint}"
        return redirect(f"/apps/{name}{tail}?done={done}", 303)  # type: ignore[return-value]

    @web.before_request
    def gate() -> Response | None:
        g.user = None
        secret = request.cookies.get(SESSION_COOKIE, "")
        if secret:
            try:
                g.user = users.authenticate(store, secret).email
                g.csrf = csrf_for(secret)
            except Unauthenticated:
                g.user = None
        if request.endpoint in PUBLIC:
            return None
        if g.user is None:
            if request.method == "GET" and request.endpoint != "log_lines":
                return redirect("/signin", 303)  # type: ignore[return-value]
            abort(401, "sign in first (your session ended or was revoked)")
        if request.method == "POST" and not csrf_ok(g.csrf, request.form.get(CSRF_FIELD, "")):
            abort(403, "this form's CSRF token is missing or wrong; reload the page and "
                       "submit it again")
        return None

    @web.after_request
    def headers(response: Response) -> Response:
        # Scripts only from this origin (no inline script), never framed, not cached.
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
            "frame-ancestors 'none'; form-action 'self'")
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cache-Control"] = "no-store"
        response.headers["Strict-Transport-Security"] = "max-age=31536000"
        return response

    @web.errorhandler(DynodError)
    def failed(exc: DynodError) -> Response:
        return render("error.html", _status(exc), error=exc.message)

    @web.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        return render("error.html", exc.code or 500, error=exc.description or exc.name)

    @web.get("/health")
    def health() -> Response:
        return Response("ok\n", mimetype="text/plain")

    def signin_page(status: int = 200, error: str = "", email: str = "") -> Response:
        # One value per browser until it signs in: a second tab, or the browser's own
        # favicon request redirected here, must not void the form already shown.
        token = request.cookies.get(SIGNIN_COOKIE, "")
        if len(token) < SIGNIN_TOKEN_LENGTH:
            token = new_signin_token()
        response = render("signin.html", status, error=error, email=email, signin_csrf=token)
        response.set_cookie(SIGNIN_COOKIE, token, httponly=True, secure=True,
                            samesite="Strict", path="/signin")
        return response

    @web.get("/signin")
    def signin() -> Response:
        return signin_page()

    @web.post("/signin")
    def signin_post() -> Response:
        if not csrf_ok(request.cookies.get(SIGNIN_COOKIE, ""),
                       request.form.get(CSRF_FIELD, "")):
            abort(403, "this form's CSRF token is missing or wrong; reload the sign-in "
                       "page and sign in again")
        email = request.form.get("email", "").strip()
        try:
            _token, secret = users.sign_in(
                store, daemon.sign_ins, email, request.form.get("password", ""),
                request.remote_addr or "", description="dashboard",
                expires_in=timedelta(hours=SESSION_HOURS))
        except DynodError as exc:
            return signin_page(_status(exc), exc.message, email)
        response: Response = redirect("/", 303)  # type: ignore[assignment]
        response.set_cookie(SESSION_COOKIE, secret, httponly=True, secure=True,
                            samesite="Strict", max_age=SESSION_HOURS * 3600)
        response.delete_cookie(SIGNIN_COOKIE, path="/signin")
        return response

    @web.post("/signout")
    def signout() -> Response:
        token = users.authenticate(store, request.cookies.get(SESSION_COOKIE, ""))
        users.revoke_token(store, token.email, token.id)
        response: Response = redirect("/signin", 303)  # type: ignore[assignment]
        response.delete_cookie(SESSION_COOKIE)
        return response

    @web.get("/")
    def app_list() -> Response:
        visible = access.visible_apps(store, user())
        found = [a for a in apps.list_apps(store) if a.name in visible]
        return render("apps.html", apps=found, domain=daemon.settings.domain)

    def dynos_of(name: str) -> list[DynoInfo]:
        found: list[DynoInfo] = []
        if daemon.oneoffs is not None:  # one-offs first, as Heroku's ps lists them
            found += daemon.oneoffs.dynos(name)
        if daemon.supervisor is not None:
            found += daemon.supervisor.dynos(name)
        return found

    @web.get("/apps/<name>")
    def dynos(name: str) -> Response:
        return render("dynos.html", app=app_page(name), tab="dynos", dynos=dynos_of(name),
                      formation=formation.get_formation(store, name),
                      url=daemon.web_url(name))

    @web.post("/apps/<name>/scale")
    def scale(name: str) -> Response:
        app_page(name)
        kind = request.form.get("type", "")
        raw = request.form.get("quantity", "").strip()
        if not raw.isdigit():
            raise InvalidArgument(f"scale {kind}: {raw!r} is not a number of dynos; give "
                                  "a whole number, 0 or more")
        formation.scale(store, daemon.events, name,
                        [ScaleChange(type=kind, quantity=int(raw), delta=None, size=None)],
                        user())
        return back("dynos", name, "scaled")

    @web.post("/apps/<name>/restart")
    def restart(name: str) -> Response:
        app_page(name)
        if daemon.supervisor is None:
            raise FailedPrecondition("this dynod runs no dynos")
        daemon.supervisor.restart(name, request.form.get("target", ""))
        return back("dynos", name, "restarted")

    @web.get("/apps/<name>/releases")
    def releases_page(name: str) -> Response:
        found = releases.list_releases(store, name, 50)
        current = releases.get_release(store, name).version if found else 0
        return render("releases.html", app=app_page(name), tab="releases",
                      releases=found, current=current)

    @web.post("/apps/<name>/rollback")
    def rollback(name: str) -> Response:
        app_page(name)
        raw = request.form.get("version", "")
        if not raw.isdigit():
            raise InvalidArgument(f"rollback: {raw!r} is not a release version (v12 is 12)")
        releases.rollback(store, daemon.events, name, int(raw), user())
        return back("releases", name, "rolled-back")

    @web.get("/apps/<name>/config")
    def config(name: str) -> Response:
        app = app_page(name)
        found = config_vars.get_config(store, name).config
        return render("config.html", app=app, tab="config",
                      vars=sorted(found.items()))

    @web.post("/apps/<name>/config")
    def config_set(name: str) -> Response:
        app_page(name)
        key = request.form.get("key", "").strip()
        config_vars.set_config(store, daemon.events, name,
                               {key: request.form.get("value", "")}, user())
        return back("config", name, "config-set")

    @web.post("/apps/<name>/config/unset")
    def config_unset(name: str) -> Response:
        app_page(name)
        config_vars.unset_config(store, daemon.events, name,
                                 [request.form.get("key", "")], user())
        return back("config", name, "config-unset")

    @web.get("/apps/<name>/domains")
    def domains_page(name: str) -> Response:
        app = app_page(name)
        found = domains.list_domains(store, name)
        hostnames = {d.hostname for d in found}
        served = [c for c in certs.list_certs(daemon.certs_dir)
                  if hostnames & set(c.hostnames)]
        return render("domains.html", app=app, tab="domains", domains=found, certs=served,
                      default=f"{name}.{daemon.settings.domain}")

    @web.post("/apps/<name>/domains")
    def domain_add(name: str) -> Response:
        app_page(name)
        domains.add_domain(store, daemon.events, name, request.form.get("hostname", ""),
                           daemon.settings.domain)
        return back("domains", name, "domain-added")

    @web.post("/apps/<name>/domains/remove")
    def domain_remove(name: str) -> Response:
        app_page(name)
        domains.remove_domain(store, daemon.events, name, request.form.get("hostname", ""))
        return back("domains", name, "domain-removed")

    @web.get("/apps/<name>/addons")
    def addons_page(name: str) -> Response:
        return render("addons.html", app=app_page(name), tab="addons",
                      addons=addons.list_addons(store, name))

    @web.get("/apps/<name>/logs")
    def logs_page(name: str) -> Response:
        return render("logs.html", app=app_page(name), tab="logs")

    @web.get("/apps/<name>/logs/lines")
    def log_lines(name: str) -> Response:
        """The last lines (no ``after``), or those after the position ``after``: the
        page's script polls this (journald is read, no stream is held open)."""
        app_page(name)
        after = request.args.get("after", "")
        query = logs.make_query(name, 0 if after else TAIL_LINES, after=after)
        opened: list[processes.Lines] = []
        open_source = journal_opener(opened)
        try:
            found = list(logs.stream(query, open_source))
        finally:
            for source in opened:
                source.close()
        return jsonify(lines=[logs.format_line(x) for x in found],
                       position=found[-1].position if found else after)

    return web

