"""dynod.model.membership: joining a cluster, as pure values and rules.

``cluster:init`` prints a join command the way ``kubeadm init`` does: a secret token
(etcd keeps only its SHA-256, :class:`~dynod.model.cluster.JoinToken`) and the hash of
the certificate authority the first machine's API presents, so that a joiner trusts
that machine without being told anything else (``kubeadm join
--discovery-token-ca-cert-hash``). Each member gets a dyno address pool of its own, a
distinct subnet of the cluster's dyno range.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import secrets
import ssl
from collections.abc import Iterable, Sequence
from typing import Protocol

from dynod.errors import InvalidArgument, PermissionDenied
from dynod.model.cluster import Located, Member

# Each member's dyno pool: a /20 (4094 dynos) of the cluster's range (a /16 by default:
# room for 16 machines).
POOL_PREFIX = 20
API_PORT = 5443
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{32,128}$")
_HASH = re.compile(r"^sha256:[0-9a-f]{64}$")


def make_token() -> str:
    """A new join token: 32 random bytes, URL-safe (no quoting in a shell)."""
    return secrets.token_urlsafe(32)


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def check_token(token: str, sha256: str | None) -> None:
    """Raises PermissionDenied unless ``token`` hashes to ``sha256`` (compared in
    constant time), InvalidArgument if it is not a token at all."""
    if not _TOKEN.match(token):
        raise InvalidArgument("the join token is malformed; copy the whole --token value "
                              "`dynoctl cluster:init` printed")
    if sha256 is None or not hmac.compare_digest(token_sha256(token), sha256):
        raise PermissionDenied("the join token is wrong; copy the whole join command "
                               "`dynoctl cluster:init` printed")


def ca_hash(cert_pem: str) -> str:
    """``sha256:<hex>`` of a certificate's DER encoding: how a joiner recognises the CA
    it must trust among those a server presents."""
    return "sha256:" + hashlib.sha256(ssl.PEM_cert_to_DER_cert(cert_pem)).hexdigest()


def check_ca_hash(value: str) -> str:
    if not _HASH.match(value):
        raise InvalidArgument(f"--ca-hash {value!r}: expected sha256: and 64 hex digits, as "
                              "`dynoctl cluster:init` printed it")
    return value


def trusted_ca(chain: Sequence[str], wanted: str) -> str:
    """The certificate of ``chain`` (PEM, as a server presented it) whose hash is
    ``wanted``. Raises PermissionDenied when none is: not the machine the join command
    names, or someone in between."""
    for pem in chain:
        if hmac.compare_digest(ca_hash(pem), wanted):
            return pem
    raise PermissionDenied("the server's certificate is not signed by the CA the join "
                           f"command names ({wanted}); check the address, and copy the "
                           "join command again")


def join_command(address: str, token: str, ca: str) -> str:
    return f"dynoctl cluster:join {address} --token {token} --ca-hash {ca}"


def first_pool(cluster_range: str, in_use: Iterable[str]) -> str:
    """The first machine's pool: the smallest subnet of ``cluster_range``, /20 or
    wider, holding every address its dynos use now (they keep serving, unchanged)."""
    net = ipaddress.ip_network(cluster_range)
    used = [ipaddress.ip_address(a) for a in in_use]
    if net.prefixlen >= POOL_PREFIX:
        return str(net)
    start = used[0] if used else next(net.hosts())
    for prefix in range(POOL_PREFIX, net.prefixlen - 1, -1):
        candidate = ipaddress.ip_network(f"{start}/{prefix}", strict=False)
        if all(a in candidate for a in used):
            return str(candidate)
    return str(net)


def next_pool(cluster_range: str, members: Sequence[Member]) -> str:
    """The first /20 of ``cluster_range`` that no member's pool overlaps. Raises
    FailedPrecondition-like InvalidArgument when the range is full."""
    net = ipaddress.ip_network(cluster_range)
    taken = [ipaddress.ip_network(m.pool) for m in members if m.pool]
    for subnet in net.subnets(new_prefix=max(POOL_PREFIX, net.prefixlen)):
        if not any(subnet.overlaps(t) for t in taken):
            return str(subnet)
    raise InvalidArgument(f"the cluster's dyno range {cluster_range} has no free "
                          f"/{POOL_PREFIX} left for another member; remove a member first")


def check_new_member(name: str, address: str, members: Sequence[Member]) -> None:
    """Raises InvalidArgument when a member has this name or address (a second join)."""
    for m in members:
        if m.name == name:
            raise InvalidArgument(f"node {name} is already a member of this cluster; "
                                  "a machine joins once (remove it first with "
                                  f"`dynoctl cluster:remove {name}` to join it again)")
        if m.address == address:
            raise InvalidArgument(f"the address {address} is already member {m.name}'s; "
                                  "each machine joins once, with its own address")


def removable(name: str, me: str, members: Sequence[Member], running: Sequence[Located],
              force: bool) -> Member:
    """The member ``cluster:remove NAME`` may remove, or InvalidArgument saying why not:
    not a member, the last one (etcd would lose its data), this very machine (its
    own etcd would stop under the command), or one still running dynos (unless
    ``force``: a dead machine's records vanish with its lease anyway)."""
    found = [m for m in members if m.name == name]
    if not found:
        raise InvalidArgument(f"node {name} is not a member; `dynoctl cluster` lists them")
    if len(members) == 1:
        raise InvalidArgument(f"node {name} is the cluster's last member; removing it would "
                              "lose the cluster's state (etcd needs one member)")
    if name == me:
        raise InvalidArgument(f"node {name} is this machine; run `dynoctl cluster:remove "
                              f"{name}` on another member")
    mine = [d for d in running if d.node == name]
    if mine and not force:
        names = sorted(f"{d.app} {d.dyno}" for d in mine)
        shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
        raise InvalidArgument(f"node {name} still runs {len(mine)} dynos ({shown}); scale "
                              "them away, or pass --force")
    return found[0]


class NodeLease(Protocol):
    """This node's lease, as its keeper holds it: what fencing reads. A node whose
    lease is surely gone has been given up by the cluster, and must stop its dynos."""

    def lease_surely_gone_at(self) -> float | None:
        """``time.monotonic()`` after which this node's lease has surely expired: the
        start of the last keep-alive etcd answered, plus its TTL. None before the first
        keep-alive (there was no lease yet)."""
        ...
