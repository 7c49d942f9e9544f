"""dynod.model.cluster: the machines of a cluster, where each dyno runs, and what each
machine says it runs. Values and the protocol the rest of dynod reads them through.

A cluster keeps these beside the store's records, in etcd under their own root
(``/dynod-cluster/``, not the store's ``/dynod/``, so a store migration or comparison
never sees them). The keys, each holding one value's JSON (:func:`to_json`):

============================================  ==========================  ==============
key                                           value                       lifetime
============================================  ==========================  ==============
``members/<node>``                            :class:`Member`             until removed
``join-token``                                :class:`JoinToken`          until rotated
``nodes/<node>``                              :class:`Node`               the node's lease
``leader``                                    the leader's node name      its lease
``placement/<app>/<type>.<n>``                :class:`Placement`          until moved
``dynos/<node>/<app>/<type>.<n>@<gen>``       :class:`Located`            the node's lease
``addon-clients/<node>/<dyno key>``           :class:`AddonClient`        the node's lease
``addon-admitted/<node>``                     :class:`AddonAdmitted`      the node's lease
============================================  ==========================  ==============

A member is a machine that joined (``cluster:join``) and was not removed; a node is a
member that is alive now: its dynod holds a lease (``NODE_TTL``) and keeps it alive, so
its ``nodes/`` key and everything it published under ``dynos/`` vanish when it dies or
loses etcd. The leader (etcd election on the ``leader`` key) alone writes placements.
One machine without a cluster has none of this: its dynod runs every dyno itself.

An add-on's server runs on the machine where it was created (its home: the member
whose pool holds the add-on's host). ``addon-clients/`` is every dyno each node has a
network for (web, workers, one-offs, release phases: ``dynos/`` has only the
supervisor's), so a home machine can open its add-ons to the attached apps' dynos on
other machines; ``addon-admitted/`` is what each home machine has opened, so a dyno
elsewhere starts its command only once its add-ons are open to it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, Protocol, TypeVar

from dynod.errors import InvalidArgument

ROOT = "/dynod-cluster/"
# Seconds a node's lease lives without a keep-alive: how long a dead machine still
# looks alive, and how long a machine cut off from etcd keeps its dynos.
NODE_TTL = 10
# The peer API's port (slugs between machines, mutual TLS) on a member's address, where
# the others look for it unless its record's ``peer`` says otherwise.
PEER_PORT = 5480
_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def check_node_name(name: str) -> str:
    if not _NAME.match(name):
        raise InvalidArgument(f"node name {name!r}: use lowercase letters, digits and "
                              "dashes (a host name), e.g. node-b")
    return name


@dataclass(frozen=True)
class Member:
    """A machine of the cluster: its name, its address on the cluster's network, its
    API (``host:port``, TLS) for the other machines, and the dyno address pool it was
    given (a CIDR no other member's overlaps). ``peer``: its peer API's ``host:port``
    when not at ``PEER_PORT`` on its address (:func:`peer_address`)."""

    name: str
    address: str
    api: str
    pool: str
    joined_at: str = ""
    peer: str = ""

    def __post_init__(self) -> None:
        check_node_name(self.name)


@dataclass(frozen=True)
class JoinToken:
    """What ``cluster:join --token`` is checked against: the token's SHA-256 only."""

    sha256: str
    created_at: str = ""


@dataclass(frozen=True)
class Node:
    """A member that is alive, with what it can hold: memory for dynos in MB (dyno
    sizes' ``memory_mb`` add up against it)."""

    name: str
    address: str
    api: str
    pool: str
    memory_mb: int
    peer: str = ""  # as Member's

    def __post_init__(self) -> None:
        check_node_name(self.name)


@dataclass(frozen=True)
class Placement:
    """Where one dyno of a formation runs (``web.2`` of app ``shop`` on ``node-b``)."""

    app: str
    dyno: str  # "<type>.<n>"
    node: str


@dataclass(frozen=True)
class Located:
    """A dyno as the machine running it says it is: what ``ps`` shows and what every
    machine's router routes to (web dynos that are ``up``)."""

    node: str
    app: str
    dyno: str  # "<type>.<n>"
    state: str  # model.dynos.DynoState's value
    release: int
    size: str
    generation: int = 0  # a rollout runs two generations of web.1 side by side
    address: str = ""  # the dyno's address, reachable from every node's router
    port: int = 0
    since: str = ""  # ISO 8601, when it entered ``state``


@dataclass(frozen=True)
class AddonClient:
    """A dyno with a network on ``node`` (``key``: its dyno key, unique on the node),
    which the home machines of its app's add-ons admit at ``address``."""

    node: str
    app: str
    key: str
    address: str


@dataclass(frozen=True)
class AddonAdmitted:
    """What home machine ``node`` has opened its add-ons to, firewall and server both:
    add-on name -> dyno addresses (its own dynos' and other nodes')."""

    node: str
    addons: Mapping[str, Sequence[str]]


def peer_address(machine: Member | Node) -> str:
    """Where ``machine``'s peer API listens: its record's ``peer``, else its address at
    ``PEER_PORT``."""
    if machine.peer:
        return machine.peer
    host = f"[{machine.address}]" if ":" in machine.address else machine.address
    return f"{host}:{PEER_PORT}"


T = TypeVar("T")


def to_json(value: Any) -> str:
    return json.dumps(asdict(value), sort_keys=True)


def from_json(cls: type[T], text: str) -> T:
    """The value of ``cls`` a key holds; unknown fields (a newer dynod's) are ignored."""
    doc = json.loads(text)
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in doc.items() if k in names})


class ClusterView(Protocol):
    """What the cluster is now, as read from etcd. ``me`` is this machine's node name."""

    @property
    def me(self) -> str: ...

    def members(self) -> list[Member]: ...

    def nodes(self) -> list[Node]: ...

    def leader(self) -> str | None: ...

    def placements(self, app: str | None = None) -> list[Placement]: ...

    def located(self, app: str | None = None) -> list[Located]: ...


class AddonBoard(Protocol):
    """The ``addon-clients/`` and ``addon-admitted/`` keys, as one node reads and writes
    them (its own on its lease). Every method raises DynodError (Unavailable) when etcd
    cannot be reached or the node has no lease yet."""

    def publish_clients(self, clients: Sequence[AddonClient]) -> None:
        """This node's clients become exactly ``clients``."""
        ...

    def clients(self) -> list[AddonClient]: ...

    def publish_admitted(self, admitted: AddonAdmitted) -> None: ...

    def admitted(self) -> list[AddonAdmitted]: ...
