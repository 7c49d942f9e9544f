"""One Redis server per heroku-redis add-on.

Debian's ``redis-server`` runs each add-on as ``dynod-redis@<addon>.service`` (a template
instance, User=redis, slice ``dynod-addons.slice``) from
``/var/lib/dynod/addons/redis/<addon>/redis.conf``, which dynod renders from the
add-on's record ``instance.json`` (port, plan limits, password hashes) beside it; both
are root's (the server only reads the conf). The server keeps its RDB file and
append-only log in ``<addon>/data``, the one directory it may write, so data survives a
restart. It listens on the dynos' bridge gateway at a port allocated per add-on
(recorded, so it survives restarts) and on a unix socket for dynod.

Two ACL users: ``default``, the app's (``redis://default:PASSWORD@10.213.0.1:6380/0``),
with every command but the ``@admin`` ones (CONFIG, DEBUG, SHUTDOWN, MODULE,
REPLICAOF, CLIENT KILL, ACL ...), so no app lifts its plan's limits; and ``dynod``, the
platform's, over the unix socket. The conf file holds only SHA-256 hashes of the
passwords. ``maxmemory`` is the plan's with ``noeviction`` (writes past it fail with
Redis' OOM error, data is never dropped silently); ``maxclients`` is the plan's plus
one kept for dynod's own session (Postgres' superuser_reserved_connections, for Redis).

Redis has no per-address rule: which dynos reach the port is the bridge's nftables'
business; when an address loses access, :meth:`RedisInstances.admit` ends its sessions.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import pwd
import secrets
import shutil
import socket
import threading
from collections.abc import Callable, Mapping, Sequence, Set
from dataclasses import asdict, dataclass
from pathlib import Path

from dynod.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from dynod.model.addons import ADDON_NAME_RE, Credentials, Plan
from dynod.system import processes, systemctl

SERVER = Path("/usr/bin/redis-server")
OS_USER = "redis"
UNIT_TEMPLATE = "dynod-redis@{}.service"
SOCKET_ROOT = Path("/run/dynod-redis")  # RuntimeDirectory=dynod-redis/%i of the unit
PACKAGE_HINT = "heroku-redis needs Debian's redis-server: apt install redis-server"
FIRST_PORT = 6380  # 6379 is Debian's own redis-server's, on loopback
LAST_PORT = 6999
ADMIN_USER = "dynod"
ADMIN_RESERVED = 1
RECORD = "instance.json"

Systemctl = Callable[[Sequence[str]], str]
Chown = Callable[[Path, str, str], None]  # (path, user, group)


def _systemctl(argv: Sequence[str]) -> str:
    return systemctl.systemctl(argv, timeout=120.0)


def _chown(path: Path, user: str, group: str) -> None:
    shutil.chown(path, user, group)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def unit_name(addon: str) -> str:
    """``dynod-redis@redis-curved-12345.service``. Add-on names are already valid
    instance names (lower case letters, digits and dashes; ``%i`` keeps the dashes)."""
    if not ADDON_NAME_RE.match(addon):
        raise InvalidArgument(f'add-on name "{addon}" is not valid for a Redis instance')
    return UNIT_TEMPLATE.format(addon)


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Instance:
    """What ``instance.json`` records of one add-on's server."""

    addon: str
    plan: str
    port: int
    memory_mb: int
    connections: int
    password_sha256: str  # the app's (ACL user default)
    admin_password: str  # dynod's (ACL user dynod); the file is root's, mode 0600

    @staticmethod
    def read(path: Path) -> Instance:
        raw = json.loads(path.read_text())
        return Instance(**{k: raw[k] for k in Instance.__dataclass_fields__})


def allocate_port(used: Set[int]) -> int:
    """The lowest free port of FIRST_PORT..LAST_PORT. Raises FailedPrecondition."""
    for port in range(FIRST_PORT, LAST_PORT + 1):
        if port not in used:
            return port
    raise FailedPrecondition(f"every Redis port {FIRST_PORT}-{LAST_PORT} is taken; "
                             "destroy an unused heroku-redis add-on first")


def render_conf(inst: Instance, host: str, data_dir: Path, socket_path: Path) -> str:
    """``redis.conf`` of one instance."""
    ipaddress.IPv4Address(host)
    return "\n".join([
        f"# Written by dynod (dynod.addons.redis) for add-on {inst.addon} "
        f"(heroku-redis:{inst.plan}); edits are lost at its next start.",
        f"bind {host}",
        f"port {inst.port}",
        # Passwords are required (ACL below); protected mode only refuses non-loopback
        # clients when there is none.
        "protected-mode no",
        f"unixsocket {socket_path}",
        "unixsocketperm 700",
        "daemonize no",
        "supervised systemd",
        'logfile ""',
        f"dir {data_dir}",
        "dbfilename dump.rdb",
        "save 3600 1 300 100 60 10000",
        "appendonly yes",
        'appenddirname "appendonlydir"',
        "appendfsync everysec",
        f"maxmemory {inst.memory_mb}mb",
        "maxmemory-policy noeviction",
        f"maxclients {inst.connections + ADMIN_RESERVED}",
        "timeout 0",
        "tcp-keepalive 300",
        f"user default on #{inst.password_sha256} ~* &* +@all -@admin",
        f"user {ADMIN_USER} on #{sha256(inst.admin_password)} ~* &* +@all",
        "",
    ])


# --- a RESP client for dynod's own session ------------------------------------------


class RedisError(Exception):
    """The server answered with an error (``-ERR ...``)."""


def encode_command(args: Sequence[str]) -> bytes:
    out = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        raw = arg.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(out)


class _Reader:
    def __init__(self, sock: socket.socket) -> None:
        self._file = sock.makefile("rb")

    def _line(self) -> bytes:
        line = self._file.readline()
        if not line.endswith(b"\r\n"):
            raise ConnectionError("Redis closed the connection")
        return line[:-2]

    def reply(self) -> object:
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RedisError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            if size < 0:
                return None
            data = self._file.read(size + 2)
            return data[:-2].decode("utf-8", "replace")
        if kind == b"*":
            count = int(rest)
            return None if count < 0 else [self.reply() for _ in range(count)]
        raise ConnectionError(f"Redis sent {line[:40]!r}")


def call(socket_path: Path, password: str, *commands: Sequence[str],
         timeout: float = 10.0) -> list[object]:
    """Run ``commands`` as dynod's ACL user over the unix socket; their replies.
    Raises Unavailable when the server cannot be reached, RedisError for an error reply."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(socket_path))
            reader = _Reader(sock)
            sock.sendall(encode_command(["AUTH", ADMIN_USER, password]))
            reader.reply()
            sock.sendall(b"".join(encode_command(c) for c in commands))
            return [reader.reply() for _ in commands]
    except (OSError, ConnectionError) as exc:
        raise Unavailable(f"Redis at {socket_path}: {exc}") from exc


def parse_client_list(text: str) -> list[dict[str, str]]:
    """``CLIENT LIST``'s lines as field dicts (``id``, ``addr``, ``user``...)."""
    return [dict(f.split("=", 1) for f in line.split() if "=" in f)
            for line in text.splitlines() if line.strip()]


def parse_info(text: str) -> dict[str, str]:
    return dict(line.split(":", 1) for line in text.splitlines()
                if ":" in line and not line.startswith("#"))


# --- the instances ------------------------------------------------------------------


class RedisInstances:
    """Every heroku-redis add-on's server, under ``root`` (``<state>/addons/redis``)."""

    def __init__(self, root: Path, host: str, *, server: Path = SERVER,
                 socket_root: Path = SOCKET_ROOT, systemctl: Systemctl = _systemctl,
                 chown: Chown = _chown,
                 user_exists: Callable[[str], bool] = _user_exists) -> None:
        self.root = root
        self.host = host
        self.server = server
        self.socket_root = socket_root
        self._systemctl = systemctl
        self._chown = chown
        self._user_exists = user_exists
        self._lock = threading.RLock()

    def dir(self, addon: str) -> Path:
        unit_name(addon)  # validates the name: it becomes a path
        return self.root / addon

    def socket_path(self, addon: str) -> Path:
        return self.socket_root / addon / "redis.sock"

    def exists(self, addon: str) -> bool:
        return (self.dir(addon) / RECORD).is_file()

    def names(self) -> list[str]:
        with contextlib.suppress(FileNotFoundError):
            return sorted(p.parent.name for p in self.root.glob(f"*/{RECORD}"))
        return []

    def _record(self, addon: str) -> Instance:
        try:
            return Instance.read(self.dir(addon) / RECORD)
        except FileNotFoundError:
            raise NotFound(f'Redis add-on "{addon}" has no server here') from None

    def _check_installed(self) -> None:
        if not self.server.is_file() or not self._user_exists(OS_USER):
            raise FailedPrecondition(PACKAGE_HINT)

    def _write(self, inst: Instance) -> bool:
        """The record (root's alone) and the conf (readable by the server's group);
        whether the conf changed."""
        home = self.dir(inst.addon)
        record = home / f".{RECORD}.tmp"
        record.write_text(json.dumps(asdict(inst), indent=1) + "\n")
        record.chmod(0o600)
        record.replace(home / RECORD)
        text = render_conf(inst, self.host, home / "data", self.socket_path(inst.addon))
        with contextlib.suppress(FileNotFoundError):
            if (home / "redis.conf").read_text() == text:
                return False
        conf = home / ".redis.conf.tmp"
        conf.write_text(text)
        conf.chmod(0o640)
        self._chown(conf, "root", OS_USER)
        conf.replace(home / "redis.conf")
        return True

    def _start(self, addons: Sequence[str]) -> None:
        if not addons:
            return
        try:
            self._systemctl(["start", *(unit_name(a) for a in addons)])
        except processes.CommandFailed as exc:
            units = " ".join(unit_name(a) for a in addons)
            raise Unavailable(f"{units} did not start: {exc}; see journalctl -u "
                              f"{unit_name(addons[0])}") from exc

    def _call(self, addon: str, *commands: Sequence[str]) -> list[object]:
        inst = self._record(addon)
        try:
            return call(self.socket_path(addon), inst.admin_password, *commands)
        except RedisError as exc:
            raise Unavailable(f"Redis add-on {addon}: {exc}") from exc

    def provision(self, addon: str, plan: Plan) -> tuple[Credentials, bool]:
        """Make and start the add-on's server; (credentials, whether it is new). A
        retried provision of an existing add-on gives it a new password."""
        with self._lock:
            self._check_installed()
            home = self.dir(addon)
            if self.exists(addon):
                return self.rotate(addon), False
            used = {Instance.read(self.root / n / RECORD).port for n in self.names()}
            password = secrets.token_hex(32)
            inst = Instance(addon, plan.name, allocate_port(used), plan.memory_mb or 25,
                            plan.connections, sha256(password), secrets.token_hex(32))
            self.root.mkdir(mode=0o755, parents=True, exist_ok=True)
            home.mkdir(mode=0o755, exist_ok=True)
            (home / "data").mkdir(mode=0o750, exist_ok=True)
            self._chown(home / "data", OS_USER, OS_USER)
            self._write(inst)
            try:
                self._start([addon])
            except Unavailable:
                self.deprovision(addon)
                raise
            return self.credentials(inst, password), True

    def credentials(self, inst: Instance, password: str) -> Credentials:
        # The user is named: redis-cli 7 sends an empty one in ``redis://:pw@`` and fails.
        return Credentials(self.host, inst.port, "default", password, "0")

    def deprovision(self, addon: str) -> None:
        with self._lock:
            unit = unit_name(addon)
            with contextlib.suppress(processes.CommandFailed):
                self._systemctl(["stop", unit])
            with contextlib.suppress(processes.CommandFailed):
                self._systemctl(["reset-failed", unit])
            shutil.rmtree(self.dir(addon), ignore_errors=True)

    def rotate(self, addon: str) -> Credentials:
        """A new password for ``default``; its sessions are ended."""
        with self._lock:
            inst = self._record(addon)
            password = secrets.token_hex(32)
            new = Instance(**{**asdict(inst), "password_sha256": sha256(password)})
            self._start([addon])
            self._write(new)
            self._call(addon, ["ACL", "SETUSER", "default", "resetpass",
                               f"#{new.password_sha256}"],
                       ["CLIENT", "KILL", "USER", "default"])
            return self.credentials(new, password)

    def reset(self, addon: str) -> None:
        with self._lock:
            self._start([addon])
            self._call(addon, ["FLUSHALL", "SYNC"])

    def info(self, addon: str) -> dict[str, str]:
        inst = self._record(addon)
        self._start([addon])
        (text,) = self._call(addon, ["INFO", "everything"])
        info = parse_info(str(text))
        keys = sum(int(v.split(",")[0].removeprefix("keys="))
                   for k, v in info.items() if k.startswith("db"))
        used = max(0, int(info.get("connected_clients", "1")) - 1)  # not dynod's own
        return {"Status": "available", "Version": info.get("redis_version", "?"),
                "Connections": f"{used}/{inst.connections}",
                "Maxmemory": f"{inst.memory_mb} MB", "Maxmemory Policy": "noeviction",
                "Used Memory": info.get("used_memory_human", "?"), "Keys": str(keys),
                "Persistence": "AOF (everysec) and RDB"}

    def ensure_running(self) -> None:
        """Rewrite every instance's conf (the gateway may have changed) and start it."""
        with self._lock:
            names = self.names()
            if names:
                self._check_installed()
            changed = [a for a in names if self._write(self._record(a))]
            self._start(names)
            # A running server given a new address (the pool changed) by this start.
            if changed:
                with contextlib.suppress(processes.CommandFailed):
                    self._systemctl(["try-restart", *(unit_name(a) for a in changed)])

    def admit(self, admitted: Mapping[str, Set[str]]) -> None:
        """End the TCP sessions of every address not admitted to each instance."""
        with self._lock:
            for addon in self.names():
                allowed = admitted.get(addon, set())
                (text,) = self._call(addon, ["CLIENT", "LIST"])
                kill = []
                for client in parse_client_list(str(text)):
                    ip = client.get("addr", "").rpartition(":")[0]
                    try:
                        ipaddress.IPv4Address(ip)
                    except ValueError:
                        continue  # the unix socket: dynod's own session
                    if ip not in allowed:
                        kill.append(["CLIENT", "KILL", "ID", client["id"]])
                if kill:
                    self._call(addon, *kill)
