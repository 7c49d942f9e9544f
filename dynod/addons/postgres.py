"""The one PostgreSQL cluster behind every heroku-postgresql add-on.

Debian's server (``/usr/lib/postgresql/<major>/bin``, the highest installed when the
cluster is made) runs the cluster ``initdb``'d by dynod in
``/var/lib/dynod/addons/postgresql/data`` as ``dynod-postgresql.service`` (User=postgres,
slice ``dynod-addons.slice`` under ``dynod.slice``). It listens on the dynos' bridge
gateway (``10.213.0.1:5432``) for dynos and on a unix socket in ``/run/dynod-postgresql``
for dynod. Each add-on is a database and a login role of the same name
(``postgresql-curved-12345`` -> ``postgresql_curved_12345``), the role owning its
database, with a random password stored as a SCRAM-SHA-256 verifier and ``CONNECTION
LIMIT`` from the plan; PUBLIC may not connect to it.

``pg_hba.conf`` is the address filter: the superuser only over the unix socket (peer,
root and postgres mapped to ``postgres``), and for each add-on one ``host DB ROLE
ADDR/32 scram-sha-256`` line per admitted dyno address; everything else is ``reject``,
so a dyno of another app is turned away for that database before a password is asked.

For the rest of ``dynod.addons`` (backups, ``pg:psql``) -- the superuser API:

- ``cluster.argv(tool, database)`` (also ``admin_argv``): argv running ``psql``,
  ``pg_dump``, ``pg_restore`` (any client tool taking ``-d``) of the cluster's major
  version as the superuser over the unix socket; append the tool's own options and run
  it as root with ``dynod.system.processes``, e.g.
  ``processes.run_files(cluster.argv("pg_dump", db) + ["-Fc"], stdout_path=...)``.
- ``cluster.sql(text, database="postgres")``: run SQL (several statements, each its own
  transaction, stopping at the first error) and return psql's unaligned ``-At`` output.
- ``cluster.create_database(name, owner=None)`` / ``cluster.drop_database(name)``: a
  scratch database (dropped with ``WITH (FORCE)``, no error if missing).
- ``database_name(addon)`` / ``role_name(addon)``: an add-on's names in the cluster.
- ``cluster.socket_dir``, ``cluster.port``, ``cluster.bindir()``, ``SUPERUSER``.

All SQL reaches psql on stdin, never on its command line (passwords stay out of ``ps``);
passwords reach the server only as SCRAM verifiers (never in its logs).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import ipaddress
import os
import re
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Mapping, Sequence, Set
from pathlib import Path

from dynod.errors import FailedPrecondition, InvalidArgument, Unavailable
from dynod.model.addons import Credentials, Plan
from dynod.system import processes, systemctl

UNIT = "dynod-postgresql.service"
SUPERUSER = "postgres"
OS_USER = "postgres"
DEFAULT_PORT = 5432
SOCKET_DIR = Path("/run/dynod-postgresql")  # RuntimeDirectory= of the unit
VERSIONS_DIR = Path("/usr/lib/postgresql")
PACKAGE_HINT = "heroku-postgresql needs Debian's postgresql: apt install postgresql"
# The cluster is shared: room for every plan's CONNECTION LIMIT on a small machine, the
# superuser's reserve on top (PostgreSQL's superuser_reserved_connections).
MAX_CONNECTIONS = 500
SCRAM_ITERATIONS = 4096

# (argv, stdin) -> stdout; raises processes.CommandFailed. The process boundary.
Run = Callable[[Sequence[str], str | None], str]
Systemctl = Callable[[Sequence[str]], str]
Chown = Callable[[Path, str, str], None]  # (path, user, group)

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


def _run(argv: Sequence[str], stdin: str | None) -> str:
    return processes.output(argv, input=stdin, timeout=120.0)


def _chown(path: Path, user: str, group: str) -> None:
    shutil.chown(path, user, group)


# --- pure parts ---------------------------------------------------------------------


def database_name(addon: str) -> str:
    """``postgresql-curved-12345`` -> ``postgresql_curved_12345``: a plain identifier
    (no quoting needed in psql's ``\\c``). Add-on names have no underscores, so the
    mapping is one to one."""
    name = addon.replace("-", "_")
    if not _NAME_RE.match(name):
        raise InvalidArgument(f'add-on name "{addon}" cannot name a database; use lower '
                              "case letters, digits and dashes, 63 at most")
    return name


def role_name(addon: str) -> str:
    return database_name(addon)


def addon_of_database(database: str) -> str:
    return database.replace("_", "-")


def ident(name: str) -> str:
    """A quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def literal(text: str) -> str:
    """A quoted SQL string literal (standard_conforming_strings is on)."""
    return "'" + text.replace("'", "''") + "'"


def new_password() -> str:
    # 64 hex digits, as long as Heroku's; safe in a URL unquoted.
    return secrets.token_hex(32)


def scram_verifier(password: str, salt: bytes | None = None,
                   iterations: int = SCRAM_ITERATIONS) -> str:
    """The ``SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>`` PostgreSQL stores for
    ``password`` (RFC 5802, 7677), so the plain password never reaches the server."""
    salt = os.urandom(16) if salt is None else salt
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def _addresses(addon: str, addresses: Set[str]) -> list[str]:
    out = []
    for text in addresses:
        try:
            out.append(ipaddress.IPv4Address(text))
        except ValueError:
            raise InvalidArgument(f'add-on "{addon}": {text!r} is not an IPv4 address') \
                from None
    return [str(a) for a in sorted(out)]


def render_hba(admitted: Mapping[str, Set[str]]) -> str:
    """``pg_hba.conf`` letting exactly ``admitted`` (add-on -> dyno addresses) in.

    PostgreSQL takes the first line that matches type, database, user and address; a
    ``reject`` line ends the attempt before any password is asked ("pg_hba.conf rejects
    connection for host ...")."""
    lines = [
        "# Written by dynod (dynod.addons.postgres) from the add-ons' attachments;",
        "# edits are lost at the next attach, detach or dyno start.",
        "# TYPE  DATABASE  USER  ADDRESS  METHOD",
        f"local  all  {SUPERUSER}  peer  map=dynod",
        "local  all  all  reject",
    ]
    for addon in sorted(admitted):
        db, role = database_name(addon), role_name(addon)
        for address in _addresses(addon, admitted[addon]):
            lines.append(f"host  {db}  {role}  {address}/32  scram-sha-256")
    lines += ["host  all  all  0.0.0.0/0  reject", "host  all  all  ::/0  reject", ""]
    return "\n".join(lines)


def parse_hba(text: str) -> dict[str, set[str]]:
    """The admitted sets of a ``pg_hba.conf`` :func:`render_hba` wrote."""
    found: dict[str, set[str]] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 5 and fields[0] == "host" and fields[4] == "scram-sha-256":
            address = fields[3].removesuffix("/32")
            found.setdefault(addon_of_database(fields[1]), set()).add(address)
    return found


def render_ident() -> str:
    """``pg_ident.conf``: root (dynod) and postgres may be the superuser over the
    socket; no one else."""
    return f"# Written by dynod.\ndynod  root  {SUPERUSER}\ndynod  {OS_USER}  {SUPERUSER}\n"


def render_settings(host: str, port: int, socket_dir: Path) -> str:
    """``dynod.conf``, included by the cluster's ``postgresql.conf``."""
    ipaddress.IPv4Address(host)
    return "\n".join([
        "# Written by dynod (dynod.addons.postgres) at each start; edits are lost.",
        f"listen_addresses = {literal(host)}",
        f"port = {port}",
        f"unix_socket_directories = {literal(str(socket_dir))}",
        "unix_socket_permissions = 0700",
        f"max_connections = {MAX_CONNECTIONS}",
        "superuser_reserved_connections = 5",
        "password_encryption = 'scram-sha-256'",
        # To journald (the unit's stderr), one line per message.
        "logging_collector = off",
        "log_destination = 'stderr'",
        "log_line_prefix = '%q%u@%d '",
        "",
    ])


def pick_bindir(versions_dir: Path = VERSIONS_DIR) -> Path:
    """The highest installed major version's bin directory. Raises FailedPrecondition
    naming the Debian package when there is none."""
    found = []
    with contextlib.suppress(OSError):
        for child in versions_dir.iterdir():
            if child.name.isdigit() and (child / "bin" / "postgres").is_file():
                found.append((int(child.name), child / "bin"))
    if not found:
        raise FailedPrecondition(PACKAGE_HINT)
    return max(found)[1]


def create_role_sql(role: str, verifier: str, connections: int) -> str:
    return (f"CREATE ROLE {ident(role)} LOGIN PASSWORD {literal(verifier)} "
            f"CONNECTION LIMIT {int(connections)} NOSUPERUSER NOCREATEDB NOCREATEROLE "
            "NOREPLICATION NOBYPASSRLS;\n")


def create_database_sql(database: str, owner: str) -> str:
    return (f"CREATE DATABASE {ident(database)} OWNER {ident(owner)} TEMPLATE template0 "
            "ENCODING 'UTF8';\n"
            f"REVOKE ALL ON DATABASE {ident(database)} FROM PUBLIC;\n"
            f"GRANT ALL ON DATABASE {ident(database)} TO {ident(owner)};\n")


# --- the cluster --------------------------------------------------------------------


class PostgresCluster:
    """The cluster under ``root`` (``<state_dir>/addons/postgresql``), reached by dynod
    over ``socket_dir`` and by dynos at ``host:port``. Thread-safe."""

    def __init__(self, root: Path, host: str, port: int = DEFAULT_PORT, *,
                 socket_dir: Path = SOCKET_DIR, versions_dir: Path = VERSIONS_DIR,
                 run: Run = _run, systemctl: Systemctl | None = None,
                 chown: Chown = _chown) -> None:
        self.root = root
        self.data = root / "data"
        self.host = host
        self.port = port
        self.socket_dir = socket_dir
        self.versions_dir = versions_dir
        self._run = run
        self._systemctl = systemctl or _systemctl
        self._chown = chown
        self._lock = threading.RLock()
        self._started = False

    # -- the superuser API (see the module docstring) --

    def bindir(self) -> Path:
        """The binaries of the cluster's version (the ``bin`` link made at initdb), or
        of the highest installed version before there is a cluster."""
        link = self.root / "bin"
        if link.is_symlink() and (link / "postgres").exists():
            return link.readlink()
        return pick_bindir(self.versions_dir)

    def argv(self, tool: str, database: str) -> list[str]:
        return [str(self.bindir() / tool), *(["-X"] if tool == "psql" else []), "-w",
                "-h", str(self.socket_dir), "-p", str(self.port), "-U", SUPERUSER,
                "-d", database]

    admin_argv = argv

    def sql(self, text: str, database: str = "postgres") -> str:
        """Raises Unavailable (with psql's message) when the statement fails."""
        argv = [*self.argv("psql", database), "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                "-f", "-"]
        try:
            return self._run(argv, text)
        except processes.CommandFailed as exc:
            raise Unavailable(f"PostgreSQL ({UNIT}): {exc.stderr.strip() or exc}; see "
                              f"journalctl -u {UNIT}") from exc

    def create_database(self, name: str, owner: str | None = None) -> None:
        self.sql(create_database_sql(name, owner or SUPERUSER))

    def drop_database(self, name: str) -> None:
        self.sql(f"DROP DATABASE IF EXISTS {ident(name)} WITH (FORCE);\n")

    # -- lifecycle --

    @property
    def initialized(self) -> bool:
        return (self.data / "PG_VERSION").is_file()

    def ensure_running(self) -> None:
        """Make the cluster if there is none, write its settings, start its unit (the
        unit is Type=notify: started means accepting connections)."""
        with self._lock:
            if not self.initialized:
                self._initdb()
            self._check_binaries()
            self._write(self.data / "dynod.conf", render_settings(self.host, self.port,
                                                                  self.socket_dir))
            hba = self.data / "pg_hba.conf"
            if "map=dynod" not in hba.read_text():
                self._write(hba, render_hba({}))
            try:
                self._systemctl(["start", UNIT])
            except processes.CommandFailed as exc:
                raise Unavailable(f"{UNIT} did not start: {exc}; see journalctl -u "
                                  f"{UNIT}") from exc
            # A cluster already running with another address or port (the pool or the
            # port changed): this start's settings take effect with a restart. (On another
            # port its socket is elsewhere, so the question fails.)
            try:
                current = self._setting("listen_addresses")
            except Unavailable:
                current = None
            if current != self.host:
                self._systemctl(["restart", UNIT])
            self._started = True

    def _ready(self) -> None:
        if not self._started:
            self.ensure_running()

    def _check_binaries(self) -> None:
        """The cluster runs only on the major version that made it (``bin`` links to
        it): removing that version's server package must not be mistaken for a newer
        one being able to run it."""
        if (self.root / "bin" / "postgres").is_file():
            return
        version = (self.data / "PG_VERSION").read_text().strip()
        raise FailedPrecondition(
            f"the add-ons' PostgreSQL cluster ({self.data}) is version {version}, and "
            f"its server is not installed: apt install postgresql-{version} (to move to "
            f"a newer version, upgrade the cluster with pg_upgrade first)")

    def _setting(self, name: str) -> str:
        return self.sql(f"SHOW {name};\n").strip()

    def _initdb(self) -> None:
        bindir = pick_bindir(self.versions_dir)
        self.root.mkdir(mode=0o755, parents=True, exist_ok=True)
        fresh = self.root / "data.new"
        if fresh.exists():
            shutil.rmtree(fresh)  # a half-made cluster of an interrupted start
        fresh.mkdir(mode=0o700)
        self._chown(fresh, OS_USER, OS_USER)
        try:
            self._run(["runuser", "-u", OS_USER, "--", str(bindir / "initdb"),
                       "-D", str(fresh), "-U", SUPERUSER, "--auth-local=peer",
                       "--auth-host=reject", "--encoding=UTF8", "--locale=C.UTF-8",
                       "--no-instructions"], None)
        except processes.CommandFailed as exc:
            raise Unavailable(f"initdb of the add-ons' PostgreSQL cluster failed: "
                              f"{exc.stderr.strip()}") from exc
        conf = fresh / "postgresql.conf"
        conf.write_text(conf.read_text() + "\n# dynod's settings\ninclude 'dynod.conf'\n")
        self._write(fresh / "pg_ident.conf", render_ident())
        self._write(fresh / "pg_hba.conf", render_hba({}))
        self._write(fresh / "dynod.conf", render_settings(self.host, self.port,
                                                          self.socket_dir))
        link = self.root / "bin.new"
        with contextlib.suppress(FileNotFoundError):
            link.unlink()
        link.symlink_to(bindir)
        link.replace(self.root / "bin")
        fresh.rename(self.data)
        # Once per cluster: the maintenance databases are the superuser's alone.
        self._systemctl(["start", UNIT])
        self.sql("REVOKE ALL ON DATABASE postgres FROM PUBLIC;\n"
                 "REVOKE ALL ON DATABASE template1 FROM PUBLIC;\n")

    def _write(self, path: Path, text: str) -> None:
        """Atomically, owned by the server's user (it reads them as postgres)."""
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        tmp.chmod(0o600)
        self._chown(tmp, OS_USER, OS_USER)
        tmp.replace(path)

    # -- add-ons --

    def provision(self, addon: str, plan: Plan) -> Credentials:
        """A role and its database with the plan's CONNECTION LIMIT. Provisioning an
        add-on that exists gives it a new password (a retried create)."""
        with self._lock:
            self._ready()
            db, role = database_name(addon), role_name(addon)
            password = new_password()
            exists = self.sql(f"SELECT 1 FROM pg_roles WHERE rolname = {literal(role)};\n")  # noqa: S608 - quoted
            if exists.strip():
                self.sql(f"ALTER ROLE {ident(role)} PASSWORD "
                         f"{literal(scram_verifier(password))} "
                         f"CONNECTION LIMIT {int(plan.connections)};\n")
            else:
                self.sql(create_role_sql(role, scram_verifier(password), plan.connections))
            query = f"SELECT 1 FROM pg_database WHERE datname = {literal(db)};\n"  # noqa: S608
            if not self.sql(query).strip():
                self.create_database(db, role)
            return self.credentials(addon, password)

    def credentials(self, addon: str, password: str) -> Credentials:
        return Credentials(self.host, self.port, role_name(addon), password,
                           database_name(addon))

    def deprovision(self, addon: str) -> None:
        with self._lock:
            if not self.initialized:
                return
            self._ready()
            admitted = self.admitted()
            if addon in admitted:
                del admitted[addon]
                self._apply_hba(admitted)
            self.drop_database(database_name(addon))
            self.sql(f"DROP ROLE IF EXISTS {ident(role_name(addon))};\n")

    def rotate(self, addon: str) -> Credentials:
        """A new password; every session of the role is ended (Heroku's
        pg:credentials:rotate)."""
        with self._lock:
            self._ready()
            role = role_name(addon)
            password = new_password()
            self.sql(f"ALTER ROLE {ident(role)} PASSWORD "
                     f"{literal(scram_verifier(password))};\n"
                     "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                     f"WHERE usename = {literal(role)};\n")
            return self.credentials(addon, password)

    def reset(self, addon: str) -> None:
        """Drop and recreate the database, owned by its role (pg:reset)."""
        with self._lock:
            self._ready()
            db = database_name(addon)
            self.drop_database(db)
            self.create_database(db, role_name(addon))

    def info(self, addon: str) -> dict[str, str]:
        self._ready()
        db, role = database_name(addon), role_name(addon)
        row = self.sql(
            "SELECT current_setting('server_version'), "  # noqa: S608 - literal() quotes
            f"pg_size_pretty(pg_database_size({literal(db)})), "
            f"(SELECT count(*) FROM pg_stat_activity WHERE datname = {literal(db)} "
            "AND backend_type = 'client backend'), "
            f"(SELECT rolconnlimit FROM pg_roles WHERE rolname = {literal(role)});\n")
        version, size, used, limit = row.strip().split("|")
        tables = self.sql("SELECT count(*) FROM pg_stat_user_tables;\n", db).strip()
        return {"Status": "Available", "Connections": f"{used}/{limit}",
                "PG Version": version, "Data Size": size, "Tables": tables}

    # -- who may connect --

    def admitted(self) -> dict[str, set[str]]:
        try:
            return parse_hba((self.data / "pg_hba.conf").read_text())
        except FileNotFoundError:
            return {}

    def admit(self, admitted: Mapping[str, Set[str]]) -> None:
        """pg_hba.conf for exactly these add-ons and addresses, in force before this
        returns; TCP sessions of any other (database, address) are ended."""
        with self._lock:
            if not self.initialized:
                return
            self._ready()
            self._apply_hba(admitted)
            pairs = [f"({literal(database_name(a))}, {literal(address)})"
                     for a in sorted(admitted) for address in _addresses(a, admitted[a])]
            keep = f"(datname, host(client_addr)) NOT IN ({', '.join(pairs)})" if pairs \
                else "TRUE"
            self.sql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "  # noqa: S608
                     "WHERE client_addr IS NOT NULL AND backend_type = 'client backend' "
                     f"AND {keep};\n")

    def _apply_hba(self, admitted: Mapping[str, Set[str]]) -> None:
        text = render_hba(admitted)
        path = self.data / "pg_hba.conf"
        if path.exists() and path.read_text() == text:
            return
        before = self.sql("SELECT pg_conf_load_time();\n").strip()
        self._write(path, text)
        self.sql("SELECT pg_reload_conf();\n")
        # The postmaster reloads on SIGHUP, asynchronously: a session started after the
        # reload shows its new load time, so from then on every new one is checked
        # against the new file.
        deadline = time.monotonic() + 10.0
        while self.sql("SELECT pg_conf_load_time();\n").strip() == before:
            if time.monotonic() > deadline:
                raise Unavailable(f"{UNIT} did not reload pg_hba.conf within 10 s; see "
                                  f"journalctl -u {UNIT}")
            time.sleep(0.02)


def _systemctl(argv: Sequence[str]) -> str:
    return systemctl.systemctl(argv, timeout=120.0)
