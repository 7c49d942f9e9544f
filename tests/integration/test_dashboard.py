"""The web dashboard in a real browser: from the sandbox's laptop network namespace,
chromium (through Selenium) signs in, sees the app, scales web to 2, rolls back a
release and watches a request's router line arrive in the log tail. curl shows what a
client without a session or a CSRF token gets. Screenshots of each page are saved
under .state/artefacts/dashboard/ (the path is printed)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tests.integration.test_builds import sh
from tests.integration.test_dynos import deploy, dynoctl
from tests.integration.test_remote import PYTHON, SERVER, laptop_network
from tests.sandbox.machine import Machine

pytestmark = [pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]
ARTEFACTS = ROOT / ".state/artefacts/dashboard"
BROWSER = Path(__file__).with_name("dashboard_browser.py")
URL = f"https://{SERVER}:5444"
CURL = "curl -sS --cacert /tmp/ca.pem -c /tmp/jar -b /tmp/jar"


def laptop(m: Machine, script: str, *, ok: bool = True) -> tuple[int, str]:
    quoted = script.replace("'", "'\\''")
    return sh(m, f"cd /tmp && ip netns exec laptop bash -c '{quoted}'", ok=ok)


def test_dashboard_in_a_browser(stack_machine: Machine) -> None:
    with laptop_network(stack_machine, f'dashboard_listen = "{SERVER}:5444"',
                        f'api_names = "{SERVER}"'):
        run_dashboard(stack_machine)


def run_dashboard(m: Machine) -> None:
    out = dynoctl(m, "users:add", "alice@example.com")
    password = re.search(r"One-time password: (\w+)", out)
    assert password, out
    deploy(m, "shop", web="exec python3 -u server.py")
    dynoctl(m, "access:add", "alice@example.com", "-a", "shop")
    dynoctl(m, "config:set", "-a", "shop", "GREETING=hello")  # v3, to roll back from

    # Unauthenticated: health and the sign-in page only; the certificate is the local CA's,
    # and plain HTTP gets no page.
    assert laptop(m, f"{CURL} {URL}/health")[1] == "ok\n"
    rc, out = laptop(m, f"curl -sS --max-time 10 http://{SERVER}:5444/health", ok=False)
    assert rc != 0 and "ok" not in out, out
    code = laptop(m, f"{CURL} -o /dev/null -w %{{http_code}} {URL}/apps/shop")[1]
    assert code == "303", code
    code = laptop(m, f"{CURL} -o /dev/null -w %{{http_code}} {URL}/apps/shop/logs/lines")[1]
    assert code == "401", code
    # A sign-in form posted without its CSRF token is refused, with or without a password.
    out = laptop(m, f"{CURL} -w '\\n%{{http_code}}' --data-urlencode email=alice@example.com "
                    f"--data-urlencode password={password.group(1)} {URL}/signin")[1]
    assert out.endswith("\n403") and "CSRF token is missing or wrong" in out, out

    # The browser: sign-in, wrong password, the app, scale, rollback, log tail.
    shutil.rmtree(ARTEFACTS, ignore_errors=True)
    print(f"dashboard screenshots: {ARTEFACTS}")
    rc, out = laptop(m, f"HOME=/tmp {PYTHON} {BROWSER} {URL} alice@example.com "
                          f"{password.group(1)} shop {SERVER} {ARTEFACTS} 2>&1", ok=False)
    assert rc == 0, out
    for step in ("signin", "wrong-password", "apps", "dynos", "dynos-two-up", "releases",
                 "rolled-back", "config", "domains", "addons", "logs", "logs-router-line"):
        assert (ARTEFACTS / f"{step}.png").stat().st_size > 0, step
    ps = dynoctl(m, "ps", "-a", "shop")
    assert "web.1: up" in ps and "web.2: up" in ps, ps
    releases = dynoctl(m, "releases", "-a", "shop")
    assert re.search(r"v4\s+Rollback to v2\s+alice@example\.com", releases), releases
    api = m.exec(["journalctl", "--no-pager", "-o", "cat", "DYNOD_APP=shop",
                  "DYNOD_DYNO=api"]).stdout
    assert re.search(r"Scaled to web@2:\S+ by user alice@example\.com", api), api

    # Signed in, a form posted without the CSRF token is refused and changes nothing.
    page = laptop(m, f"{CURL} {URL}/signin")[1]
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token, page
    laptop(m, f"{CURL} -o /dev/null --data-urlencode csrf_token={token.group(1)} "
              f"--data-urlencode email=alice@example.com "
              f"--data-urlencode password={password.group(1)} {URL}/signin")
    out = laptop(m, f"{CURL} -w '\\n%{{http_code}}' -d type=web -d quantity=0 "
                    f"{URL}/apps/shop/scale")[1]
    assert out.endswith("\n403") and "CSRF token is missing or wrong" in out, out
    assert "web=2" in dynoctl(m, "ps:scale", "-a", "shop").replace(" ", "")
