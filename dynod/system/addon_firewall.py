"""Add-on access on the dynos' bridge: which dyno addresses may open connections to
each add-on port on the gateway, as nftables sets in dynod's ``ip dynod`` table.

Shape (``netns.render_nftables`` makes ``input`` jump here for everything the bridge
sends to the gateway, before the established-flow accept)::

    set addon_5432 { type ipv4_addr; elements = { 10.213.0.2, 10.213.0.7 } }
    chain addons {
        tcp dport 5432 ct direction original ip saddr @addon_5432 accept
        tcp dport 5432 ct direction original drop
    }

* Postgres has one port for every Postgres add-on, so its set is the union of the
  apps' dynos that have one; the server's pg_hba.conf then admits each address to its
  own database only (``AddonServices.admit``). Redis has a port per add-on.
* What is not in a set is dropped: another app's dynos, a build container, an app that
  was detached (its established sessions too: every packet is matched, not the first).
* The public side: the gateway's address answers only on the bridge and loopback
  (``render_nftables``), and the servers bind only that address.
* Other add-ons: the servers are processes on the host, outside the bridge; they reach
  the gateway over loopback, where the ``addons_output`` chain turns the servers' users
  away from add-on ports (a Redis client could otherwise make its instance REPLICAOF
  or MIGRATE to another instance).

Membership changes are ``add element``/``delete element``; the chain and sets are
rewritten only when a port appears or goes, in one transaction either way.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from ipaddress import IPv4Address

from dynod.system import netns, processes

ADDON_SET_PREFIX = "addon_"


def addon_set(port: int) -> str:
    """The nftables set of the dyno addresses that may reach add-on port ``port``."""
    return f"{ADDON_SET_PREFIX}{port}"


def _elements(addresses: Iterable[IPv4Address]) -> str:
    return ", ".join(str(a) for a in sorted(addresses))


def render_addon_rules(plan: netns.BridgePlan, members: Mapping[int, Iterable[IPv4Address]],
                       stale: Iterable[int] = (), server_uids: Iterable[int] = ()) -> str:
    """The add-on part of the table, replaced in one transaction: for each add-on
    port on the gateway a set ``addon_<port>`` of the dyno addresses that may reach it,
    and the ``addons`` chain (jumped to by ``input`` for everything the bridge sends to
    the gateway, before the established-flow accept).

    Every packet a dyno sends to the port in the original direction is matched, not
    only the first: a dyno that leaves the set loses its established sessions at once
    too (no conntrack flush needed); a non-member's is dropped (a timeout, never a
    refusal that would tell which ports exist). ``stale``: ports whose sets are deleted.
    ``server_uids``: the add-on servers' users, which may not connect to add-on ports
    over loopback (Redis' REPLICAOF/MIGRATE would let one instance reach another).
    """
    t = f"ip {netns.NFT_TABLE}"
    ports = sorted(members)
    head = [f"table {t} {{", f"\tchain {netns.ADDONS_CHAIN} {{", "\t}"]
    for port in ports:
        head += [f"\tset {addon_set(port)} {{", "\t\ttype ipv4_addr", "\t}"]
    head += [f"\tchain {netns.ADDONS_OUTPUT_CHAIN} {{",
             "\t\ttype filter hook output priority filter; policy accept;", "\t}", "}"]
    body = [f"flush chain {t} {netns.ADDONS_CHAIN}", f"flush chain {t} {netns.ADDONS_OUTPUT_CHAIN}"]
    for port in ports:
        name = addon_set(port)
        body.append(f"flush set {t} {name}")
        if elements := _elements(members[port]):
            body.append(f"add element {t} {name} {{ {elements} }}")
        body.append(f"add rule {t} {netns.ADDONS_CHAIN} tcp dport {port} ct direction original "
                    f"ip saddr @{name} accept")
        body.append(f"add rule {t} {netns.ADDONS_CHAIN} tcp dport {port} "
                    "ct direction original drop")
    uids = sorted(set(server_uids))
    if ports and uids:
        body.append(
            f"add rule {t} {netns.ADDONS_OUTPUT_CHAIN} oifname \"lo\" ip daddr {plan.gateway} "
            f"tcp dport {{ {', '.join(map(str, ports))} }} "
            f"meta skuid {{ {', '.join(map(str, uids))} }} reject with tcp reset")
    for port in sorted(set(stale) - set(ports)):
        body.append(f"delete set {t} {addon_set(port)}")
    return "\n".join(head + body) + "\n"


def render_addon_members(add: Mapping[int, Iterable[IPv4Address]],
                         remove: Mapping[int, Iterable[IPv4Address]]) -> str:
    """Membership changes only (``add element``/``delete element``): no rule or set
    is replaced. Empty when nothing changes."""
    t = f"ip {netns.NFT_TABLE}"
    lines = []
    for verb, changes in (("add", add), ("delete", remove)):
        for port in sorted(changes):
            if elements := _elements(changes[port]):
                lines.append(f"{verb} element {t} {addon_set(port)} {{ {elements} }}")
    return "".join(line + "\n" for line in lines)


def parse_addon_sets(listing: str) -> dict[int, set[IPv4Address]]:
    """``nft -j list table ip dynod`` -> add-on port -> member addresses."""
    found: dict[int, set[IPv4Address]] = {}
    for item in json.loads(listing).get("nftables", []):
        st = item.get("set") if isinstance(item, dict) else None
        if not isinstance(st, dict):
            continue
        digits = str(st.get("name", "")).removeprefix(ADDON_SET_PREFIX)
        if digits == st.get("name") or not digits.isdigit():
            continue
        found[int(digits)] = {IPv4Address(e) for e in st.get("elem", []) if isinstance(e, str)}
    return found


class AddonFirewall:
    """The kernel side of add-on access: the ``addon_<port>`` sets and their rules in
    the ``ip dynod`` table. Every method is one nft transaction; Unavailable when nft
    refuses (nothing is then changed)."""

    def __init__(self, plan: netns.BridgePlan, server_uids: Iterable[int] = ()) -> None:
        self.plan = plan
        self.server_uids = tuple(server_uids)

    def read(self) -> dict[int, set[IPv4Address]]:
        """The add-on sets there are now (none when the table is missing)."""
        try:
            listing = processes.output(["nft", "-j", "list", "table", "ip", netns.NFT_TABLE])
        except processes.CommandFailed:
            return {}
        return parse_addon_sets(listing)

    def replace(self, members: Mapping[int, Iterable[IPv4Address]],
                stale: Iterable[int] = ()) -> None:
        """Sets, members and rules exactly as given (a port appeared or went)."""
        netns.nft(render_addon_rules(self.plan, members, stale, self.server_uids), "add-on rules")

    def update(self, add: Mapping[int, Iterable[IPv4Address]],
               remove: Mapping[int, Iterable[IPv4Address]]) -> None:
        """Add and delete members of existing sets; every other rule stays."""
        if script := render_addon_members(add, remove):
            netns.nft(script, "add-on members")
