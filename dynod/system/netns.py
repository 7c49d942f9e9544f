"""Dyno networking: the ``dynod0`` bridge, per-dyno network namespaces, NAT and isolation.

The only module that imports pyroute2. Plans are pure (``plan_bridge``,
``allocate_address``, ``plan_dyno_network``, ``render_nftables``,
``dyno_resolv_conf``); ``ensure_bridge``, ``create_dyno_network`` and the ``remove_*``
functions act, and every removal is idempotent.

Shape of the network::

    host: dynod0 (bridge, the pool's first address, e.g. 10.213.0.1/16)
      |-- dv0ad50002 (veth, isolated port) -- netns dynod-shop-web.1: eth0 10.213.0.2/16
      `-- dv0ad50003 (veth, isolated port) -- netns dynod-blog-web.1: eth0 10.213.0.3/16

* Isolation between dynos is at layer 2: every dyno's bridge port is ``isolated``, so
  isolated ports reach only the bridge itself (the host, where the router runs), never
  each other. No dyno of any app reaches another dyno, the way Heroku's common runtime
  dynos do not.
* The host: nftables table ``ip dynod`` drops everything a dyno sends to the host itself
  except replies on connections the host opened (the router to a dyno), connections
  to the add-on ports its app may reach (chain ``addons``, ``system/addon_firewall.py``)
  and connections to the router's ports (80, 443: apps call each other by URL, as on
  Heroku, through the router), and everything forwarded towards the bridge except
  replies. Egress to the world is
  masqueraded. The cloud metadata range 169.254.0.0/16 is dropped. The gateway's
  address answers only on the bridge and loopback.
* Names: inside a dyno, ``<app>.<domain>`` resolves to the gateway (``dyno_hosts``, a
  hosts file bound at /etc/hosts and appended to as apps appear), and a connection to
  its own loopback on port 80 or 443 is sent to the gateway (``render_dyno_nftables``):
  clients such as curl resolve ``*.localhost`` to loopback themselves (RFC 6761), which
  on the host is where the router listens, so the default domain works the same in a
  dyno as on the host.
* Host veth names encode the dyno's address (``dv`` + 8 hex digits), so the set of used
  addresses is read back from the bridge's ports after a restart of dynod.
* A cluster: each machine has a pool of its own (a /20 of the cluster's range) and a
  route to every other member's pool via that member's address on the cluster network
  (``plan_peer_routes``, ``apply_peers``; routes of protocol ``ROUTE_PROTO``). A peer's
  router (traffic from a member's address) may open connections to this machine's
  dynos; dynos reach no other member's dynos (set ``peer_pools``) nor any member's
  own address (set ``peer_hosts``: its sshd, API, etcd, router), as on one machine
  they reach nothing of the host but the router. The one exception is a member's
  gateway (set ``peer_gateways``), where its add-on servers listen: a dyno's connection
  there leaves this machine un-masqueraded (the member admits dyno addresses, not
  machines), and on that member it meets the same ``addons`` chain as the member's own
  dynos; every other port of the gateway is dropped there.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import TYPE_CHECKING

from dynod.errors import InvalidArgument, ResourceExhausted, Unavailable
from dynod.system import libc, processes
from dynod.system.dyno_names import add_dyno_hosts, dyno_resolv_conf
from dynod.system.peers import (
    PEER_GATEWAYS,
    PEER_HOSTS,
    PEER_POOLS,
    Peer,
    plan_peer_routes,
    render_peer_sets,
)

if TYPE_CHECKING:
    from pyroute2 import IPRoute

# pyroute2 is imported where it is used: importing it costs ~120 ms of dynod's start,
# and a machine without dynos never needs it.

BRIDGE = "dynod0"
NETNS_PREFIX = "dynod-"
NETNS_DIR = Path("/run/netns")
VETH_PREFIX = "dv"
NFT_TABLE = "dynod"  # family ip; everything dynod adds to nftables lives in this table
# Link-local, where clouds serve instance metadata and credentials.
METADATA = IPv4Network("169.254.0.0/16")
IFNAMSIZ = 15
# The chain the bridge's traffic to the gateway jumps to (add-on ports), its sets
# (``addon_<port>``), and the output chain that keeps add-on servers off add-on ports.
ADDONS_CHAIN = "addons"
ADDONS_OUTPUT_CHAIN = "addons_output"
# The router's ports on the host (HAProxy binds every address): reachable from dynos.
ROUTER_PORTS = (80, 443)
# The routing protocol number dynod's routes to peers' pools carry (``ip route`` shows
# ``proto 213``): only those are ever changed or removed.
ROUTE_PROTO = 213


@dataclass(frozen=True)
class BridgePlan:
    pool: IPv4Network
    bridge: str = BRIDGE

    @property
    def gateway(self) -> IPv4Address:
        """The bridge's own address: the pool's first host address."""
        return self.pool.network_address + 1


@dataclass(frozen=True)
class DynoNetwork:
    """One dyno's network namespace and its veth pair."""

    dyno: str
    address: IPv4Address
    gateway: IPv4Address
    prefixlen: int
    bridge: str = BRIDGE

    @property
    def netns(self) -> str:
        return NETNS_PREFIX + self.dyno

    @property
    def netns_path(self) -> Path:
        return NETNS_DIR / self.netns

    @property
    def host_veth(self) -> str:
        return veth_name(self.address)


def plan_bridge(pool: str) -> BridgePlan:
    """Parse the configured pool. Raises InvalidArgument for a bad or too small CIDR."""
    try:
        net = IPv4Network(pool, strict=True)
    except ValueError as exc:
        raise InvalidArgument(
            f"address pool {pool!r}: {exc}; use an IPv4 CIDR such as 10.213.0.0/16"
        ) from exc
    if net.prefixlen > 29:
        raise InvalidArgument(f"address pool {pool!r} is too small; use /29 or larger")
    return BridgePlan(pool=net)


def veth_name(address: IPv4Address) -> str:
    return f"{VETH_PREFIX}{int(address):08x}"


def address_of_veth(name: str) -> IPv4Address | None:
    """The dyno address a host veth name encodes, or None for another interface."""
    digits = name.removeprefix(VETH_PREFIX)
    if digits == name or len(digits) != 8:
        return None
    try:
        return IPv4Address(int(digits, 16))
    except ValueError:
        return None


def allocate_address(plan: BridgePlan, used: Iterable[IPv4Address]) -> IPv4Address:
    """The lowest free host address of the pool (never the bridge's own).

    Raises ResourceExhausted when every address is taken.
    """
    taken = set(used) | {plan.gateway}
    for host in plan.pool.hosts():
        if host not in taken:
            return host
    raise ResourceExhausted(
        f"address pool {plan.pool} is full ({plan.pool.num_addresses - 3} dynos); "
        "configure a larger address_pool"
    )


def plan_dyno_network(plan: BridgePlan, dyno: str, address: IPv4Address) -> DynoNetwork:
    """Raises InvalidArgument for an address outside the pool or a bad dyno key."""
    if address not in plan.pool or address in {
        plan.gateway,
        plan.pool.network_address,
        plan.pool.broadcast_address,
    }:
        raise InvalidArgument(f"dyno {dyno}: address {address} is not a host of {plan.pool}")
    if not dyno or "/" in dyno or "\0" in dyno or dyno in {".", ".."}:
        raise InvalidArgument(f"dyno key {dyno!r} must be a plain file name")
    return DynoNetwork(
        dyno=dyno,
        address=address,
        gateway=plan.gateway,
        prefixlen=plan.pool.prefixlen,
        bridge=plan.bridge,
    )


def ip_allow_list(net: DynoNetwork, pool: IPv4Network,
                  peer_pools: Iterable[IPv4Network] = ()) -> list[IPv4Network]:
    """What the dyno's cgroup may exchange packets with (``IPAddressAllow=``, with
    ``IPAddressDeny=any``): loopback, itself, the bridge (the router's connections),
    and the whole IPv4 Internet except the pool (other dynos), the other members'
    pools of a cluster (their dynos) and link-local. Defence in depth for the nftables
    rules and the isolated bridge ports. (The members' own addresses stay allowed:
    their routers' connections come from there; nftables refuses the dyno's own. So do
    their pools' gateways: their add-on servers, which admit only attached apps.)"""
    outside: list[IPv4Network] = [IPv4Network("0.0.0.0/0")]
    holes = [pool, METADATA]
    for extra in sorted(set(peer_pools)):
        if not any(extra.subnet_of(h) for h in holes):
            holes = [h for h in holes if not h.subnet_of(extra)] + [extra]
    for hole in holes:
        nxt: list[IPv4Network] = []
        for net_ in outside:
            if hole.subnet_of(net_):
                nxt.extend(net_.address_exclude(hole))
            elif not net_.subnet_of(hole):
                nxt.append(net_)
        outside = nxt
    own = [
        IPv4Network("127.0.0.0/8"),
        IPv4Network(f"{net.address}/32"),
        IPv4Network(f"{net.gateway}/32"),
    ]
    gateways = sorted({IPv4Network(f"{p.network_address + 1}/32") for p in peer_pools}
                      - set(own))
    return own + gateways + sorted(outside)


def render_nftables(plan: BridgePlan) -> str:
    """The ``ip dynod`` table's structure and its base chains' rules, applied in one
    transaction by ``nft -f`` (idempotent).

    The base chains are flushed and rewritten; the ``addons`` chain, the add-on sets
    and the peer sets are declared but left as they are: a build or a new dyno host
    re-rendering the table must not take away an add-on's access
    (``render_addon_rules`` owns them) nor a peer's (``render_peer_sets``).
    A peer's router reaches dynos on unprivileged ports only ($PORT is one).
    Nothing is deleted, so established flows and the router's keep their conntrack
    entries and NAT bindings.
    """
    br = plan.bridge
    gw = plan.gateway
    t = f"ip {NFT_TABLE}"
    ports = ", ".join(str(p) for p in ROUTER_PORTS)
    peer_ports = "tcp dport 1024-65535 ct state new accept"
    return f"""table {t} {{
\tchain {ADDONS_CHAIN} {{
\t}}
\tset {PEER_HOSTS} {{
\t\ttype ipv4_addr;
\t}}
\tset {PEER_POOLS} {{
\t\ttype ipv4_addr; flags interval;
\t}}
\tset {PEER_GATEWAYS} {{
\t\ttype ipv4_addr;
\t}}
\tchain postrouting {{
\t\ttype nat hook postrouting priority srcnat; policy accept;
\t}}
\tchain forward {{
\t\ttype filter hook forward priority filter; policy accept;
\t}}
\tchain input {{
\t\ttype filter hook input priority filter; policy accept;
\t}}
}}
flush chain {t} postrouting
flush chain {t} forward
flush chain {t} input
add rule {t} postrouting ip saddr {plan.pool} ip daddr @{PEER_GATEWAYS} return
add rule {t} postrouting ip saddr {plan.pool} oifname != "{br}" masquerade
add rule {t} forward oifname "{br}" ct state established,related accept
add rule {t} forward oifname "{br}" ip saddr @{PEER_HOSTS} ip daddr {plan.pool} {peer_ports}
add rule {t} forward oifname "{br}" drop
add rule {t} forward iifname "{br}" ip daddr {METADATA} drop
add rule {t} forward iifname "{br}" ip daddr {plan.pool} drop
add rule {t} forward iifname "{br}" ip daddr @{PEER_HOSTS} ct direction reply accept
add rule {t} forward iifname "{br}" ip daddr @{PEER_GATEWAYS} tcp dport 1024-65535 \
ct direction original accept
add rule {t} forward iifname "{br}" ip daddr @{PEER_POOLS} drop
add rule {t} forward iifname "{br}" ip daddr @{PEER_HOSTS} drop
add rule {t} input iifname "{br}" ip daddr {gw} jump {ADDONS_CHAIN}
add rule {t} input iifname "{br}" tcp dport {{ {ports} }} ct direction original accept
add rule {t} input iifname "{br}" ct state established,related accept
add rule {t} input iifname "{br}" drop
add rule {t} input ip saddr @{PEER_POOLS} ip daddr {gw} jump {ADDONS_CHAIN}
add rule {t} input iifname != {{ "{br}", "lo" }} ip daddr {gw} drop
"""


def render_dyno_nftables(net: DynoNetwork) -> str:
    """The dyno's own table, in its network namespace: connections to its loopback on
    the router's ports go to the router (the gateway), from the dyno's address; nothing
    from outside may open a connection to its loopback (which ``route_localnet``, needed
    for the first rule, would otherwise let eth0 deliver)."""
    ports = ", ".join(str(p) for p in ROUTER_PORTS)
    return f"""table ip {NFT_TABLE} {{
\tchain output {{
\t\ttype nat hook output priority -100; policy accept;
\t\tip daddr 127.0.0.0/8 tcp dport {{ {ports} }} dnat to {net.gateway}
\t}}
\tchain postrouting {{
\t\ttype nat hook postrouting priority 100; policy accept;
\t\toifname "eth0" ip saddr 127.0.0.0/8 masquerade
\t}}
\tchain input {{
\t\ttype filter hook input priority 0; policy accept;
\t\tiifname "eth0" ip daddr 127.0.0.0/8 ct direction original drop
\t}}
}}
"""


# --- acting -----------------------------------------------------------------------


def _index(ipr: IPRoute, ifname: str) -> int | None:
    found = ipr.link_lookup(ifname=ifname)
    return int(found[0]) if found else None


def ensure_bridge(plan: BridgePlan, runtime_dir: Path) -> Path:
    """Create (or repair) the bridge, forwarding, the nftables table and the dynos'
    resolv.conf. Idempotent. Returns the resolv.conf path to bind into dynos.

    Raises Unavailable when the kernel or nft refuses.
    """
    from pyroute2 import IPRoute, NetlinkError  # noqa: PLC0415 - see above
    try:
        with IPRoute() as ipr:
            idx = _index(ipr, plan.bridge)
            if idx is None:
                try:
                    ipr.link("add", ifname=plan.bridge, kind="bridge")
                except NetlinkError as exc:
                    if exc.code != errno.EEXIST:  # made meanwhile (a build): use it
                        raise
                idx = _index(ipr, plan.bridge)
            assert idx is not None
            _set_gateway(ipr, idx, plan)
            # Pin the bridge's MAC: by default a bridge takes the lowest MAC of its ports,
            # so a new dyno's veth could change it, and every running dyno would send its
            # answers to the gateway's old MAC until ARP noticed (~30 s of hung requests
            # during a rollout). An address set explicitly never follows the ports.
            mac = ipr.get_links(idx)[0].get_attr("IFLA_ADDRESS")
            ipr.link("set", index=idx, address=mac)
            ipr.link("set", index=idx, state="up")
    except NetlinkError as exc:
        raise Unavailable(f"bridge {plan.bridge}: {exc}") from exc
    # NAT for egress needs forwarding (this network namespace only).
    forward = Path("/proc/sys/net/ipv4/ip_forward")
    if forward.read_text().strip() != "1":
        forward.write_text("1\n")
    nft(render_nftables(plan), "base rules")
    resolv = runtime_dir / "resolv.conf"
    texts = []
    for candidate in (Path("/etc/resolv.conf"), Path("/run/systemd/resolve/resolv.conf")):
        try:
            texts.append(candidate.read_text())
        except OSError:
            continue
    runtime_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    # A build and the first dyno may both get here: each writes its own file.
    tmp = resolv.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(dyno_resolv_conf(texts))
    tmp.chmod(0o644)
    tmp.replace(resolv)
    add_dyno_hosts(runtime_dir / "hosts", (), plan.gateway)
    return resolv


def _set_gateway(ipr: IPRoute, idx: int, plan: BridgePlan) -> None:
    """The bridge's one IPv4 address: the plan's gateway with the pool's prefix. An
    address of another pool (dynod.toml's ``address_pool`` changed, e.g. the first
    machine of a cluster going from 10.213.0.0/16 to its /20) goes once the new one is
    there; secondaries are promoted, so the gateway of a running dyno keeps answering."""
    from pyroute2 import NetlinkError  # noqa: PLC0415 - see above
    have = {(a.get("address"), a["prefixlen"]) for a in ipr.get_addr(index=idx, family=2)}
    want = (str(plan.gateway), plan.pool.prefixlen)
    if want not in have:
        with contextlib.suppress(OSError):
            Path(f"/proc/sys/net/ipv4/conf/{plan.bridge}/promote_secondaries").write_text("1\n")
        try:
            ipr.addr("add", index=idx, address=want[0], prefixlen=want[1])
        except NetlinkError as exc:
            if exc.code != errno.EEXIST:
                raise
    for address, prefixlen in sorted(have - {want}):
        try:
            ipr.addr("del", index=idx, address=address, prefixlen=prefixlen)
        except NetlinkError as exc:
            if exc.code != errno.EADDRNOTAVAIL:  # removed meanwhile
                raise


def apply_peers(plan: BridgePlan, peers: Iterable[Peer]) -> None:
    """Make this machine's routes to peers' pools (protocol ``ROUTE_PROTO``) and the
    peer sets equal to ``peers``: missing routes added, changed ones replaced, those of
    members gone deleted. The bridge and table must exist (``ensure_bridge``).
    Idempotent. Raises Unavailable when the kernel or nft refuses (e.g. a peer's
    address is not on any network of this machine)."""
    from pyroute2 import IPRoute, NetlinkError  # noqa: PLC0415 - see above
    peers = list(peers)
    want = {r.dst: r for r in plan_peer_routes(peers)}
    try:
        with IPRoute() as ipr:
            have: dict[IPv4Network, IPv4Address | None] = {}
            for route in ipr.get_routes(family=2, table=254):
                if route["proto"] != ROUTE_PROTO:
                    continue
                dst = IPv4Network(f"{route.get_attr('RTA_DST')}/{route['dst_len']}")
                gw = route.get_attr("RTA_GATEWAY")
                have[dst] = IPv4Address(gw) if gw else None
            for dst in set(have) - set(want):
                with contextlib.suppress(NetlinkError):  # gone meanwhile
                    ipr.route("del", dst=str(dst), proto=ROUTE_PROTO)
            for dst, r in want.items():
                if have.get(dst) != r.via:
                    ipr.route("replace", dst=str(dst), gateway=str(r.via), proto=ROUTE_PROTO)
    except NetlinkError as exc:
        raise Unavailable(f"routes to the cluster's dyno pools: {exc}; check that every "
                          "member's address is on this machine's cluster network") from exc
    nft(render_peer_sets(peers), "the cluster's members")


def nft(script: str, what: str) -> str:
    try:
        return processes.output(["nft", "-f", "-"], input=script)
    except processes.CommandFailed as exc:
        raise Unavailable(f"nftables table ip {NFT_TABLE}: {what}: {exc}") from exc


def remove_bridge(plan: BridgePlan) -> None:
    """Delete the nftables table and the bridge. Idempotent."""
    from pyroute2 import IPRoute  # noqa: PLC0415 - see above
    try:
        processes.output(["nft", "-f", "-"],
                         input=f"table ip {NFT_TABLE}\ndelete table ip {NFT_TABLE}\n")
    except processes.CommandFailed as exc:
        raise Unavailable(f"nftables table ip {NFT_TABLE}: {exc}") from exc
    with IPRoute() as ipr:
        idx = _index(ipr, plan.bridge)
        if idx is not None:
            ipr.link("del", index=idx)


def used_addresses(bridge: str = BRIDGE) -> set[IPv4Address]:
    """Addresses of dynos whose host veth exists (read back from interface names)."""
    from pyroute2 import IPRoute  # noqa: PLC0415 - see above
    with IPRoute() as ipr:
        names = [link.get("ifname") for link in ipr.get_links()]
    return {a for a in (address_of_veth(str(n)) for n in names if n) if a is not None}


def list_dyno_netns() -> list[str]:
    """Dyno keys that have a ``dynod-*`` network namespace (for the supervisor)."""
    try:
        names = [p.name for p in NETNS_DIR.iterdir()]
    except FileNotFoundError:
        return []
    return sorted(n.removeprefix(NETNS_PREFIX) for n in names if n.startswith(NETNS_PREFIX))


NUD_REACHABLE = 0x02  # <linux/neighbour.h>


def _in_own_thread(fn: Callable[[], None]) -> None:
    """Run ``fn`` in a new thread and re-raise what it raised. A thread may move to
    another network namespace (unshare/setns act on the calling thread only) and it
    dies with its namespace; the daemon's other threads stay where they are."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            fn()
        except BaseException as exc:  # handed to the caller
            errors.append(exc)

    thread = threading.Thread(target=target, name="netns")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]


def _build_dyno_network(net: DynoNetwork) -> None:
    """In a throw-away thread: a host netlink socket first, then unshare the thread
    into a new netns and pin it at /run/netns (pyroute2's create and IPRoute(netns=)
    each fork a helper process: ~30 ms apiece), then configure both sides."""
    from pyroute2 import IPRoute, netns  # noqa: PLC0415 - see above
    with IPRoute() as ipr:  # stays in the host's netns, where it was opened
        bridge = _index(ipr, net.bridge)
        if bridge is None:
            raise Unavailable(f"bridge {net.bridge} is missing; ensure_bridge first")
        try:
            libc.unshare(libc.CLONE_NEWNET)
        except OSError as exc:
            raise OSError(exc.errno, "unshare(CLONE_NEWNET) failed") from exc
        netns.attach(net.netns, "thread-self")
        with IPRoute() as inner:  # in the dyno's netns
            ipr.link(
                "add",
                ifname=net.host_veth,
                kind="veth",
                peer={"ifname": "eth0", "net_ns_fd": net.netns},
            )
            host = _index(ipr, net.host_veth)
            assert host is not None
            ipr.link("set", index=host, master=bridge)
            ipr.brport("set", index=host, isolated=1)
            ipr.link("set", index=host, state="up")
            lo = _index(inner, "lo")
            eth0 = _index(inner, "eth0")
            assert lo is not None and eth0 is not None
            inner.link("set", index=lo, state="up")
            inner.addr("add", index=eth0, address=str(net.address), prefixlen=net.prefixlen)
            inner.link("set", index=eth0, state="up")
            inner.route("add", dst="0.0.0.0/0", gateway=str(net.gateway))
            # Loopback's router ports to the gateway (render_dyno_nftables): this
            # thread's /proc/sys/net and the nft it starts are the dyno's namespace's.
            Path("/proc/sys/net/ipv4/conf/eth0/route_localnet").write_text("1\n")
            nft(render_dyno_nftables(net), "the dyno's loopback to the router")
            # The host's neighbour entry for a reused address still names the last
            # dyno's MAC (or FAILED, if someone tried before eth0 was up): the first
            # connections would wait on ARP for up to a second. Tell it the new one.
            mac = inner.get_links(eth0)[0].get_attr("IFLA_ADDRESS")
            ipr.neigh("replace", dst=str(net.address), lladdr=mac, ifindex=bridge,
                      state=NUD_REACHABLE)


def create_dyno_network(net: DynoNetwork) -> None:
    """Create the netns, the veth pair (host end on the bridge, isolated; ``eth0``
    inside), lo up, the address and a default route via the bridge.

    The bridge must exist (``ensure_bridge``). On failure everything made so far is
    removed and Unavailable is raised; an existing netns of that name is an error
    (AlreadyExists would hide a leak: the supervisor removes stale ones first).
    """
    from pyroute2 import NetlinkError  # noqa: PLC0415 - see above
    if len(net.host_veth) > IFNAMSIZ:
        raise InvalidArgument(f"interface name {net.host_veth} is too long")
    if net.netns_path.exists():
        raise Unavailable(f"dyno {net.dyno}: network namespace {net.netns} exists; remove it")
    try:
        _in_own_thread(lambda: _build_dyno_network(net))
    except (NetlinkError, OSError) as exc:
        remove_dyno_network(net)
        raise Unavailable(f"dyno {net.dyno}: network: {exc}") from exc
    except Unavailable:
        remove_dyno_network(net)
        raise


def rename_dyno_network(net: DynoNetwork, dyno: str) -> DynoNetwork:
    """Give a ready network (a spare made ahead of time) to dyno ``dyno``: the netns is
    bound at its new name and unbound from the old one; the veth and addresses stay.
    Raises Unavailable if the new name is taken or the kernel refuses."""
    new = replace(net, dyno=dyno)
    if new.netns_path.exists():
        raise Unavailable(f"dyno {dyno}: network namespace {new.netns} exists; remove it")
    try:
        os.close(os.open(new.netns_path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
        try:
            libc.mount(net.netns_path, new.netns_path, "none", libc.MS_BIND)
        except OSError as exc:
            raise OSError(exc.errno, "bind mount failed") from exc
    except OSError as exc:
        with contextlib.suppress(OSError):
            new.netns_path.unlink()
        raise Unavailable(f"dyno {dyno}: network namespace: {exc}") from exc
    with contextlib.suppress(OSError):
        libc.umount(net.netns_path, libc.MNT_DETACH)
    with contextlib.suppress(OSError):
        net.netns_path.unlink()
    return new


def remove_netns(name: str) -> None:
    """Remove the ``dynod-*`` network namespace ``name`` if it exists. Idempotent."""
    from pyroute2 import netns  # noqa: PLC0415 - see above
    if name.startswith(NETNS_PREFIX) and (NETNS_DIR / name).exists():
        netns.remove(name)


def remove_dyno_network(net: DynoNetwork) -> None:
    """Remove the netns (the kernel then frees eth0 and its host peer) and the host
    veth if it is still there. Idempotent."""
    from pyroute2 import IPRoute, NetlinkError, netns  # noqa: PLC0415 - see above
    if net.netns_path.exists():
        netns.remove(net.netns)
    with IPRoute() as ipr:
        idx = _index(ipr, net.host_veth)
        if idx is not None:
            try:
                ipr.link("del", index=idx)
            except NetlinkError as exc:
                if exc.code != 19:  # ENODEV: the kernel freed it meanwhile
                    raise
