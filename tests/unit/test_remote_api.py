"""The API over TCP with TLS, users, tokens and per-app access, end to end in one
process: the real server (socket and TLS port on 127.0.0.1), dynoctl's own commands
as a laptop runs them (credentials file) and as root on the server (the socket)."""

from __future__ import annotations

import importlib
import io
import json
import pkgutil
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dynod import paths
from dynod.api import gate
from dynod.api.daemon import Daemon
from dynod.api.server import TcpListen, start_api
from dynod.cli import main as dynoctl
from dynod.control import keys, users
from dynod.control.users import Throttle
from dynod.errors import PermissionDenied, Unauthenticated
from dynod.router import local_ca
from dynod.settings import Settings
from dynod.store.sqlite import SqliteStore
from dynod.v1 import apps_pb2, apps_pb2_grpc

PUB = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
       " alice@laptop")


@dataclass
class Remote:
    socket: Path
    port: int
    ca: Path
    home: Path
    clock: list[float]
    store: SqliteStore
    monkeypatch: pytest.MonkeyPatch
    capsys: pytest.CaptureFixture[str]

    def as_root(self, *argv: str) -> tuple[int, str, str]:
        self.monkeypatch.setenv("DYNOD_SOCKET", str(self.socket))
        return self._run(argv)

    def as_user(self, who: str, *argv: str, stdin: str = "") -> tuple[int, str, str]:
        self.monkeypatch.delenv("DYNOD_SOCKET", raising=False)
        self.monkeypatch.setenv("DYNOCTL_CREDENTIALS", str(self.home / who / "creds.json"))
        self.monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        return self._run(argv)

    def _run(self, argv: tuple[str, ...]) -> tuple[int, str, str]:
        code = dynoctl.main(list(argv))
        out, err = self.capsys.readouterr()
        return code, out, err

    def add_user(self, email: str) -> str:
        code, out, err = self.as_root("users:add", email)
        assert (code, err) == (0, f"Adding {email}... done\n"), err
        return out.split("One-time password: ", 1)[1].split("\n", 1)[0]

    def login(self, who: str, email: str, password: str, ca: Path | None = None
              ) -> tuple[int, str, str]:
        return self.as_user(who, "login", "--host", f"127.0.0.1:{self.port}", "--ca",
                            str(ca or self.ca), stdin=f"{email}\n{password}\n")


@pytest.fixture
def remote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
           capsys: pytest.CaptureFixture[str]) -> Iterator[Remote]:
    runtime = Path(tempfile.mkdtemp(prefix="dynod-remote-"))
    store = SqliteStore.open(tmp_path / "state.db")
    clock = [1000.0]
    daemon = Daemon(store, Settings(state_dir=tmp_path, runtime_dir=runtime),
                    sign_ins=Throttle(clock=lambda: clock[0]))
    ca = local_ca.ensure_ca(paths.tls_dir(tmp_path))
    chain, key = local_ca.issue(ca, ("127.0.0.1",), datetime.now(UTC))
    server = start_api(runtime / "dynod.sock", "root", daemon,
                       tcp=TcpListen("127.0.0.1:0", chain, key))
    monkeypatch.chdir(tmp_path)
    assert server.tcp_port
    try:
        yield Remote(runtime / "dynod.sock", server.tcp_port, paths.ca_certificate(tmp_path),
                     tmp_path, clock, store, monkeypatch, capsys)
    finally:
        server.stop(0)
        store.close()


def test_login_create_and_only_ones_own_apps(remote: Remote) -> None:
    password = remote.add_user("alice@example.com")
    assert remote.as_root("apps:create", "rootapp", "--no-remote")[0] == 0
    code, out, err = remote.login("alice", "alice@example.com", password)
    assert (code, out) == (0, "Logged in as alice@example.com\n"), err
    creds = remote.home / "alice" / "creds.json"
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    assert stat.S_IMODE(creds.parent.stat().st_mode) == 0o700
    token = json.loads(creds.read_text())["token"]
    assert token.startswith("dynod_") and len(token) == len("dynod_") + 43  # 256 bits
    # The server keeps only its hash.
    assert token not in (remote.home / "state.db").read_bytes().decode("latin-1")
    assert remote.as_user("alice", "auth:whoami")[1] == "alice@example.com\n"
    assert remote.as_user("alice", "auth:token")[1] == token + "\n"
    code, out, err = remote.as_user("alice", "apps:create", "shop", "--no-remote")
    assert code == 0, err
    # The git URL names the host alice logged in to.
    assert out.strip().endswith("| dynod@127.0.0.1:shop.git"), out
    assert remote.as_user("alice", "apps")[1].splitlines()[1:] == ["shop"]
    code, _, err = remote.as_user("alice", "config:set", "A=1", "-a", "rootapp")
    assert (code, err) == (1, " !    You do not have access to the app rootapp.\n")
    code, _, err = remote.as_user("alice", "stacks:build", "debian-13")
    assert code == 1 and "is for the administrator, as root on the server" in err, err
    # The administrator (root on the socket) sees every app; alice owns hers.
    assert remote.as_root("apps:info", "-a", "shop", "--json")[0] == 0
    with remote.store.read() as tx:
        assert tx.app("shop").owner == "alice@example.com"  # type: ignore[union-attr]


def test_revoked_token_fails_every_call_with_the_fix(remote: Remote) -> None:
    password = remote.add_user("alice@example.com")
    assert remote.login("alice", "alice@example.com", password)[0] == 0
    code, out, _ = remote.as_user("alice", "authorizations")
    token_id = out.split()[1]
    assert code == 0 and out.startswith("dynoctl  ") and out.rstrip().endswith("global")
    assert remote.as_root("authorizations:revoke", token_id)[0] == 0
    for argv in (("apps",), ("auth:whoami",), ("apps:create", "x-shop", "--no-remote"),
                 ("logs", "-a", "shop")):
        code, _, err = remote.as_user("alice", *argv)
        assert (code, err) == (1, " !    your token is not valid (revoked, or its user was "
                                  "removed); run `dynoctl login --host HOST` to sign in "
                                  "again\n"), argv
    assert remote.as_root("apps")[1] == "You have no apps.\n"


def test_expired_token_is_refused(remote: Remote) -> None:
    password = remote.add_user("bob@example.com")
    record, secret = users.sign_in(remote.store, Throttle(), "bob@example.com", password,
                                   "127.0.0.1", description="t", expires_in=timedelta(hours=1))
    later = record.created_at + timedelta(hours=2)
    with pytest.raises(Unauthenticated, match=r"your token expired at .* UTC; run "
                       r"`dynoctl login --host HOST`"):
        users.authenticate(remote.store, secret, now=later)
    assert users.authenticate(remote.store, secret).email == "bob@example.com"


def test_collaborator_deploys_but_does_not_destroy(remote: Remote) -> None:
    alice = remote.add_user("alice@example.com")
    bob = remote.add_user("bob@example.com")
    remote.login("alice", "alice@example.com", alice)
    remote.login("bob", "bob@example.com", bob)
    assert remote.as_user("alice", "apps:create", "shop", "--no-remote")[0] == 0
    code, _, err = remote.as_user("bob", "config", "-a", "shop")
    assert (code, err) == (1, " !    You do not have access to the app shop.\n")
    code, _, err = remote.as_user("alice", "access:add", "bob@example.com", "-a", "shop")
    assert (code, err) == (0, "Adding bob@example.com access to the app shop... done\n")
    assert remote.as_user("bob", "access", "-a", "shop")[1] == (
        "=== ⬢ shop Access List\n"
        "alice@example.com  owner\n"
        "bob@example.com    collaborator\n")
    code, _, err = remote.as_user("bob", "config:set", "GREETING=hi", "-a", "shop")
    assert code == 0, err
    releases = remote.as_user("bob", "releases", "-a", "shop")[1]
    assert "Set GREETING config vars  bob@example.com" in releases, releases
    code, _, err = remote.as_user("bob", "apps:destroy", "-a", "shop", "--confirm", "shop")
    assert code == 1 and "only the owner of shop (alice@example.com) may do this" in err, err
    code, _, err = remote.as_user("bob", "access:remove", "alice@example.com", "-a", "shop")
    assert code == 1 and "alice@example.com owns shop and cannot be removed" in err, err
    code, _, err = remote.as_user("bob", "apps:transfer", "bob@example.com", "-a", "shop")
    assert code == 1 and "only the owner" in err, err
    assert "alice@example.com  owner" in remote.as_user("alice", "access", "-a", "shop")[1]
    # A malformed email: a clear message, nothing changes.
    code, _, err = remote.as_user("alice", "access:add", "bob@", "-a", "shop")
    assert (code, err) == (1, " !    'bob@' is not an email address; give one like "
                              "alice@example.com\n")
    code, _, err = remote.as_root("users:add", "not an email")
    assert code == 1 and "is not an email address" in err
    assert remote.as_root("users")[1] == ("=== Users\nalice@example.com\n"
                                          "bob@example.com\n")
    code, _, err = remote.as_user("alice", "apps:transfer", "bob@example.com", "-a", "shop")
    assert (code, err) == (0, "Transferring ⬢ shop to bob@example.com... done\n")
    assert remote.as_user("alice", "access", "-a", "shop")[1].splitlines()[1:] == [
        "bob@example.com    owner", "alice@example.com  collaborator"]
    code, _, err = remote.as_user("bob", "apps:destroy", "-a", "shop", "--confirm", "shop")
    assert code == 0, err


def test_wrong_password_then_slowed(remote: Remote) -> None:
    password = remote.add_user("alice@example.com")
    for _ in range(3):
        code, _, err = remote.login("alice", "alice@example.com", "guess")
        assert code == 1 and "wrong email or password for alice@example.com; check both" in err
    code, _, err = remote.login("alice", "alice@example.com", password)
    assert code == 1 and ("too many failed sign-ins for alice@example.com from 127.0.0.1; "
                          "wait 1 s and try again") in err, err
    assert not (remote.home / "alice" / "creds.json").exists()
    remote.clock[0] += 1.5
    assert remote.login("alice", "alice@example.com", password)[0] == 0


def test_unauthenticated_reaches_health_only_and_tls_is_required(remote: Remote) -> None:
    ca = remote.ca.read_bytes()
    secure = grpc.secure_channel(f"127.0.0.1:{remote.port}",
                                 grpc.ssl_channel_credentials(root_certificates=ca))
    health = health_pb2_grpc.HealthStub(secure).Check(health_pb2.HealthCheckRequest(),
                                                      timeout=10)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.RpcError) as info:
        apps_pb2_grpc.AppsStub(secure).List(apps_pb2.ListAppsRequest(), timeout=10)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert str(info.value.details()).startswith("not logged in; run `dynoctl login")
    plain = grpc.insecure_channel(f"127.0.0.1:{remote.port}")
    with pytest.raises(grpc.RpcError) as info:
        health_pb2_grpc.HealthStub(plain).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    other = local_ca.make_ca(datetime.now(UTC), "elsewhere")
    (remote.home / "other.crt").write_text(other.cert_pem)
    password = remote.add_user("alice@example.com")
    code, _, err = remote.login("alice", "alice@example.com", password,
                                ca=remote.home / "other.crt")
    assert code == 1 and "the server's certificate is not signed by a CA you trust" in err


def test_every_method_has_a_rule_and_unlisted_ones_are_the_admins() -> None:
    # Every generated module, so a new service cannot slip past the table.
    import dynod.v1  # noqa: PLC0415
    modules = [importlib.import_module(f"dynod.v1.{m.name}")
               for m in pkgutil.iter_modules(dynod.v1.__path__) if m.name.endswith("_pb2")]
    methods = {f"/{s.full_name}/{m.name}"
               for mod in modules
               for s in mod.DESCRIPTOR.services_by_name.values() for m in s.methods}
    assert set(gate.POLICY) - methods == {
        "/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"}
    # Peers is served on the peer listener only (mutual TLS, api/peers.py), never on
    # this API; were it ever, the administrator's alone.
    assert {m for m in methods if gate.rule_for(m) == gate.ADMIN} == {
        "/dynod.v1.Peers/FetchSlug",
        "/dynod.v1.Apps/Gc", "/dynod.v1.Auth/AddUser", "/dynod.v1.Auth/ListUsers",
        "/dynod.v1.Cluster/Init", "/dynod.v1.Cluster/CheckJoin", "/dynod.v1.Cluster/Join",
        "/dynod.v1.Cluster/Status", "/dynod.v1.Cluster/Remove",
        "/dynod.v1.Domains/AddCert", "/dynod.v1.Domains/ListCerts",
        "/dynod.v1.Domains/RemoveCert", "/dynod.v1.Keys/Get", "/dynod.v1.Stacks/Build"}
    assert {m for m in methods if gate.rule_for(m) == gate.PUBLIC} == {
        "/dynod.v1.Auth/Login", "/dynod.v1.Cluster/Admit"}


def test_a_users_key_pushes_only_to_their_apps(remote: Remote) -> None:
    remote.add_user("alice@example.com")
    assert remote.as_root("apps:create", "shop", "--no-remote")[0] == 0
    key = keys.add_key(remote.store, Daemon(remote.store, Settings()).events, PUB,
                       "alice@example.com")
    with pytest.raises(PermissionDenied, match=r"^You do not have access to the app shop\.$"):
        keys.require_push(remote.store, key, "shop")
    assert remote.as_root("access:add", "alice@example.com", "-a", "shop")[0] == 0
    keys.require_push(remote.store, key, "shop")
    root_key = keys.add_key(remote.store, Daemon(remote.store, Settings()).events,
                            PUB.replace("IOMqq", "IOMqr"), "root")
    keys.require_push(remote.store, root_key, "shop")  # the administrator's key
