"""The dashboard's pages through Flask's test client over a real store: who reaches
what, CSRF on every form, sign-in failures, and that actions name the signed-in user
and follow the same access rules as the API."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from dynod.__main__ import tls_pair
from dynod.api.daemon import Daemon
from dynod.api.dashboard.app import make_app
from dynod.api.dashboard.session import SESSION_COOKIE
from dynod.control import access, apps, config_vars, releases, users
from dynod.control.users import Throttle
from dynod.errors import InvalidArgument
from dynod.router import local_ca
from dynod.settings import Settings, load_settings
from dynod.store.sqlite import SqliteStore


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    store = SqliteStore.open(tmp_path / "state.db")
    clock = [1000.0]
    yield Daemon(store, Settings(state_dir=tmp_path, runtime_dir=tmp_path / "run"),
                 sign_ins=Throttle(clock=lambda: clock[0]))
    store.close()


def user(daemon: Daemon, email: str) -> str:
    return users.add_user(daemon.store, email)[1]


def csrf(client: FlaskClient, path: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', client.get(path).text)
    assert found, path
    return found.group(1)


def sign_in(client: FlaskClient, email: str, password: str) -> int:
    token = csrf(client, "/signin")
    return client.post("/signin", data={"csrf_token": token, "email": email,
                                        "password": password}).status_code


def client_of(daemon: Daemon) -> FlaskClient:
    return make_app(daemon).test_client()


def test_unauthenticated_clients_reach_health_and_the_sign_in_page_only(
        daemon: Daemon) -> None:
    client = client_of(daemon)
    assert client.get("/health").text == "ok\n"
    assert "Sign in to dynod" in client.get("/signin").text
    for path in ("/", "/apps/shop", "/apps/shop/config", "/static/logs.js"):
        reply = client.get(path)
        assert (reply.status_code, reply.headers["Location"]) == (303, "/signin"), path
    assert client.get("/apps/shop/logs/lines").status_code == 401
    assert client.post("/apps/shop/scale", data={"type": "web"}).status_code == 401


def test_sign_in_wrong_password_slowdown_and_csrf(daemon: Daemon) -> None:
    password = user(daemon, "alice@example.com")
    client = client_of(daemon)
    # Without the form's token: refused, however right the password.
    reply = client.post("/signin", data={"email": "alice@example.com", "password": password})
    assert reply.status_code == 403 and "CSRF token is missing or wrong" in reply.text
    for _ in range(3):
        token = csrf(client, "/signin")
        reply = client.post("/signin", data={"csrf_token": token, "email": "alice@example.com",
                                             "password": "nope"})
        assert reply.status_code == 401
        assert "wrong email or password for alice@example.com" in reply.text
    # The API's throttle: after three failures the next try must wait.
    token = csrf(client, "/signin")
    reply = client.post("/signin", data={"csrf_token": token, "email": "alice@example.com",
                                         "password": password})
    assert reply.status_code == 429 and "too many failed sign-ins" in reply.text
    assert client.get_cookie(SESSION_COOKIE) is None


def test_actions_name_the_user_and_follow_access(daemon: Daemon) -> None:
    alice = user(daemon, "alice@example.com")
    mallory = user(daemon, "mallory@example.com")
    apps.create_app(daemon.store, daemon.events, "shop", "alice@example.com")
    config_vars.set_config(daemon.store, daemon.events, "shop", {"SECRET": "s3cr3t"}, "root")
    client = client_of(daemon)
    assert sign_in(client, "alice@example.com", alice) == 303
    cookie = client.get_cookie(SESSION_COOKIE)
    assert cookie is not None and cookie.http_only and cookie.secure
    assert cookie.same_site == "Strict"
    assert "shop" in client.get("/").text
    page = client.get("/apps/shop/config").text
    assert "<details><summary>Reveal</summary><code>s3cr3t</code>" in page

    token = csrf(client, "/apps/shop/config")
    reply = client.post("/apps/shop/config", data={"key": "GREETING", "value": "hi"})
    assert reply.status_code == 403  # no token
    reply = client.post("/apps/shop/config", data={"csrf_token": token, "key": "GREETING",
                                                   "value": "hi"})
    assert reply.status_code == 303
    latest = releases.get_release(daemon.store, "shop")
    assert latest.user == "alice@example.com" and latest.config["GREETING"] == "hi"
    reply = client.post("/apps/shop/rollback", data={"csrf_token": token, "version": "2"})
    assert reply.status_code == 303
    rolled = releases.get_release(daemon.store, "shop")
    assert (rolled.description, rolled.user) == ("Rollback to v2", "alice@example.com")
    reply = client.post("/apps/shop/config", data={"csrf_token": token, "key": "bad key"})
    assert reply.status_code == 400 and releases.get_release(daemon.store, "shop") == rolled

    # A stranger sees no app and may not touch it; as a collaborator, they may.
    other = client_of(daemon)
    assert sign_in(other, "mallory@example.com", mallory) == 303
    assert "shop" not in other.get("/").text
    reply = other.get("/apps/shop/releases")
    assert reply.status_code == 403 and "You do not have access to the app shop." in reply.text
    token = csrf(other, "/")
    reply = other.post("/apps/shop/config", data={"csrf_token": token, "key": "X", "value": "1"})
    assert reply.status_code == 403
    assert releases.get_release(daemon.store, "shop") == rolled
    access.add_collaborator(daemon.store, "shop", "mallory@example.com")
    assert "Rollback to v2" in other.get("/apps/shop/releases").text

    # Sign out revokes the session's token.
    token = csrf(client, "/")
    assert client.post("/signout", data={"csrf_token": token}).status_code == 303
    assert users.list_tokens(daemon.store, "alice@example.com") == []
    assert client.get("/").status_code == 303


def test_bad_dashboard_settings_stop_dynod_with_the_fix(tmp_path: Path) -> None:
    config = tmp_path / "dynod.toml"
    config.write_text('dashboard_listen = "5444"\n')
    with pytest.raises(InvalidArgument, match="'dashboard_listen' must be HOST:PORT"):
        load_settings(config)
    config.write_text('dashboard_listen = "127.0.0.1:5444"\n'
                      'dashboard_tls_cert = "/etc/ssl/mine.pem"\n')
    ca = local_ca.ensure_ca(tmp_path / "tls")
    with pytest.raises(InvalidArgument, match="set both dashboard_tls_cert and "
                                              "dashboard_tls_key, or neither"):
        tls_pair(load_settings(config), ca, "dashboard")
    chain, key = tls_pair(load_settings(config.with_name("none.toml")), ca, "dashboard")
    assert "BEGIN CERTIFICATE" in chain and "PRIVATE KEY" in key
