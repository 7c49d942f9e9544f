"""Cluster membership: ``cluster:init``, a member admitting a joiner, ``cluster:join``,
``cluster`` and ``cluster:remove``.

The cluster's CA is made at ``cluster:init`` (not the machine's local CA, which signs
its default domain's HTTPS certificates and stays the machine's own): it signs every
etcd member's certificate, and each joiner gets it, key included, so that any member
can admit the next machine. A joiner trusts the first machine's API by the hash of the
CA that API presents (its local CA), printed in the join command.

A machine switches to the etcd store by rewriting dynod.toml and restarting dynod:
dynos are not dynod's children, so they go on serving meanwhile.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from dynod import paths
from dynod.errors import DynodError, FailedPrecondition, InvalidArgument
from dynod.model.cluster import JoinToken, Located, Member, Node, check_node_name
from dynod.model.membership import (
    API_PORT,
    ca_hash,
    check_new_member,
    check_token,
    first_pool,
    join_command,
    make_token,
    next_pool,
    removable,
    token_sha256,
)
from dynod.router import local_ca
from dynod.settings import Settings, settings_text_with
from dynod.store import to_etcd
from dynod.store.etcd import EtcdSettings, EtcdStore
from dynod.store.etcd_cluster import EtcdClusterView, cluster_kv
from dynod.store.etcd_members import EtcdMembership, MemberHealth
from dynod.store.protocol import Store
from dynod.store.sqlite import SqliteStore
from dynod.store.sqlite_copy import backup_sqlite
from dynod.system import etcd
from dynod.system.files import write_atomic

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Initialised:
    node: Member
    join_command: str
    backup: Path
    apps: int
    releases: int


@dataclass(frozen=True)
class Admission:
    """What a member hands a joiner whose token was right."""

    ca_cert: str
    ca_key: str
    cert: str
    key: str
    member_id: int  # its etcd member (a learner until it has caught up)
    members: tuple[tuple[str, str], ...]  # (name, address) of every etcd member, it too
    pool: str


@dataclass(frozen=True)
class Status:
    members: list[Member]
    nodes: list[Node]
    etcd: list[MemberHealth]
    etcd_leader: str
    leader: str | None
    me: str


def _host_of(url: str) -> str:
    return url.split("://", 1)[-1].rpartition(":")[0].strip("[]")


def _tls(state_dir: Path) -> tuple[Path, Path, Path]:
    tls = etcd.cluster_dir(state_dir) / "tls"
    return tls / etcd.CA_CERT, tls / etcd.MEMBER_CERT, tls / etcd.MEMBER_KEY


def _etcd_settings(state_dir: Path, endpoints: tuple[str, ...]) -> EtcdSettings:
    ca, cert, key = _tls(state_dir)
    return EtcdSettings(endpoints, ca, cert, key)


class Membership:
    """The membership use cases of this machine's dynod. ``config`` is its dynod.toml;
    ``restart()`` restarts dynod soon (after the reply is out); ``dyno_addresses()``
    are the addresses this machine's dynos use now."""

    def __init__(self, store: Store, settings: Settings, config: Path, *,
                 restart: Callable[[], None], dyno_addresses: Callable[[], list[str]],
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.store = store
        self.settings = settings
        self.config = config
        self.restart = restart
        self.dyno_addresses = dyno_addresses
        self.now = now

    # ---- helpers

    def _refuse_if_member(self) -> None:
        if self.settings.store == "etcd" or self.settings.node_name:
            name = self.settings.node_name or "(store = etcd)"
            raise FailedPrecondition(f"this machine is already in a cluster (node {name}); "
                                     "`dynoctl cluster` shows it, and nothing was changed")
        if (etcd.cluster_dir(self.settings.state_dir) / "etcd.env").exists():
            raise FailedPrecondition(
                f"an etcd member is set up here ({etcd.cluster_dir(self.settings.state_dir)})"
                " though dynod.toml names no cluster; a cluster:init or cluster:join is "
                "under way, or was interrupted: remove that directory and "
                f"{etcd.data_dir(self.settings.state_dir)} to start again")

    def _membership(self) -> tuple[EtcdMembership, EtcdClusterView]:
        if not isinstance(self.store, EtcdStore) or not self.settings.node_name:
            raise FailedPrecondition("this machine is not in a cluster; `dynoctl "
                                     "cluster:init` makes one, `dynoctl cluster:join` joins one")
        kv = cluster_kv(self.store)
        return (EtcdMembership(kv, self.store.settings),
                EtcdClusterView(kv, self.settings.node_name))

    def _api(self, address: str) -> tuple[str, dict[str, str]]:
        """The API address other machines reach this one at, and the settings that make
        dynod listen there (api_listen, api_names, unless the admin set them)."""
        values: dict[str, str] = {}
        listen = self.settings.api_listen
        if not listen:
            listen = f"{address}:{API_PORT}"
            values["api_listen"] = listen
        names = [n.strip() for n in self.settings.api_names.split(",") if n.strip()] or \
            list(dict.fromkeys((socket.gethostname(), socket.getfqdn(), "localhost")))
        if address not in names and not self.settings.api_tls_cert:
            values["api_names"] = ",".join([*names, address])
        return f"{address}:{listen.rpartition(':')[2]}", values

    def _api_ca(self) -> str:
        """The CA certificate this machine's API presents: the local CA's, or the last
        certificate of the admin's chain (api_tls_cert)."""
        if self.settings.api_tls_cert:
            chain = Path(self.settings.api_tls_cert).read_text()
            marker = "-----BEGIN CERTIFICATE-----"
            return marker + chain.rsplit(marker, 1)[1]
        return local_ca.ensure_ca(paths.tls_dir(self.settings.state_dir)).cert_pem

    def _switch(self, values: dict[str, str], why: str) -> None:
        text = self.config.read_text() if self.config.exists() else ""
        self.config.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.config, settings_text_with(text, values, why), 0o644)

    def _store_values(self, name: str, address: str, pool: str,
                      endpoints: list[str]) -> dict[str, str]:
        ca, cert, key = _tls(self.settings.state_dir)
        return {"store": "etcd", "etcd_endpoints": ",".join(endpoints),
                "etcd_ca_file": str(ca), "etcd_cert_file": str(cert),
                "etcd_key_file": str(key), "node_name": name, "node_address": address,
                "address_pool": pool}

    def _issue(self, ca: local_ca.LocalCA, name: str, address: str) -> tuple[str, str]:
        """An etcd member's certificate: server and client (to its peers), for its name
        and address, valid as long as the CA (renewal is the leader's, later)."""
        return local_ca.issue(ca, (name, address), self.now(), local_ca.CA_VALIDITY,
                              client_auth=True)

    def _start_member(self, me: etcd.Member, members: list[etcd.Member],
                      state: etcd.ClusterState, ca: local_ca.LocalCA,
                      pair: tuple[str, str]) -> None:
        state_dir = self.settings.state_dir
        cert, key = pair
        env = etcd.member_env(me, members, state, "dynod", state_dir)
        etcd.write_member(state_dir, env, ca.cert_pem, cert, key)
        etcd.write_ca_key(state_dir, ca.key_pem)
        etcd.start()

    def _undo(self) -> None:
        try:
            etcd.stop_and_forget(self.settings.state_dir)
        except DynodError as exc:
            log.error("undoing the etcd member: %s", exc.message)

    # ---- cluster:init

    def init(self, name: str, address: str) -> Initialised:
        """Make a one-member cluster of this machine and move its state into etcd.
        Raises FailedPrecondition (already in a cluster; a migration that differs),
        InvalidArgument (a bad name or address); on failure nothing is changed."""
        self._refuse_if_member()
        check_node_name(name)
        me = etcd.Member(name, address)
        if not isinstance(self.store, SqliteStore):
            raise FailedPrecondition("cluster:init moves a SQLite state into etcd; this "
                                     "dynod's store is not SQLite")
        sqlite = self.store
        api, api_values = self._api(address)
        api_ca = self._api_ca()
        pool = first_pool(self.settings.address_pool, self.dyno_addresses())
        ca = local_ca.make_ca(self.now(), f"dynod cluster of {name}")
        try:
            self._start_member(me, [me], etcd.ClusterState.NEW, ca,
                               self._issue(ca, name, address))
            store = EtcdStore(_etcd_settings(self.settings.state_dir,
                                             (f"{address}:{etcd.CLIENT_PORT}",)))
            migrated = to_etcd.migrate(sqlite, store)
            backup = self._freeze(sqlite, store)
            membership = EtcdMembership(cluster_kv(store), store.settings)
            token = make_token()
            member = Member(name, address, api, pool, self.now().isoformat())
            membership.add(member)
            membership.kv.txn([], [membership.kv.put_op("dyno-range",
                                                        self.settings.address_pool)])
            membership.put_join_token(JoinToken(token_sha256(token), self.now().isoformat()))
            store.close()
        except BaseException:
            self._undo()
            raise
        self._switch({**self._store_values(name, address, pool,
                                           [f"{address}:{etcd.CLIENT_PORT}"]),
                      **api_values}, f"cluster:init, {self.now():%Y-%m-%d %H:%M} UTC")
        self.restart()
        return Initialised(member, join_command(address, token, ca_hash(api_ca)), backup,
                           migrated.apps, migrated.releases)

    def _freeze(self, sqlite: SqliteStore, store: EtcdStore) -> Path:
        """Hold SQLite's write lock until dynod restarts on etcd (a write meanwhile
        would be lost), check under it that etcd holds exactly what SQLite does, and
        copy state.db to a backup. Raises FailedPrecondition if they differ."""
        done = threading.Event()
        failed: list[BaseException] = []
        backup = sqlite.path.with_name(f"{sqlite.path.name}.pre-cluster")

        def hold() -> None:
            try:
                with sqlite.write() as tx, store.read() as copy:
                    if to_etcd.snapshot(tx) != to_etcd.snapshot(copy):
                        raise FailedPrecondition("the state changed while it was migrated"
                                                 " to etcd; run cluster:init again")
                    backup_sqlite(sqlite.path, backup)
                    done.set()
                    threading.Event().wait()  # until dynod restarts
            except BaseException as exc:  # handed to the caller
                failed.append(exc)
                done.set()

        threading.Thread(target=hold, name="sqlite-frozen", daemon=True).start()
        done.wait()
        if failed:
            raise failed[0]
        return backup

    # ---- cluster:join, the member's side

    def admit(self, name: str, address: str, token: str) -> Admission:
        """Let machine ``name`` at ``address`` join, if ``token`` is the join token.
        Raises PermissionDenied (a wrong token), InvalidArgument (a member already)."""
        membership, view = self._membership()
        found = membership.join_token()
        check_token(token, None if found is None else found.sha256)
        check_node_name(name)
        joiner = etcd.Member(name, address)
        members = membership.members()
        stale = [m for m in members if m.name == name and m.address == address]
        listed = membership.etcd_members()
        if stale and not any(n.name == name for n in view.nodes()):
            # An earlier join that never finished: its etcd member never started.
            unstarted = [e for e in listed if joiner.peer_url in e.peer_urls
                         and (e.learner or not e.name)]
            for e in unstarted:
                membership.remove(e.id)
            if unstarted or not any(joiner.peer_url in e.peer_urls for e in listed):
                membership.forget(name)
                members = [m for m in members if m.name != name]
        check_new_member(name, address, members)
        _, pairs = membership.kv.range("dyno-range", None, None)
        pool = next_pool(pairs[0][1] if pairs else self.settings.address_pool, members)
        ca_dir = etcd.cluster_dir(self.settings.state_dir) / "tls"
        ca = local_ca.LocalCA((ca_dir / etcd.CA_CERT).read_text(),
                              (ca_dir / "ca.key").read_text())
        cert, key = self._issue(ca, name, address)
        added, everyone = membership.add_learner(joiner.peer_url)
        try:
            membership.add(Member(name, address, f"{address}:{API_PORT}", pool,
                                  self.now().isoformat()))
        except BaseException:
            membership.remove(added.id)
            raise
        named = tuple((name if e.id == added.id else e.name, _host_of(e.peer_urls[0]))
                      for e in everyone if e.peer_urls)
        return Admission(ca.cert_pem, ca.key_pem, cert, key, added.id, named, pool)

    # ---- cluster:join, the joiner's side

    def check_joinable(self) -> str:
        """Raises FailedPrecondition unless this machine may join a cluster: in none,
        with no apps. Returns its default node name (the host name)."""
        self._refuse_if_member()
        with self.store.read() as tx:
            apps = [a.name for a in tx.apps()]
        if apps:
            raise FailedPrecondition(
                f"this machine has apps ({', '.join(apps[:5])}); a machine joins a cluster "
                "empty. Destroy them (or run `dynoctl cluster:init` here to make a cluster "
                "of this machine)")
        return socket.gethostname().split(".")[0].lower()

    def join(self, name: str, address: str, admission: Admission) -> Member:
        """Start this machine's etcd member in the cluster that admitted it, make it a
        voter, and switch dynod to the etcd store (restarting it). On failure the etcd
        member is undone here (the admitting member drops it at the next try)."""
        self.check_joinable()
        me = etcd.Member(name, address)
        members = [etcd.Member(n, a) for n, a in admission.members]
        if me not in members:
            raise InvalidArgument(f"the cluster admitted {admission.members}, not {name}")
        api, api_values = self._api(address)
        endpoints = [f"{m.address}:{etcd.CLIENT_PORT}"
                     for m in sorted(members, key=lambda m: m != me)]
        try:
            self._start_member(me, members, etcd.ClusterState.EXISTING,
                               local_ca.LocalCA(admission.ca_cert, admission.ca_key),
                               (admission.cert, admission.key))
            store = EtcdStore(_etcd_settings(self.settings.state_dir, tuple(endpoints)))
            try:
                EtcdMembership(cluster_kv(store), store.settings).promote(admission.member_id)
            finally:
                store.close()
        except BaseException:
            self._undo()
            raise
        self._switch({**self._store_values(name, address, admission.pool, endpoints),
                      **api_values}, f"cluster:join, {self.now():%Y-%m-%d %H:%M} UTC")
        self.restart()
        return Member(name, address, api, admission.pool)

    # ---- cluster, cluster:remove

    def status(self) -> Status:
        membership, view = self._membership()
        listed = membership.etcd_members()
        health = [membership.health(e) for e in listed]
        leaders = {h.leader for h in health if h.healthy and h.leader}
        names = {e.id: e.name for e in listed}
        leader = ",".join(sorted(names.get(i, f"{i:x}") for i in leaders))
        return Status(membership.members(), view.nodes(), health, leader, view.leader(),
                      view.me)

    def remove(self, name: str, force: bool) -> Member:
        """Remove member ``name``: its etcd member, then its ``members/`` record.
        Raises InvalidArgument (see :func:`dynod.model.membership.removable`)."""
        membership, view = self._membership()
        running: list[Located] = view.located()
        member = removable(name, view.me, membership.members(), running, force)
        peer = etcd.Member(member.name, member.address).peer_url
        for e in membership.etcd_members():
            if e.name == name or peer in e.peer_urls:
                membership.remove(e.id)
        membership.forget(name)
        return member

