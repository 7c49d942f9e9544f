"""The few settings of /etc/dynod/dynod.toml, with the embedded defaults.

Every key is optional; a missing file means all defaults. An unknown key or a value of
the wrong type is an error naming the key and the file, raised at start so a typo never
silently falls back to a default.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

from dynod.errors import InvalidArgument

DEFAULT_CONFIG = Path("/etc/dynod/dynod.toml")


@dataclass(frozen=True)
class Settings:
    """Daemon settings. Paths are absolute."""

    state_dir: Path = Path("/var/lib/dynod")
    runtime_dir: Path = Path("/run/dynod")
    # Routing domain: apps answer on <app>.<domain>. localhost-style names resolve to
    # the machine itself without DNS (RFC 6761), so the default works out of the box.
    domain: str = "dynod.localhost"
    # Address pool for dyno network namespaces.
    address_pool: str = "10.213.0.0/16"
    # Group whose members may call the API (besides root).
    api_group: str = "dynod"
    # A build's memory limit (MemoryMax= of each build step, systemd's syntax: 2G, 512M).
    build_memory_max: str = "2G"
    # dyno-init, the static PID 1 of every dyno (built by dynod/init/build.sh). When it
    # is missing, dynod uses build/dyno-init of its own source tree (development).
    dyno_init: Path = Path("/usr/lib/dynod/dyno-init")
    # Concurrent one-off dynos (`dynoctl run`) per app; Heroku allows 5 to 50 by tier.
    oneoff_limit: int = 5
    # Automated Certificate Management (certs:auto:enable): the ACME directory that
    # issues custom domains' certificates, and the CA certificates its HTTPS must verify
    # against (Debian's store; a private CA's or a test server's for another directory).
    acme_directory: str = "https://acme-v02.api.letsencrypt.org/directory"
    acme_ca_file: Path = Path("/etc/ssl/certs/ca-certificates.crt")
    # Prometheus: serve /metrics on this "host:port" (e.g. "127.0.0.1:9311"); "" = off.
    metrics_listen: str = ""
    # The API over TCP with TLS (dynoctl login --host): off unless set, e.g.
    # "0.0.0.0:5443". The server certificate is dynod's local CA's for api_names
    # (comma-separated host names and addresses; default this machine's names) unless
    # api_tls_cert and api_tls_key (PEM files) name the admin's own.
    api_listen: str = ""
    api_names: str = ""
    api_tls_cert: str = ""
    api_tls_key: str = ""
    # The web dashboard over HTTPS: off unless set, e.g. "0.0.0.0:5444". Its
    # certificate follows the API's rules: the local CA's for api_names unless
    # dashboard_tls_cert and dashboard_tls_key (PEM files) name the admin's own.
    dashboard_listen: str = ""
    dashboard_tls_cert: str = ""
    dashboard_tls_key: str = ""
    # Where the desired state lives: "sqlite" (the embedded default, db_path) or "etcd"
    # (a cluster): etcd_endpoints is a comma-separated list of HOST:PORT; with
    # etcd_ca_file set dynod speaks HTTPS to etcd, verifying it against that CA, and
    # presents etcd_cert_file/etcd_key_file (PEM) when etcd asks for client certificates.
    store: str = "sqlite"
    etcd_endpoints: str = "127.0.0.1:2379"
    etcd_ca_file: str = ""
    etcd_cert_file: str = ""
    etcd_key_file: str = ""
    # A cluster member's name and its address on the cluster's network (cluster:init
    # and cluster:join write them, with the store's settings and the member's own dyno
    # address_pool); "" on a machine of its own. With node_name, the router also routes
    # to the other nodes' web dynos and the dyno network to the other members' pools.
    node_name: str = ""
    node_address: str = ""
    # The peer API's "host:port" on the cluster's network, which the other machines
    # fetch slugs from (mutual TLS with the member certificates of <state>/cluster/tls;
    # they look for it at the machine's address, port 5480, unless its members/ record's
    # "peer" names another); "" = node_address:5480 on a cluster member, else off.
    peer_listen: str = ""

    @property
    def socket_path(self) -> Path:
        return self.runtime_dir / "dynod.sock"

    @property
    def db_path(self) -> Path:
        return self.state_dir / "state.db"


_PATH_KEYS = {"state_dir", "runtime_dir", "dyno_init", "acme_ca_file"}
_INT_KEYS = {"oneoff_limit"}


def _is_listen(value: str) -> bool:
    host, _, port = value.rpartition(":")
    return bool(host) and port.isdigit() and 0 < int(port) < 65536


def listen_address(value: str) -> tuple[str, int]:
    """``"127.0.0.1:9311"`` -> ``("127.0.0.1", 9311)``; ``"[::1]:9311"`` too."""
    host, _, port = value.rpartition(":")
    return host.strip("[]"), int(port)


def settings_text_with(text: str, values: dict[str, str], why: str) -> str:
    """dynod.toml's ``text`` with ``values`` set: each key's old line goes, the new
    ones are appended under a comment saying ``why``; the admin's other lines and
    comments stay as they were. Values are strings (TOML basic strings)."""
    keys = set(values)
    kept = [line for line in text.splitlines()
            if line.split("=", 1)[0].strip() not in keys or "=" not in line]
    while kept and not kept[-1].strip():
        kept.pop()
    added = [f"{key} = {_toml_string(value)}" for key, value in values.items()]
    return "\n".join([*kept, *([""] if kept else []), f"# {why}", *added]) + "\n"


def _toml_string(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def load_settings(path: Path = DEFAULT_CONFIG) -> Settings:
    """Read ``path`` (missing file -> defaults).

    Raises InvalidArgument for unparsable TOML, unknown keys or wrongly typed values.
    """
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        return Settings()
    except tomllib.TOMLDecodeError as exc:
        raise InvalidArgument(f"{path}: not valid TOML ({exc}); fix the file") from exc
    known = {f.name for f in fields(Settings)}
    values: dict[str, object] = {}
    for key, value in raw.items():
        if key not in known:
            raise InvalidArgument(
                f"{path}: unknown setting {key!r}; known settings: {', '.join(sorted(known))}"
            )
        if key in _INT_KEYS:
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InvalidArgument(f"{path}: setting {key!r} must be a whole number, 1 "
                                      "or more (no quotes)")
            values[key] = value
            continue
        if not isinstance(value, str):
            raise InvalidArgument(f"{path}: setting {key!r} must be a string")
        if key == "acme_directory" and not value.startswith("https://"):
            raise InvalidArgument(f"{path}: setting 'acme_directory' must be the https:// "
                                  f"URL of an ACME directory, e.g. {Settings.acme_directory}")
        if key == "metrics_listen" and value and not _is_listen(value):
            raise InvalidArgument(f"{path}: setting 'metrics_listen' must be HOST:PORT, "
                                  f'e.g. "127.0.0.1:9311", or "" for no /metrics')
        if key == "dashboard_listen" and value and not _is_listen(value):
            raise InvalidArgument(f"{path}: setting 'dashboard_listen' must be HOST:PORT, "
                                  f'e.g. "0.0.0.0:5444", or "" for no dashboard')
        if key == "peer_listen" and value and not _is_listen(value):
            raise InvalidArgument(f"{path}: setting 'peer_listen' must be HOST:PORT on the "
                                  'cluster\'s network, e.g. "10.0.0.2:5480", or "" for none')
        if key == "store" and value not in ("sqlite", "etcd"):
            raise InvalidArgument(f"{path}: setting 'store' must be \"sqlite\" (one "
                                  'machine, the default) or "etcd" (a cluster)')
        if key == "etcd_endpoints" and not all(
                _is_listen(e.strip()) for e in value.split(",")):
            raise InvalidArgument(f"{path}: setting 'etcd_endpoints' must be HOST:PORT[,"
                                  'HOST:PORT...], e.g. "10.0.0.1:2379,10.0.0.2:2379"')
        values[key] = Path(value) if key in _PATH_KEYS else value
    return Settings(**values)  # type: ignore[arg-type]
