"""etcd, the cluster's consensus store: one member per machine, run by systemd as
``dynod-etcd.service`` (Debian's etcd-server), TLS between members and for clients.

The unit reads etcd's own ``ETCD_*`` variables from ``<state>/cluster/etcd.env`` (every
etcd flag has one), so what a member is (its name, addresses, the cluster it makes or
joins) is data rendered here by pure functions and written atomically; the unit file
never changes. Certificates sit beside it in ``<state>/cluster/tls``; the member's data
in ``<state>/etcd``. Both the peer and the client port demand a certificate signed by
the cluster's CA (``--client-cert-auth``, ``--peer-client-cert-auth``): plain text and
strangers are refused.
"""

from __future__ import annotations

import ipaddress
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from dynod.errors import InvalidArgument
from dynod.system import systemctl
from dynod.system.files import write_atomic

UNIT = "dynod-etcd.service"
# etcd's registered ports (IANA): clients, then peers.
CLIENT_PORT = 2379
PEER_PORT = 2380
CA_CERT = "ca.crt"
MEMBER_CERT = "member.crt"
MEMBER_KEY = "member.key"
_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


class ClusterState(StrEnum):
    """etcd's --initial-cluster-state: the first member makes a cluster, the others
    join one that has added them (``member add``) first."""

    NEW = "new"
    EXISTING = "existing"


@dataclass(frozen=True)
class Member:
    """One machine's etcd member: its node name and its address on the cluster's
    network (an IP address: certificates carry it as an IP SAN)."""

    name: str
    address: str

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise InvalidArgument(f"node name {self.name!r}: use lowercase letters, digits "
                                  "and dashes (a host name), e.g. node-b")
        try:
            ipaddress.ip_address(self.address)
        except ValueError:
            raise InvalidArgument(f"node {self.name}: address {self.address!r} is not an IP "
                                  "address; give the machine's address on the cluster's "
                                  "network, e.g. 10.0.0.2") from None

    def _host(self) -> str:
        ip = ipaddress.ip_address(self.address)
        return f"[{ip}]" if ip.version == 6 else str(ip)

    @property
    def peer_url(self) -> str:
        return f"https://{self._host()}:{PEER_PORT}"

    @property
    def client_url(self) -> str:
        return f"https://{self._host()}:{CLIENT_PORT}"


def cluster_dir(state_dir: Path) -> Path:
    return state_dir / "cluster"


def data_dir(state_dir: Path) -> Path:
    return state_dir / "etcd"


def member_env(me: Member, members: Sequence[Member], state: ClusterState, token: str,
               state_dir: Path) -> dict[str, str]:
    """etcd's settings for ``me`` in a cluster of ``members`` (``me`` among them).

    Clients are served on the member's own address only: Debian's etcd-server, when
    enabled, has 127.0.0.1:2379 for itself. Raises InvalidArgument when ``me`` is not
    among ``members`` or two members share a name or address."""
    if me not in members:
        raise InvalidArgument(f"node {me.name}: not among the cluster's members")
    for attr in ("name", "address"):
        values = [getattr(m, attr) for m in members]
        dupes = sorted({v for v in values if values.count(v) > 1})
        if dupes:
            raise InvalidArgument(f"two cluster members have the {attr} {dupes[0]}; "
                                  "give each machine its own")
    tls = cluster_dir(state_dir) / "tls"
    cert, key, ca = (str(tls / f) for f in (MEMBER_CERT, MEMBER_KEY, CA_CERT))
    return {
        "ETCD_NAME": me.name,
        "ETCD_DATA_DIR": str(data_dir(state_dir)),
        "ETCD_LISTEN_PEER_URLS": me.peer_url,
        "ETCD_INITIAL_ADVERTISE_PEER_URLS": me.peer_url,
        "ETCD_LISTEN_CLIENT_URLS": me.client_url,
        "ETCD_ADVERTISE_CLIENT_URLS": me.client_url,
        "ETCD_INITIAL_CLUSTER": ",".join(f"{m.name}={m.peer_url}" for m in members),
        "ETCD_INITIAL_CLUSTER_STATE": str(state),
        "ETCD_INITIAL_CLUSTER_TOKEN": token,
        "ETCD_CERT_FILE": cert,
        "ETCD_KEY_FILE": key,
        "ETCD_TRUSTED_CA_FILE": ca,
        "ETCD_CLIENT_CERT_AUTH": "true",
        "ETCD_PEER_CERT_FILE": cert,
        "ETCD_PEER_KEY_FILE": key,
        "ETCD_PEER_TRUSTED_CA_FILE": ca,
        "ETCD_PEER_CLIENT_CERT_AUTH": "true",
        # etcd's v3 API only; the v2 one is off by default in 3.4 and gone in 3.6.
        "ETCD_ENABLE_V2": "false",
        # With client certificates, etcd 3.4 warns of every call through its JSON
        # gateway ("ignoring common name in gRPC-gateway proxy request", the way dynod
        # calls): a journal line per request. Its auth package's errors still show.
        "ETCD_LOG_PACKAGE_LEVELS": "auth=ERROR",
    }


def render_env(env: Mapping[str, str]) -> str:
    """An EnvironmentFile= systemd reads as written: one KEY=VALUE a line, no quoting
    needed (values are names, URLs and paths without spaces; checked)."""
    lines = []
    for key, value in env.items():
        if any(c.isspace() or c in "\"'\\$" for c in value):
            raise InvalidArgument(f"etcd setting {key}: {value!r} has a space, quote, "
                                  "backslash or $; use a path without them")
        lines.append(f"{key}={value}")
    return "\n".join(lines) + "\n"


def write_member(state_dir: Path, env: Mapping[str, str], ca_pem: str, cert_pem: str,
                 key_pem: str) -> None:
    """Put the member's certificates and settings in place (the settings last: the
    unit's condition), each file atomically; keys 0600."""
    tls = cluster_dir(state_dir) / "tls"
    tls.mkdir(mode=0o700, parents=True, exist_ok=True)
    data_dir(state_dir).mkdir(mode=0o700, exist_ok=True)
    write_atomic(tls / CA_CERT, ca_pem, 0o644)
    write_atomic(tls / MEMBER_CERT, cert_pem, 0o644)
    write_atomic(tls / MEMBER_KEY, key_pem, 0o600)
    write_atomic(cluster_dir(state_dir) / "etcd.env", render_env(env), 0o600)


def start() -> None:
    """Start the member and wait until it serves (Type=notify). A member joining an
    existing cluster is ready only once the others let it in."""
    systemctl.systemctl(["start", UNIT], timeout=150.0)


def write_ca_key(state_dir: Path, key_pem: str) -> None:
    """The cluster CA's key beside its certificate (0600): every member can admit the
    next joiner and renew certificates."""
    write_atomic(cluster_dir(state_dir) / "tls" / "ca.key", key_pem, 0o600)


def stop_and_forget(state_dir: Path) -> None:
    """Stop the member and remove its settings, certificates and data: what undoing a
    failed cluster:init or cluster:join leaves is a machine of its own again."""
    systemctl.systemctl(["stop", UNIT], timeout=90.0)
    for directory in (cluster_dir(state_dir), data_dir(state_dir)):
        if directory.exists():
            shutil.rmtree(directory)
