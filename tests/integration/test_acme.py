"""Automated Certificate Management against Debian's pebble (Let's Encrypt's test ACME
server) inside the sandbox machine: pebble resolves names with pebble-challtestsrv's DNS
and validates http-01 on the router's port 80, for real (PEBBLE_VA_ALWAYS_VALID=0); its
certificates live 60 s, so renewal (at a third of the lifetime left) happens in the test.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.integration.test_dynos import all_up, dynoctl, wait_for
from tests.integration.test_router import CLIENT, deploy_echo, haproxy_processes
from tests.sandbox.machine import Machine

pytestmark = pytest.mark.integration

HOST = "www.example.test"
PEBBLE_TLS = "/tmp/pebble-tls.pem"
ROOT = "/tmp/pebble-root.pem"
CHALLTESTSRV = "http://127.0.0.1:8055"
PEBBLE_CONFIG = {"pebble": {
    "listenAddress": "127.0.0.1:14000", "managementListenAddress": "127.0.0.1:15000",
    "certificate": PEBBLE_TLS, "privateKey": "/tmp/pebble-tls.key",
    "httpPort": 80, "tlsPort": 5001, "ocspResponderURL": "",
    "externalAccountBindingRequired": False, "certificateValidityPeriod": 60}}


def run_pebble(m: Machine, address: str = "127.0.0.1", lifetime: int = 60) -> None:
    """pebble and its DNS (no records yet) on ``m``, its directory on ``address``
    (https://ADDRESS:14000/dir, its certificate in PEBBLE_TLS); certificates it issues
    live ``lifetime`` seconds."""
    m.exec(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=localhost",
            "-addext", f"subjectAltName=DNS:localhost,IP:127.0.0.1,IP:{address}",
            "-keyout", "/tmp/pebble-tls.key", "-out", PEBBLE_TLS])
    config = {"pebble": {**PEBBLE_CONFIG["pebble"], "listenAddress": f"{address}:14000",
                         "certificateValidityPeriod": lifetime}}
    m.exec(["sh", "-c", f"cat > /tmp/pebble.json <<'EOF'\n{json.dumps(config)}\nEOF"])
    # Only names given an A record resolve: a domain whose record is gone fails.
    m.exec(["systemd-run", "--unit=challtestsrv", "pebble-challtestsrv",
            "-dns01", "127.0.0.1:8053", "-http01", "", "-https01", "", "-tlsalpn01", "",
            "-management", "127.0.0.1:8055", "-defaultIPv4", "", "-defaultIPv6", ""])
    m.exec(["systemd-run", "--unit=pebble", "-E", "PEBBLE_VA_ALWAYS_VALID=0",
            "-E", "PEBBLE_VA_NOSLEEP=1", "-E", "PEBBLE_AUTHZREUSE=0",
            "-E", "PEBBLE_WFE_NONCEREJECT=0",
            "pebble", "-config", "/tmp/pebble.json", "-dnsserver", "127.0.0.1:8053"])
    wait_for("pebble's directory", lambda: m.exec(
        ["curl", "-sf", "--cacert", PEBBLE_TLS, f"https://{address}:14000/dir"],
        check=False).returncode == 0)


def start_pebble(m: Machine) -> None:
    run_pebble(m)
    m.exec(["sh", "-c", "mkdir -p /etc/dynod && printf '%s\\n' "
            "'acme_directory = \"https://127.0.0.1:14000/dir\"' "
            f"'acme_ca_file = \"{PEBBLE_TLS}\"' > /etc/dynod/dynod.toml"])
    m.exec(["systemctl", "restart", "dynod.service"])


def dns(m: Machine, verb: str, **body: Any) -> None:
    m.exec(["curl", "-sSf", "-d", json.dumps(body), f"{CHALLTESTSRV}/{verb}"])


def served_serial(m: Machine) -> str:
    """The serial of the certificate the router serves for HOST, verified against
    pebble's root (curl fails otherwise)."""
    out = m.exec(["sh", "-c", f"openssl s_client -connect 127.0.0.1:443 -servername {HOST} "
                  f"-verify_return_error -CAfile {ROOT} </dev/null 2>/dev/null | "
                  "openssl x509 -noout -serial"], check=False)
    return out.stdout.strip().removeprefix("serial=") if out.returncode == 0 else ""


def https(m: Machine) -> dict[str, Any]:
    proc = m.exec(["curl", "-sS", "--cacert", ROOT, "--resolve", f"{HOST}:443:127.0.0.1",
                   f"https://{HOST}/tls"])
    return dict(json.loads(proc.stdout))


def test_acm_issues_renews_under_load_and_keeps_serving_when_failing(
        stack_machine: Machine) -> None:
    m = stack_machine
    start_pebble(m)
    deploy_echo(m, "shop")
    all_up(m, "shop", 1)
    dynoctl(m, "domains:add", "-a", "shop", HOST)
    dns(m, "add-a", host=f"{HOST}.", addresses=["127.0.0.1"])

    assert dynoctl(m, "certs:auto", "-a", "shop") == (
        "=== Automatic Certificate Management is disabled on ⬢ shop\n")
    bad = m.run(["dynoctl", "certs:auto:refresh", "-a", "shop"])
    assert bad.returncode == 1
    assert "Automatic Certificate Management is disabled" in bad.stderr
    assert "dynoctl certs:auto:enable -a shop" in bad.stderr

    out = m.run(["dynoctl", "certs:auto:enable", "-a", "shop", "--wait"], timeout=300)
    assert out.returncode == 0, out.stderr
    assert "Enabling Automatic Certificate Management... starting." in out.stderr
    status = dynoctl(m, "certs:auto", "-a", "shop").splitlines()
    assert status[0] == "=== Automatic Certificate Management is enabled on ⬢ shop"
    assert re.fullmatch(r"Domain +Status +Last Updated", status[2]), status
    assert re.fullmatch(rf"{re.escape(HOST)} +Cert issued +less than a minute", status[3])

    # The certificate verifies against pebble's root; the app sees HTTPS.
    m.exec(["sh", "-c", f"curl -sSf --cacert {PEBBLE_TLS} https://127.0.0.1:15000/roots/0 "
            f"> {ROOT}"])
    assert https(m)["headers"]["x-forwarded-proto"] == "https"
    first = served_serial(m)
    assert first

    # Renewal (a third of 60 s left) under 4 clients' HTTPS requests, each a new
    # handshake: none fails, both certificates are seen, HAProxy is not reloaded.
    procs = haproxy_processes(m)
    m.exec(["systemd-run", "--unit=tls-load", "--collect", "-p",
            "StandardOutput=file:/tmp/tls-load.json", "python3", str(CLIENT), "tls-steady",
            HOST, ROOT, "/tmp/tls-load.stop"])
    second = wait_for("a renewed certificate", lambda: (s := served_serial(m)) != first and s,
                      timeout=90)
    m.exec(["sleep", "2"])
    m.exec(["touch", "/tmp/tls-load.stop"])
    wait_for("the load to stop", lambda: m.exec(
        ["systemctl", "is-active", "tls-load"], check=False).stdout.strip() != "active")
    load = json.loads(m.exec(["cat", "/tmp/tls-load.json"]).stdout)
    assert load["failures"] == [], load
    assert load["requests"] > 100, load
    assert len(load["serials"]) == 2, load
    assert haproxy_processes(m) == procs

    # The domain's DNS stops pointing here: the next renewal fails, certs:auto says
    # Failing with pebble's reason, and the renewed certificate keeps serving.
    dns(m, "clear-a", host=f"{HOST}.")

    def failing() -> list[str] | None:
        lines = dynoctl(m, "certs:auto", "-a", "shop").splitlines()
        return lines if any("Failing" in line for line in lines) else None

    lines = wait_for("a failing renewal", failing, timeout=90)
    assert isinstance(lines, list)
    assert re.fullmatch(r"Domain +Status +Reason +Last Updated", lines[2]), lines
    assert re.match(rf"{re.escape(HOST)} +Failing +.*could not resolve", lines[3]), lines
    assert lines[-1] == ("=== Some domains are failing validation, please verify that "
                         "your DNS matches: dynoctl domains")
    assert served_serial(m) == second
    assert https(m)["headers"]["x-forwarded-proto"] == "https"
    assert haproxy_processes(m) == procs
