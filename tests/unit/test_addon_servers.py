"""The add-on servers without servers: pg_hba.conf from admitted sets, redis.conf from a
plan, names, ports, and what AddonManager asks of systemd and psql (faked at the process
boundary) and of a Redis server (a fake speaking RESP on a unix socket)."""

from __future__ import annotations

import shutil
import socket
import stat
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from dynod.addons import postgres, redis
from dynod.addons.manager import AddonManager
from dynod.addons.postgres import PostgresCluster
from dynod.addons.redis import Instance, RedisInstances
from dynod.errors import FailedPrecondition, InvalidArgument
from dynod.model.addons import PLANS, POSTGRES, REDIS

PG_PLAN = PLANS[POSTGRES]["essential-0"]
REDIS_PLAN = PLANS[REDIS]["mini"]
GATEWAY = "10.213.0.1"


# --- pg_hba.conf and names ------------------------------------------------------------


def test_pg_hba_admits_exactly_the_given_addresses_and_rejects_the_rest() -> None:
    text = postgres.render_hba({"postgresql-curved-12345": {"10.213.0.9", "10.213.0.10"},
                                "postgresql-flat-2": set()})
    rules = [line.split() for line in text.splitlines() if not line.startswith("#")]
    assert rules == [
        ["local", "all", "postgres", "peer", "map=dynod"],
        ["local", "all", "all", "reject"],
        ["host", "postgresql_curved_12345", "postgresql_curved_12345", "10.213.0.9/32",
         "scram-sha-256"],
        ["host", "postgresql_curved_12345", "postgresql_curved_12345", "10.213.0.10/32",
         "scram-sha-256"],
        ["host", "all", "all", "0.0.0.0/0", "reject"],
        ["host", "all", "all", "::/0", "reject"],
    ]
    assert postgres.parse_hba(text) == {"postgresql-curved-12345": {"10.213.0.9",
                                                                    "10.213.0.10"}}


def test_pg_hba_with_nobody_admitted_rejects_every_host() -> None:
    rules = [line for line in postgres.render_hba({}).splitlines() if line.startswith("host")]
    assert rules == ["host  all  all  0.0.0.0/0  reject", "host  all  all  ::/0  reject"]


def test_pg_hba_refuses_what_is_not_an_address() -> None:
    with pytest.raises(InvalidArgument, match=r"'10.213.0.0/24' is not an IPv4 address"):
        postgres.render_hba({"postgresql-a-1": {"10.213.0.0/24"}})
    with pytest.raises(InvalidArgument, match="cannot name a database"):
        postgres.database_name("Bad;Name")


def test_names_in_the_cluster_and_units() -> None:
    assert postgres.database_name("postgresql-curved-12345") == "postgresql_curved_12345"
    assert postgres.addon_of_database("postgresql_curved_12345") == "postgresql-curved-12345"
    assert redis.unit_name("redis-shiny-42") == "dynod-redis@redis-shiny-42.service"
    with pytest.raises(InvalidArgument):
        redis.unit_name("../etc")


def test_scram_verifier_has_postgres_format_and_hides_the_password() -> None:
    v1 = postgres.scram_verifier("secret", salt=b"0123456789abcdef")
    v2 = postgres.scram_verifier("secret", salt=b"0123456789abcdef")
    assert v1 == v2
    assert v1.startswith("SCRAM-SHA-256$4096:MDEyMzQ1Njc4OWFiY2RlZg==$")
    assert "secret" not in v1
    assert postgres.scram_verifier("secret") != v1  # a random salt each time


def test_settings_listen_on_the_gateway_and_the_admin_socket() -> None:
    text = postgres.render_settings(GATEWAY, 5432, Path("/run/dynod-postgresql"))
    assert "listen_addresses = '10.213.0.1'" in text
    assert "unix_socket_directories = '/run/dynod-postgresql'" in text
    assert "password_encryption = 'scram-sha-256'" in text


def test_no_postgresql_installed_names_the_package(tmp_path: Path) -> None:
    with pytest.raises(FailedPrecondition) as exc:
        postgres.pick_bindir(tmp_path)
    assert exc.value.message == ("heroku-postgresql needs Debian's postgresql: apt install "
                                 "postgresql")


def test_the_highest_installed_postgresql_is_picked(tmp_path: Path) -> None:
    for version in ("13", "15", "9"):
        (tmp_path / version / "bin").mkdir(parents=True)
        (tmp_path / version / "bin" / "postgres").touch()
    (tmp_path / "17" / "bin").mkdir(parents=True)  # the client only: no server
    assert postgres.pick_bindir(tmp_path) == tmp_path / "15" / "bin"


# --- redis.conf -------------------------------------------------------------------------


def _instance(**changes: object) -> Instance:
    values: dict[str, object] = dict(addon="redis-shiny-42", plan="mini", port=6380,
                                     memory_mb=25, connections=20,
                                     password_sha256=redis.sha256("apppass"),
                                     admin_password="adminpass")  # noqa: S106
    values.update(changes)
    return Instance(**values)  # type: ignore[arg-type]


def test_redis_conf_carries_the_plan_limits_and_no_password() -> None:
    text = redis.render_conf(_instance(), GATEWAY, Path("/var/lib/dynod/addons/redis/r"),
                             Path("/run/dynod-redis/r/redis.sock"))
    lines = set(text.splitlines())
    assert {"bind 10.213.0.1", "port 6380", "maxmemory 25mb", "maxmemory-policy noeviction",
            "maxclients 21", "appendonly yes", "dir /var/lib/dynod/addons/redis/r",
            "supervised systemd", "unixsocket /run/dynod-redis/r/redis.sock"} <= lines
    assert (f"user default on #{redis.sha256('apppass')} ~* &* +@all -@admin") in lines
    assert f"user dynod on #{redis.sha256('adminpass')} ~* &* +@all" in lines
    assert "apppass" not in text and "adminpass" not in text


def test_redis_ports_are_the_lowest_free_ones() -> None:
    assert redis.allocate_port(set()) == 6380
    assert redis.allocate_port({6380, 6382}) == 6381
    with pytest.raises(FailedPrecondition, match="every Redis port 6380-6999 is taken"):
        redis.allocate_port(set(range(6380, 7000)))


def test_resp_encoding_and_client_list_parsing() -> None:
    assert redis.encode_command(["SET", "k", "vé"]) == (
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\nv\xc3\xa9\r\n")
    rows = redis.parse_client_list(
        "id=3 addr=10.213.0.9:40122 laddr=10.213.0.1:6380 fd=8 name= user=default\n"
        "id=4 addr=/run/dynod-redis/r/redis.sock:0 laddr=x fd=9 name= user=dynod\n")
    assert [(r["id"], r["addr"]) for r in rows] == [
        ("3", "10.213.0.9:40122"), ("4", "/run/dynod-redis/r/redis.sock:0")]


# --- RedisInstances against a fake server ---------------------------------------------


class FakeRedis:
    """Answers RESP commands on a unix socket; records them (AUTH included)."""

    def __init__(self, path: Path, answer: Callable[[list[str]], bytes]) -> None:
        self.path = path
        self.answer = answer
        self.commands: list[list[str]] = []
        path.parent.mkdir(parents=True, exist_ok=True)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn, conn.makefile("rb") as f:
                while True:
                    head = f.readline()
                    if not head:
                        break
                    args = []
                    for _ in range(int(head[1:])):
                        size = int(f.readline()[1:])
                        args.append(f.read(size + 2)[:-2].decode())
                    self.commands.append(args)
                    conn.sendall(b"+OK\r\n" if args[0] == "AUTH" else self.answer(args))

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def short_dir() -> Iterator[Path]:
    # A unix socket's path must stay under 108 bytes: pytest's tmp_path may not.
    path = Path(tempfile.mkdtemp(prefix="dyr", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class Recorder:
    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, argv: Sequence[str]) -> str:
        self.calls.append(list(argv))
        return ""


def _instances(root: Path, systemctl: Recorder) -> RedisInstances:
    server = root / "redis-server"
    server.touch()
    return RedisInstances(root / "data", GATEWAY, server=server, socket_root=root / "s",
                          systemctl=systemctl, chown=lambda _p, _u, _g: None,
                          user_exists=lambda _u: True)


def test_redis_provision_writes_its_record_and_conf_and_starts_its_unit(
        short_dir: Path) -> None:
    systemctl = Recorder()
    instances = _instances(short_dir, systemctl)
    creds, new = instances.provision("redis-shiny-42", REDIS_PLAN)
    assert new
    assert (creds.host, creds.port, creds.user, creds.database) == (GATEWAY, 6380,
                                                                    "default", "0")
    assert creds.url(REDIS) == f"redis://default:{creds.password}@10.213.0.1:6380/0"
    data = short_dir / "data" / "redis-shiny-42"
    assert stat.S_IMODE((data / "instance.json").stat().st_mode) == 0o600
    assert stat.S_IMODE((data / "redis.conf").stat().st_mode) == 0o640
    conf = (data / "redis.conf").read_text()
    assert f"#{redis.sha256(creds.password)}" in conf and creds.password not in conf
    assert f"dir {data / 'data'}" in conf.splitlines()  # the server writes only there
    assert (data / "data").is_dir()
    assert systemctl.calls == [["start", "dynod-redis@redis-shiny-42.service"]]
    # The next add-on gets the next port; the ports are read back by a new manager.
    other, _ = _instances(short_dir, systemctl).provision("redis-other-7", REDIS_PLAN)
    assert other.port == 6381
    systemctl.calls.clear()
    _instances(short_dir, systemctl).ensure_running()
    assert systemctl.calls == [["start", "dynod-redis@redis-other-7.service",
                                "dynod-redis@redis-shiny-42.service"]]
    instances.deprovision("redis-shiny-42")
    assert not data.exists()
    assert ["stop", "dynod-redis@redis-shiny-42.service"] in systemctl.calls
    assert instances.names() == ["redis-other-7"]


def test_redis_not_installed_names_the_package_and_writes_nothing(short_dir: Path) -> None:
    systemctl = Recorder()
    instances = RedisInstances(short_dir / "data", GATEWAY, server=short_dir / "none",
                               systemctl=systemctl)
    with pytest.raises(FailedPrecondition) as exc:
        instances.provision("redis-shiny-42", REDIS_PLAN)
    assert exc.value.message == ("heroku-redis needs Debian's redis-server: apt install "
                                 "redis-server")
    assert not (short_dir / "data").exists()
    assert systemctl.calls == []


def test_redis_admit_ends_the_sessions_of_addresses_not_admitted(short_dir: Path) -> None:
    instances = _instances(short_dir, Recorder())
    instances.provision("redis-shiny-42", REDIS_PLAN)
    clients = ("id=3 addr=10.213.0.9:40122 user=default\n"
               "id=5 addr=10.213.0.12:40123 user=default\n"
               "id=7 addr=/run/x/redis.sock:0 user=dynod\n")

    def answer(args: list[str]) -> bytes:
        if args[:2] == ["CLIENT", "LIST"]:
            return b"$%d\r\n%s\r\n" % (len(clients), clients.encode())
        return b":1\r\n"

    fake = FakeRedis(instances.socket_path("redis-shiny-42"), answer)
    try:
        instances.admit({"redis-shiny-42": {"10.213.0.9"}})
        kills = [c for c in fake.commands if c[:2] == ["CLIENT", "KILL"]]
        assert kills == [["CLIENT", "KILL", "ID", "5"]]
        record = Instance.read(short_dir / "data" / "redis-shiny-42" / "instance.json")
        assert fake.commands[0] == ["AUTH", "dynod", record.admin_password]
        fake.commands.clear()
        instances.admit({})  # detached: every TCP session ends
        assert [c for c in fake.commands if c[:2] == ["CLIENT", "KILL"]] == [
            ["CLIENT", "KILL", "ID", "3"], ["CLIENT", "KILL", "ID", "5"]]
        # Rotation: the new hash in ACL and conf, the default user's sessions killed.
        fake.commands.clear()
        creds = instances.rotate("redis-shiny-42")
        assert ["ACL", "SETUSER", "default", "resetpass",
                f"#{redis.sha256(creds.password)}"] in fake.commands
        assert ["CLIENT", "KILL", "USER", "default"] in fake.commands
        conf = (short_dir / "data" / "redis-shiny-42" / "redis.conf").read_text()
        assert f"#{redis.sha256(creds.password)}" in conf
    finally:
        fake.close()


# --- the Postgres cluster with psql faked ---------------------------------------------


class FakePsql:
    """Stands in for the process boundary: records argv and stdin, answers queries."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], str | None]] = []
        self.load_time = 0
        self.roles: set[str] = set()

    def __call__(self, argv: Sequence[str], stdin: str | None) -> str:
        self.calls.append((list(argv), stdin))
        sql = stdin or ""
        if "SHOW listen_addresses" in sql:
            return GATEWAY + "\n"
        if "SHOW port" in sql:
            return "5432\n"
        if "pg_conf_load_time" in sql:
            return f"{self.load_time}\n"
        if "pg_reload_conf" in sql:
            self.load_time += 1
        if "FROM pg_roles WHERE rolname" in sql and "SELECT 1" in sql:
            return "1\n" if any(r in sql for r in self.roles) else ""
        return ""

    @property
    def sql(self) -> list[str]:
        return [stdin or "" for _argv, stdin in self.calls]


def _cluster(tmp_path: Path, psql: FakePsql, systemctl: Recorder) -> PostgresCluster:
    bindir = tmp_path / "versions" / "15" / "bin"
    bindir.mkdir(parents=True)
    (bindir / "postgres").touch()
    data = tmp_path / "pg" / "data"
    data.mkdir(parents=True)
    (tmp_path / "pg" / "bin").symlink_to(bindir)
    (data / "PG_VERSION").write_text("15\n")
    (data / "pg_hba.conf").write_text(postgres.render_hba({}))
    return PostgresCluster(tmp_path / "pg", GATEWAY, versions_dir=tmp_path / "versions",
                           run=psql, systemctl=systemctl, chown=lambda _p, _u, _g: None)


def test_postgres_provision_makes_a_limited_role_owning_its_database(tmp_path: Path) -> None:
    psql, systemctl = FakePsql(), Recorder()
    cluster = _cluster(tmp_path, psql, systemctl)
    creds = cluster.provision("postgresql-curved-12345", PG_PLAN)
    assert (creds.host, creds.port, creds.user, creds.database) == (
        GATEWAY, 5432, "postgresql_curved_12345", "postgresql_curved_12345")
    assert systemctl.calls[0] == ["start", "dynod-postgresql.service"]
    sql = "".join(psql.sql)
    assert ('CREATE ROLE "postgresql_curved_12345" LOGIN PASSWORD \'SCRAM-SHA-256$4096:'
            in sql)
    assert "CONNECTION LIMIT 20 NOSUPERUSER NOCREATEDB NOCREATEROLE" in sql
    assert ('CREATE DATABASE "postgresql_curved_12345" OWNER "postgresql_curved_12345"'
            in sql)
    assert 'REVOKE ALL ON DATABASE "postgresql_curved_12345" FROM PUBLIC' in sql
    # The password is on no command line and in no statement (a SCRAM verifier is).
    assert all(creds.password not in " ".join(argv) + (stdin or "")
               for argv, stdin in psql.calls)
    # Every statement goes to the superuser over the unix socket.
    argv = psql.calls[0][0]
    assert argv[:2] == [str(tmp_path / "versions" / "15" / "bin" / "psql"), "-X"]
    assert argv[argv.index("-h") + 1] == "/run/dynod-postgresql"
    assert argv[argv.index("-U") + 1] == "postgres"


def test_a_cluster_whose_server_was_removed_names_its_package(tmp_path: Path) -> None:
    psql, systemctl = FakePsql(), Recorder()
    cluster = _cluster(tmp_path, psql, systemctl)
    newer = tmp_path / "versions" / "17" / "bin"
    newer.mkdir(parents=True)
    (newer / "postgres").touch()
    (tmp_path / "versions" / "15" / "bin" / "postgres").unlink()  # apt remove postgresql-15
    with pytest.raises(FailedPrecondition) as exc:
        cluster.provision("postgresql-curved-12345", PG_PLAN)
    assert "is version 15, and its server is not installed: apt install postgresql-15" \
        in exc.value.message
    assert systemctl.calls == [] and psql.calls == []


def test_postgres_admit_rewrites_hba_waits_for_the_reload_and_ends_other_sessions(
        tmp_path: Path) -> None:
    psql, systemctl = FakePsql(), Recorder()
    cluster = _cluster(tmp_path, psql, systemctl)
    cluster.admit({"postgresql-curved-12345": {"10.213.0.9"}})
    hba = (tmp_path / "pg" / "data" / "pg_hba.conf").read_text()
    assert ("host  postgresql_curved_12345  postgresql_curved_12345  10.213.0.9/32  "
            "scram-sha-256") in hba
    assert cluster.admitted() == {"postgresql-curved-12345": {"10.213.0.9"}}
    sql = psql.sql
    reload_at = next(i for i, s in enumerate(sql) if "pg_reload_conf" in s)
    # After the reload, a new session saw the new load time before admit went on.
    assert any("pg_conf_load_time" in s for s in sql[reload_at + 1:])
    assert ("(datname, host(client_addr)) NOT IN (('postgresql_curved_12345', "
            "'10.213.0.9'))") in sql[-1]
    psql.calls.clear()
    cluster.admit({"postgresql-curved-12345": {"10.213.0.9"}})  # unchanged: no reload
    assert not any("pg_reload_conf" in s for s in psql.sql)
    cluster.admit({})
    assert "AND TRUE" in psql.sql[-1]


def test_manager_sends_each_name_to_its_server(tmp_path: Path, short_dir: Path) -> None:
    psql, systemctl = FakePsql(), Recorder()
    network: list[str] = []
    instances = _instances(short_dir, systemctl)
    manager = AddonManager(tmp_path, GATEWAY, lambda: network.append("bridge"),
                           postgres=_cluster(tmp_path, psql, systemctl), redis=instances)
    instances.provision("redis-shiny-42", REDIS_PLAN)
    fake = FakeRedis(instances.socket_path("redis-shiny-42"), lambda _a: b"$0\r\n\r\n")
    try:
        manager.admit({"postgresql-curved-12345": {"10.213.0.9"},
                       "redis-shiny-42": {"10.213.0.12"}})
    finally:
        fake.close()
    assert network == ["bridge"]
    assert cluster_admitted(tmp_path) == {"postgresql-curved-12345": {"10.213.0.9"}}
    assert ["CLIENT", "LIST"] in fake.commands
    with pytest.raises(InvalidArgument, match="unknown add-on service"):
        manager.reset("x-y-z", "heroku-kafka")


def cluster_admitted(tmp_path: Path) -> dict[str, set[str]]:
    return postgres.parse_hba((tmp_path / "pg" / "data" / "pg_hba.conf").read_text())


def test_manager_with_nothing_provisioned_starts_nothing(tmp_path: Path) -> None:
    calls: list[str] = []
    manager = AddonManager(tmp_path, GATEWAY, lambda: calls.append("bridge"))
    manager.ensure_running()
    # dynod's start tells the servers who may reach them even when there are none: that
    # must not make the bridge either (it is made when the first dyno needs it).
    manager.admit({})
    assert calls == []
