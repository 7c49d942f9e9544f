from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

import pytest

from dynod.errors import InvalidArgument, ResourceExhausted
from dynod.system import dyno_names, netns


def test_plan_bridge() -> None:
    plan = netns.plan_bridge("10.213.0.0/16")
    assert plan.gateway == IPv4Address("10.213.0.1")
    assert plan.bridge == "dynod0"
    for bad in ("10.213.0.1/16", "nonsense", "10.0.0.0/30", "fd00::/64"):
        with pytest.raises(InvalidArgument):
            netns.plan_bridge(bad)


def test_allocate_lowest_free_never_gateway() -> None:
    plan = netns.plan_bridge("10.213.0.0/16")
    assert netns.allocate_address(plan, set()) == IPv4Address("10.213.0.2")
    used = {IPv4Address("10.213.0.2"), IPv4Address("10.213.0.4")}
    assert netns.allocate_address(plan, used) == IPv4Address("10.213.0.3")
    # Addresses outside the pool (a stale veth) do not matter.
    assert netns.allocate_address(plan, {IPv4Address("192.168.0.2")}) == IPv4Address("10.213.0.2")


def test_allocate_exhaustion_names_the_setting() -> None:
    plan = netns.plan_bridge("10.9.0.0/29")  # hosts .1-.6, .1 is the bridge
    used: set[IPv4Address] = set()
    for _ in range(5):
        used.add(netns.allocate_address(plan, used))
    assert used == {IPv4Address(f"10.9.0.{i}") for i in range(2, 7)}
    with pytest.raises(ResourceExhausted, match="address_pool"):
        netns.allocate_address(plan, used)


def test_veth_names_encode_the_address() -> None:
    for addr in ("10.213.0.2", "255.255.255.254", "0.0.0.1"):
        name = netns.veth_name(IPv4Address(addr))
        assert len(name) <= netns.IFNAMSIZ
        assert netns.address_of_veth(name) == IPv4Address(addr)
    assert netns.veth_name(IPv4Address("10.213.0.3")) == "dv0ad50003"
    for other in ("eth0", "dynod0", "dv", "dvzzzzzzzz", "dv0ad5000"):
        assert netns.address_of_veth(other) is None


def test_plan_dyno_network() -> None:
    plan = netns.plan_bridge("10.213.0.0/16")
    net = netns.plan_dyno_network(plan, "shop-web.1", IPv4Address("10.213.0.9"))
    assert net.netns == "dynod-shop-web.1"
    assert str(net.netns_path) == "/run/netns/dynod-shop-web.1"
    assert (net.gateway, net.prefixlen, net.host_veth) == (
        IPv4Address("10.213.0.1"),
        16,
        "dv0ad50009",
    )
    for addr in ("10.213.0.1", "10.213.0.0", "10.213.255.255", "10.214.0.2"):
        with pytest.raises(InvalidArgument):
            netns.plan_dyno_network(plan, "x", IPv4Address(addr))
    with pytest.raises(InvalidArgument):
        netns.plan_dyno_network(plan, "a/b", IPv4Address("10.213.0.2"))


def test_ip_allow_list_excludes_other_dynos_and_metadata() -> None:
    plan = netns.plan_bridge("10.213.0.0/16")
    net = netns.plan_dyno_network(plan, "x", IPv4Address("10.213.0.5"))
    allow = netns.ip_allow_list(net, plan.pool)
    own, world = allow[:3], allow[3:]
    assert own == [
        IPv4Network("127.0.0.0/8"),
        IPv4Network("10.213.0.5/32"),
        IPv4Network("10.213.0.1/32"),
    ]
    for n in world:
        assert not n.overlaps(plan.pool)
        assert not n.overlaps(netns.METADATA)
    covered = sum(n.num_addresses for n in world)
    assert covered == 2**32 - plan.pool.num_addresses - netns.METADATA.num_addresses
    assert any(IPv4Address("1.1.1.1") in n for n in world)


def test_render_nftables() -> None:
    text = netns.render_nftables(netns.plan_bridge("10.213.0.0/16"))
    lines = [line.strip() for line in text.splitlines()]
    # Idempotent, and it never deletes the table: the add-on chain and sets survive a
    # build or a new dyno host rendering it again; the base chains are rewritten.
    assert lines[0] == "table ip dynod {"
    assert not any(line.startswith(("delete", "flush set", "flush table")) for line in lines)
    assert "flush chain ip dynod addons" not in lines
    for chain in ("postrouting", "forward", "input"):
        assert f"flush chain ip dynod {chain}" in lines
    rules = [line.removeprefix("add rule ip dynod ") for line in lines
             if line.startswith("add rule ")]
    assert 'postrouting ip saddr 10.213.0.0/16 oifname != "dynod0" masquerade' in rules
    assert 'forward iifname "dynod0" ip daddr 169.254.0.0/16 drop' in rules
    assert 'forward oifname "dynod0" drop' in rules
    # The bridge's traffic to the gateway goes through the add-on chain first: a dyno that
    # loses access loses its established sessions too; then replies, then nothing.
    order = [
        'input iifname "dynod0" ip daddr 10.213.0.1 jump addons',
        'input iifname "dynod0" ct state established,related accept',
        'input iifname "dynod0" drop',
    ]
    assert [rules.index(r) for r in order] == sorted(rules.index(r) for r in order)
    # The gateway's address is not reachable from the public side.
    assert 'input iifname != { "dynod0", "lo" } ip daddr 10.213.0.1 drop' in rules
    assert text.count("{") == text.count("}")


def test_resolv_conf_skips_loopback_stubs() -> None:
    stub = "nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch lan\n"
    upstream = "# resolved\nnameserver 192.168.1.1\nnameserver fe80::1%eth0\nnameserver 9.9.9.9\n"
    out = dyno_names.dyno_resolv_conf([stub, upstream])
    assert "nameserver 192.168.1.1\nnameserver 9.9.9.9\n" in out
    assert "127.0.0.53" not in out and "fe80" not in out
    assert dyno_names.dyno_resolv_conf(["nameserver 10.0.0.1\n", upstream]).endswith(
        "nameserver 10.0.0.1\n"
    )
    assert "nameserver" not in dyno_names.dyno_resolv_conf([stub]).replace("# dynod", "")
    assert "nameserver" not in dyno_names.dyno_resolv_conf([])


def test_resolv_conf_retries_a_lost_query_soon_and_often() -> None:
    """glibc's defaults (5 s, 2 tries) made two dropped datagrams a failed build
    (issue 14 item 5): a lookup is retried after 1 s, 5 times; the chosen file's other
    options are kept, its own timeout and attempts are not."""
    out = dyno_names.dyno_resolv_conf(["nameserver 127.0.0.53\noptions edns0\n",
                                  "options timeout:5 rotate\noptions attempts:2 rotate\n"
                                  "nameserver 10.255.255.53\n"])
    assert out.splitlines()[1:] == ["options rotate timeout:1 attempts:5",
                                    "nameserver 10.255.255.53"], out
    plain = dyno_names.dyno_resolv_conf(["nameserver 9.9.9.9\n"])
    assert "options timeout:1 attempts:5\nnameserver 9.9.9.9\n" in plain, plain
    assert "options" not in dyno_names.dyno_resolv_conf(["nameserver 127.0.0.1\n"])
