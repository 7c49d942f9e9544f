"""An etcd member's settings (dynod-etcd.service's ETCD_* variables) are data: which
cluster it makes or joins, TLS on both ports, and clear refusals of bad names."""

from __future__ import annotations

from pathlib import Path

import pytest

from dynod.errors import InvalidArgument
from dynod.system import etcd

A = etcd.Member("node-a", "10.0.0.1")
B = etcd.Member("node-b", "10.0.0.2")


def test_a_member_lists_every_peer_and_demands_certificates_on_both_ports() -> None:
    env = etcd.member_env(B, [A, B], etcd.ClusterState.EXISTING, "tok", Path("/var/lib/dynod"))
    assert env["ETCD_NAME"] == "node-b"
    assert env["ETCD_INITIAL_CLUSTER"] == \
        "node-a=https://10.0.0.1:2380,node-b=https://10.0.0.2:2380"
    assert env["ETCD_INITIAL_CLUSTER_STATE"] == "existing"
    assert env["ETCD_LISTEN_CLIENT_URLS"] == "https://10.0.0.2:2379"
    assert env["ETCD_DATA_DIR"] == "/var/lib/dynod/etcd"
    assert env["ETCD_CLIENT_CERT_AUTH"] == env["ETCD_PEER_CLIENT_CERT_AUTH"] == "true"
    assert env["ETCD_PEER_TRUSTED_CA_FILE"] == "/var/lib/dynod/cluster/tls/ca.crt"
    assert env["ETCD_LOG_PACKAGE_LEVELS"] == "auth=ERROR"
    assert all(not v.startswith("http://") for v in env.values())
    assert etcd.render_env(env).splitlines()[0] == "ETCD_NAME=node-b"


def test_ipv6_addresses_are_bracketed_in_urls() -> None:
    assert etcd.Member("node-c", "fd00::3").peer_url == "https://[fd00::3]:2380"


@pytest.mark.parametrize(("name", "address", "says"), [
    ("Node_A", "10.0.0.1", "lowercase letters, digits and dashes"),
    ("node-a", "node-a.example", "is not an IP address"),
])
def test_bad_names_and_addresses_are_refused(name: str, address: str, says: str) -> None:
    with pytest.raises(InvalidArgument, match=says):
        etcd.Member(name, address)


def test_two_members_with_one_address_are_refused() -> None:
    twin = etcd.Member("node-c", A.address)
    with pytest.raises(InvalidArgument, match=r"address 10\.0\.0\.1"):
        etcd.member_env(A, [A, twin], etcd.ClusterState.NEW, "t", Path("/x"))
    with pytest.raises(InvalidArgument, match="not among"):
        etcd.member_env(A, [B], etcd.ClusterState.NEW, "t", Path("/x"))


def test_a_path_systemd_would_split_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="ETCD_DATA_DIR"):
        etcd.render_env({"ETCD_DATA_DIR": "/var/lib/my dynod"})


def test_write_member_puts_the_settings_last_and_the_key_private(tmp_path: Path) -> None:
    env = etcd.member_env(A, [A], etcd.ClusterState.NEW, "t", tmp_path)
    etcd.write_member(tmp_path, env, "CA", "CERT", "KEY")
    assert (tmp_path / "cluster/tls/member.key").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "cluster/etcd.env").read_text() == etcd.render_env(env)
    assert (tmp_path / "etcd").is_dir()
