"""HTTPS by default (issue 16 item 3) and dynos reaching the router (item 5): the local
CA, the default certificate's renewal, the certificate store's runtime-API calls, the
router's TLS bind, and the dyno network's rules and names. The process boundary (HAProxy's
admin socket) is faked; the certificates are real and checked with Python's ssl."""

from __future__ import annotations

import socket
import ssl
import threading
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from dynod import paths
from dynod.errors import FailedPrecondition, Unavailable
from dynod.router import local_ca
from dynod.router.cert_store import DEFAULT, CertStore
from dynod.router.haproxy_config import RouterPaths, render_config
from dynod.runtime import dynos
from dynod.settings import Settings
from dynod.system import dyno_names, mounts, netns

NOW = datetime(2030, 1, 1, tzinfo=UTC)


def test_the_ca_is_made_once_with_a_private_key(tmp_path: Path) -> None:
    d = tmp_path / "tls"
    ca = local_ca.ensure_ca(d, NOW)
    assert (d / "ca.key").stat().st_mode & 0o777 == 0o600
    assert d.stat().st_mode & 0o777 == 0o700
    assert local_ca.ensure_ca(d) == ca  # kept: clients trust this one
    assert paths.ca_certificate(tmp_path).read_text() == ca.cert_pem
    # A certificate whose key is lost is not silently replaced.
    (d / "ca.key").unlink()
    with pytest.raises(FailedPrecondition, match="restore the key"):
        local_ca.ensure_ca(d)


def _serve_once(cert_pem: str, key_pem: str, tmp_path: Path) -> tuple[int, threading.Thread]:
    (tmp_path / "leaf.pem").write_text(cert_pem + key_pem)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp_path / "leaf.pem")
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        with listener, listener.accept()[0] as raw:
            try:
                with ctx.wrap_socket(raw, server_side=True) as conn:
                    conn.recv(1)
            except ssl.SSLError:
                pass  # the client refused the certificate (what one case expects)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return port, thread


def test_the_default_certificate_verifies_against_the_ca_for_every_app(
        tmp_path: Path) -> None:
    ca = local_ca.ensure_ca(tmp_path / "tls")
    now = datetime.now(UTC)
    cert_pem, key_pem = local_ca.issue(ca, local_ca.default_names("dynod.localhost"), now)
    assert local_ca.names_of(cert_pem) == ("*.dynod.localhost", "dynod.localhost")
    assert local_ca.expires_at(cert_pem) - now > timedelta(days=89)
    (tmp_path / "ca.pem").write_text(ca.cert_pem)
    client = ssl.create_default_context(cafile=tmp_path / "ca.pem")
    port, thread = _serve_once(cert_pem, key_pem, tmp_path)
    with socket.create_connection(("127.0.0.1", port)) as raw, \
            client.wrap_socket(raw, server_hostname="shop.dynod.localhost") as tls:
        peer = tls.getpeercert()
        assert peer is not None
        assert peer["subject"] == ((("commonName", "*.dynod.localhost"),),)
        tls.send(b"x")
    thread.join(5)
    # Another app's name is covered, another domain's is not.
    port, thread = _serve_once(cert_pem, key_pem, tmp_path)
    with socket.create_connection(("127.0.0.1", port)) as raw, pytest.raises(
            ssl.SSLCertVerificationError, match="Hostname mismatch"):
        client.wrap_socket(raw, server_hostname="shop.example.com")
    thread.join(5)


class FakeStore:
    def __init__(self) -> None:
        self.files: dict[str, str] = {}
        self.installs = 0

    def read(self, name: str) -> str | None:
        return self.files.get(name)

    def install(self, name: str, cert_pem: str, key_pem: str) -> Path:
        self.files[name] = cert_pem + key_pem
        self.installs += 1
        return Path(name)


def test_the_default_certificate_is_renewed_30_days_before_expiry(tmp_path: Path) -> None:
    ca = local_ca.ensure_ca(tmp_path / "tls", NOW)
    store = FakeStore()
    assert local_ca.renew_default(store, DEFAULT, ca, "dynod.localhost", NOW)
    first = store.files[DEFAULT]
    # Checked daily: nothing to do until 30 days are left.
    for day in range(0, 60):
        assert not local_ca.renew_default(store, DEFAULT, ca, "dynod.localhost",
                                          NOW + timedelta(days=day))
    assert local_ca.renew_default(store, DEFAULT, ca, "dynod.localhost",
                                  NOW + timedelta(days=60, hours=1))
    assert store.files[DEFAULT] != first and store.installs == 2
    renewed = NOW + timedelta(days=60, hours=1)
    assert local_ca.expires_at(store.files[DEFAULT]) - renewed > timedelta(days=89)
    # A changed domain, or a certificate from another CA, is replaced at once.
    assert local_ca.renew_default(store, DEFAULT, ca, "apps.example.com", renewed)
    assert local_ca.names_of(store.files[DEFAULT]) == ("*.apps.example.com",
                                                       "apps.example.com")
    other = local_ca.make_ca(renewed, "elsewhere")
    assert local_ca.needs_renewal(store.files[DEFAULT], other, ("*.apps.example.com",
                                                                "apps.example.com"), renewed)


class FakeHaproxy:
    """The admin socket's answers for ssl cert commands (HAProxy 2.6's wording)."""

    def __init__(self, loaded: set[str], running: bool = True) -> None:
        self.loaded = loaded
        self.running = running
        self.commands: list[str] = []

    def __call__(self, command: str) -> str:
        if not self.running:
            raise Unavailable("router: admin socket: connection refused")
        self.commands.append(command.split(" <<", maxsplit=1)[0])
        verb = " ".join(command.split()[:3])
        path = command.split()[3] if len(command.split()) > 3 else ""
        if verb == "show ssl cert":
            return "# filename\n" + "".join(f"{p}\n" for p in sorted(self.loaded))
        if verb == "new ssl cert":
            self.loaded.add(path)
            return f"New empty certificate store '{path}'!\n"
        if verb == "set ssl cert":
            assert "\n\n" not in command and command.endswith("-----\n")
            return f"Transaction created for certificate {path}!\n"
        if verb == "commit ssl cert":
            return f"Committing {path}.\nSuccess!\n"
        if verb == "add ssl crt-list":
            return f"Inserting certificate '{command.split()[4]}' in crt-list '{path}'.\nSuccess!\n"
        if verb == "del ssl crt-list":
            return f"Entry '{command.split()[4]}' deleted in crtlist '{path}'!\n"
        if verb == "del ssl cert":
            self.loaded.discard(path)
            return f"Certificate '{path}' deleted!\n"
        return "Unknown command\n"


def test_certificates_reach_the_running_haproxy_without_a_reload(tmp_path: Path) -> None:
    ca = local_ca.ensure_ca(tmp_path / "tls")
    cert_pem, key_pem = local_ca.issue(ca, ("www.example.test",), datetime.now(UTC))
    certs, crt_list = tmp_path / "certs", tmp_path / "crt-list"
    haproxy = FakeHaproxy(set())
    store = CertStore(certs, crt_list, haproxy)
    path = store.install("www-example-test", cert_pem, key_pem + "\n\n")
    p = str(path)
    assert haproxy.commands == ["show ssl cert", f"new ssl cert {p}", f"set ssl cert {p}",
                                f"commit ssl cert {p}", f"add ssl crt-list {crt_list} {p}"]
    assert path.stat().st_mode & 0o777 == 0o600
    # Replacing it: a transaction on the loaded one, nothing added to the crt-list.
    haproxy.commands.clear()
    store.install("www-example-test", cert_pem, key_pem)
    assert haproxy.commands == ["show ssl cert", f"set ssl cert {p}", f"commit ssl cert {p}"]
    # The default one comes first in the crt-list (what a client without SNI gets).
    store.install(DEFAULT, cert_pem, key_pem)
    assert crt_list.read_text().splitlines() == [f"{certs}/{DEFAULT}.pem", p]
    haproxy.commands.clear()
    store.remove("www-example-test")
    assert haproxy.commands == ["show ssl cert", f"del ssl crt-list {crt_list} {p}",
                                f"del ssl cert {p}"]
    assert crt_list.read_text() == f"{certs}/{DEFAULT}.pem\n" and not path.exists()
    # HAProxy not running: the files are enough (it reads them when it starts).
    haproxy.running = False
    assert store.install("again", cert_pem, key_pem).exists()
    assert crt_list.read_text().splitlines()[-1].endswith("/again.pem")


def test_port_443_is_always_served_with_http2(tmp_path: Path) -> None:
    config = render_config(RouterPaths(tmp_path), {}, tls=True)
    binds = [line.strip() for line in config.splitlines() if ":443" in line]
    assert binds == [f"bind :443 ssl crt-list {tmp_path}/crt-list alpn h2,http/1.1",
                     f"bind :::443 v6only ssl crt-list {tmp_path}/crt-list alpn h2,http/1.1"]
    assert "http-request set-header X-Forwarded-Proto %[var(txn.proto)]" in config
    assert "http-request set-header X-Forwarded-Port %[dst_port]" in config


def test_dynos_reach_the_routers_ports_and_nothing_else_of_the_host() -> None:
    plan = netns.plan_bridge("10.213.0.0/16")
    rules = netns.render_nftables(plan).splitlines()
    accept = 'add rule ip dynod input iifname "dynod0" tcp dport { 80, 443 } ' \
             "ct direction original accept"
    # After the add-on chain, before the drop of everything else the bridge sends.
    i = rules.index(accept)
    assert rules[i - 1].endswith("jump addons")
    assert rules[i + 2] == 'add rule ip dynod input iifname "dynod0" drop'
    net = netns.plan_dyno_network(plan, "shop.web.1.1", IPv4Address("10.213.0.9"))
    inner = netns.render_dyno_nftables(net)
    assert "ip daddr 127.0.0.0/8 tcp dport { 80, 443 } dnat to 10.213.0.1" in inner
    assert 'oifname "eth0" ip saddr 127.0.0.0/8 masquerade' in inner
    assert 'iifname "eth0" ip daddr 127.0.0.0/8 ct direction original drop' in inner


def test_the_dynos_hosts_file_only_grows_in_place(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    gw = IPv4Address("10.213.0.1")
    dyno_names.add_dyno_hosts(hosts, ["shop.dynod.localhost"], gw)
    inode = hosts.stat().st_ino
    dyno_names.add_dyno_hosts(hosts, ["shop.dynod.localhost", "blog.dynod.localhost"], gw)
    dyno_names.add_dyno_hosts(hosts, ["blog.dynod.localhost"], gw)  # shop was destroyed: kept
    assert hosts.stat().st_ino == inode  # bound into running dynos: never replaced
    assert hosts.read_text() == (dyno_names.HOSTS_HEAD + "10.213.0.1\tshop.dynod.localhost\n"
                                 "10.213.0.1\tblog.dynod.localhost\n")


def test_dynos_trust_the_local_ca_beside_the_stacks_own(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path / "state", runtime_dir=tmp_path / "run")
    stack = tmp_path / "debian-13"
    bundle = stack / "etc/ssl/certs/ca-certificates.crt"
    bundle.parent.mkdir(parents=True)
    bundle.write_text("-----BEGIN CERTIFICATE-----\nstack\n-----END CERTIFICATE-----\n")
    assert dynos.trust_bundle(settings, stack) is None  # no CA yet: the stack's as it is
    ca = local_ca.ensure_ca(paths.tls_dir(settings.state_dir))
    out = dynos.trust_bundle(settings, stack)
    assert out is not None and out.read_text() == bundle.read_text() + "# dynod local CA\n" \
        + ca.cert_pem
    assert bundle.read_text().count("BEGIN") == 1  # the stack is never written
    binds = mounts.dyno_binds(Path("/i"), Path("/r"), Path("/h"), out)
    assert [str(b.target) for b in binds] == ["/dyno-init", "/etc/resolv.conf", "/etc/hosts",
                                              "/etc/ssl/certs/ca-certificates.crt"]
