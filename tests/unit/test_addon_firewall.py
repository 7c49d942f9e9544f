"""The nftables text of add-on access (system/addon_firewall.py)."""

from __future__ import annotations

import json
from ipaddress import IPv4Address

from dynod.system import addon_firewall as af
from dynod.system import netns

PLAN = netns.plan_bridge("10.213.0.0/16")
A2, A3, A9 = (IPv4Address(f"10.213.0.{n}") for n in (2, 3, 9))


def _rules(text: str) -> list[str]:
    return [line.strip().removeprefix("add rule ip dynod ") for line in text.splitlines()
            if line.strip().startswith("add rule ")]


def test_render_addon_rules_one_set_per_port() -> None:
    text = af.render_addon_rules(PLAN, {5432: {A3, A2}, 6380: set()}, stale=[6381, 5432],
                                 server_uids=[108, 107, 108])
    lines = [line.strip() for line in text.splitlines()]
    assert "set addon_5432 {" in lines and "set addon_6380 {" in lines
    # Members are replaced in the same transaction as the rules; an empty set has none.
    assert "flush set ip dynod addon_5432" in lines
    assert "add element ip dynod addon_5432 { 10.213.0.2, 10.213.0.3 }" in lines
    assert not any(line.startswith("add element ip dynod addon_6380") for line in lines)
    rules = _rules(text)
    # Every packet of a dyno's connection is checked, not just the first one.
    assert rules[:4] == [
        "addons tcp dport 5432 ct direction original ip saddr @addon_5432 accept",
        "addons tcp dport 5432 ct direction original drop",
        "addons tcp dport 6380 ct direction original ip saddr @addon_6380 accept",
        "addons tcp dport 6380 ct direction original drop",
    ]
    # The servers' users may not open add-on ports over loopback (one add-on to another).
    assert rules[4] == ('addons_output oifname "lo" ip daddr 10.213.0.1 tcp dport '
                        "{ 5432, 6380 } meta skuid { 107, 108 } reject with tcp reset")
    # A stale port's set goes, after the chain that named it was flushed; a live one stays.
    assert lines[-1] == "delete set ip dynod addon_6381"
    assert lines.index("flush chain ip dynod addons") < lines.index(lines[-1])
    assert "delete set ip dynod addon_5432" not in lines
    assert text.count("{") == text.count("}")


def test_render_addon_rules_without_addons_keeps_chains_empty() -> None:
    text = af.render_addon_rules(PLAN, {}, server_uids=[108])
    assert _rules(text) == []
    assert "flush chain ip dynod addons" in text


def test_render_members_adds_and_deletes_elements_only() -> None:
    text = af.render_addon_members({6380: {A9}, 5432: set()}, {5432: {A3, A2}})
    assert text == ("add element ip dynod addon_6380 { 10.213.0.9 }\n"
                    "delete element ip dynod addon_5432 { 10.213.0.2, 10.213.0.3 }\n")
    assert af.render_addon_members({}, {5432: set()}) == ""


def test_parse_addon_sets() -> None:
    listing = json.dumps({"nftables": [
        {"metainfo": {"json_schema_version": 1}},
        {"table": {"family": "ip", "name": "dynod"}},
        {"set": {"family": "ip", "name": "addon_5432", "table": "dynod",
                 "type": "ipv4_addr", "elem": ["10.213.0.2", "10.213.0.3"]}},
        {"set": {"family": "ip", "name": "addon_6380", "table": "dynod", "type": "ipv4_addr"}},
        {"set": {"family": "ip", "name": "other", "table": "dynod", "type": "ipv4_addr"}},
        {"chain": {"family": "ip", "name": "addons", "table": "dynod"}},
    ]})
    assert af.parse_addon_sets(listing) == {5432: {A2, A3}, 6380: set()}
