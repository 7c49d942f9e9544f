"""HTTPS on every app by default, and apps calling each other by URL (issue 16, items 3
and 5), on one machine: heroku/python-getting-started's Django layout with its production
settings, pushed with git, seen by curl as a user would, and from inside another app's
dyno."""

from __future__ import annotations

import json
import re
import shlex

import pytest

from tests.integration.test_builds import EXAMPLES, push, setup_push, sh
from tests.integration.test_dynos import all_up, dynoctl, wait_for
from tests.integration.test_router import deploy_echo, haproxy_processes, wait_line
from tests.sandbox.machine import Machine

pytestmark = [pytest.mark.integration, pytest.mark.network]

HOST = "django.dynod.localhost"
CA = "/tmp/dynod-ca.pem"


def curl(m: Machine, *args: str) -> tuple[int, str, str]:
    proc = m.exec(["curl", "-sS", "--max-time", "10", *args], check=False, timeout=60)
    return proc.returncode, proc.stdout, proc.stderr


def in_dyno(m: Machine, app: str, script: str) -> str:
    """What a one-off dyno of ``app`` prints for ``script`` (stdout and stderr)."""
    return sh(m, f"dynoctl run -a {app} -- {shlex.quote(script)} 2>&1", ok=False)[1]


def test_https_by_default_and_apps_calling_each_other(stack_machine: Machine) -> None:
    m = stack_machine
    setup_push(m, "django", str(EXAMPLES / "django-https"))
    out = push(m, "django")
    assert "remote:        https://django.dynod.localhost/ deployed to dynod" in out, out
    all_up(m, "django", 1)

    # The local CA, downloadable; the default certificate is in `certs`, Heroku's table.
    sh(m, f"dynoctl certs:ca > {CA}")
    pem = m.exec(["cat", CA]).stdout
    assert pem.startswith("-----BEGIN CERTIFICATE-----\n") and pem.count("BEGIN") == 1
    subject = m.exec(["openssl", "x509", "-noout", "-subject", "-in", CA]).stdout
    assert "dynod local CA" in subject, subject
    listing = dynoctl(m, "certs")
    assert re.search(r"^Name\s+Common Name\(s\)\s+Expires\s+Type\s*$", listing, re.M), listing
    assert re.search(r"^dynod-default\s+\*\.dynod\.localhost, dynod\.localhost\s+"
                     r"\d{4}-\d\d-\d\d \d\d:\d\d UTC\s+Local CA\s*$", listing, re.M), listing
    # The CA key never leaves the state directory, and only root reads it.
    assert m.exec(["stat", "-c", "%a", "/var/lib/dynod/tls/ca.key"]).stdout.strip() == "600"

    # Plain HTTP: Django's SECURE_SSL_REDIRECT sends the client to HTTPS (the router said
    # X-Forwarded-Proto: http).
    wait_for("the Django app", lambda: curl(
        m, "-o", "/dev/null", "-w", "%{http_code}", "-H", f"Host: {HOST}",
        "http://127.0.0.1/")[1] == "301", 60)
    code, out, err = curl(m, "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}",
                          "-H", f"Host: {HOST}", "http://127.0.0.1/")
    assert out == f"301 https://{HOST}/", (out, err)
    # HTTPS: 200, a certificate that verifies against the CA the user downloaded (curl
    # checks the name too), HTTP/2 to the client, X-Forwarded-Proto https to the app.
    code, out, err = curl(m, "--cacert", CA, "--resolve", f"{HOST}:443:127.0.0.1",
                          "-w", "\n%{http_code} %{http_version}", f"https://{HOST}/")
    assert code == 0, err
    assert out == "Getting started with Django over https (port 443)\n\n200 2", out
    # Its router line, Heroku's: the path in origin form even over HTTP/2.
    line = wait_line(m, "django", "protocol=https")
    assert line.startswith(f'at=info method=GET path="/" host={HOST} '), line
    # Without the CA the same request fails: it is the CA that makes it verify.
    code, _, err = curl(m, "--resolve", f"{HOST}:443:127.0.0.1", f"https://{HOST}/")
    assert code == 60 and "certificate" in err, err
    # HTTP/1.1 clients too.
    assert curl(m, "--http1.1", "--cacert", CA, "--resolve", f"{HOST}:443:127.0.0.1",
                "-o", "/dev/null", "-w", "%{http_code} %{http_version}",
                f"https://{HOST}/")[1] == "200 1.1"

    # A certificate of the user's own: installed in the running router, no reload.
    procs = haproxy_processes(m)
    m.exec(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-days", "2", "-subj", "/CN=www.example.test",
            "-addext", "subjectAltName=DNS:www.example.test",
            "-keyout", "/tmp/www.key", "-out", "/tmp/www.crt"])
    dynoctl(m, "domains:add", "-a", "django", "www.example.test")
    assert dynoctl(m, "certs:add", "/tmp/www.crt", "/tmp/www.key").endswith(
        "Certificate www-example-test for www.example.test\n")
    code, out, err = curl(m, "--cacert", "/tmp/www.crt", "--resolve",
                          "www.example.test:443:127.0.0.1", "https://www.example.test/")
    assert (code, out) == (0, "Getting started with Django over https (port 443)\n"), err
    assert haproxy_processes(m) == procs
    # The default one is dynod's: it cannot be removed.
    proc = m.exec(["dynoctl", "certs:remove", "dynod-default"], check=False)
    assert proc.returncode != 0 and "made and renewed by dynod" in proc.stderr, proc.stderr

    # Apps call each other by URL, through the router, trusting the local CA.
    deploy_echo(m, "caller")
    all_up(m, "caller", 1)
    out = in_dyno(m, "caller", f"curl -sS --max-time 10 https://{HOST}/")
    assert "Getting started with Django over https (port 443)" in out, out
    out = in_dyno(m, "caller", f"curl -sS --max-time 10 -o /dev/null -w '%{{http_code}}' "
                               f"http://{HOST}/")
    assert out.strip().endswith("301"), out
    # Programs that resolve with the C library (Python here) find it in /etc/hosts.
    out = in_dyno(m, "caller", "python3 -c \"import urllib.request; print(urllib.request."
                               f"urlopen('https://{HOST}/', timeout=10).read().decode())\"")
    assert "Getting started with Django over https" in out, out

    # ... and still nothing else of the host: sshd (listening, as the host shows), the
    # router's admin socket, the other app's dyno.
    gateway = "10.213.0.1"
    assert "open" in sh(m, f"timeout 5 bash -c '</dev/tcp/{gateway}/22' && echo open")[1]
    other = json.loads(m.exec(["sh", "-c", "cat /run/dynod/dynos/django.web.1.*/dyno.json"
                               ]).stdout)["address"]
    assert curl(m, f"http://{other}:5000/", "-o", "/dev/null", "-w", "%{http_code}",
                "-H", f"Host: {HOST}")[1] == "301"  # the host reaches it (the router does)
    out = in_dyno(m, "caller",
                  f"for t in {gateway}/22 {other}/5000; do timeout 5 bash -c \"</dev/tcp/$t\" "
                  "&& echo $t open || echo $t closed; done; "
                  "test -e /run/dynod/router/admin.sock && echo admin visible || "
                  "echo admin absent")
    assert f"{gateway}/22 closed" in out and f"{other}/5000 closed" in out, out
    assert "admin absent" in out, out
