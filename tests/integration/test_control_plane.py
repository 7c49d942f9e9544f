"""The control plane in the sandbox, driven with dynoctl as a user would: apps, config
vars, releases, rollback and formation, unchanged across a dynod restart and a reboot."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.sandbox.machine import Machine

pytestmark = pytest.mark.integration


def dynoctl(m: Machine, *args: str, user: str | None = None) -> str:
    props = [f"User={user}"] if user else []
    proc = m.run(["dynoctl", *args], properties=props, cwd="/tmp")
    assert proc.returncode == 0, f"dynoctl {' '.join(args)}: {proc.stderr}"
    return proc.stdout


def observed(m: Machine) -> dict[str, Any]:
    releases = json.loads(dynoctl(m, "releases", "-a", "shop", "--json"))
    return {
        "apps": [a["name"] for a in json.loads(dynoctl(m, "apps", "--json"))],
        "releases": [(r["version"], r["description"], r["user"], r["created_at"])
                     for r in releases],
        "config": json.loads(dynoctl(m, "config", "-a", "shop", "--json")),
        "v2": json.loads(dynoctl(m, "releases:info", "-a", "shop", "v2", "--json"))["config"],
        "formation": dynoctl(m, "ps:scale", "-a", "shop"),
    }


def test_state_is_kept_across_restart_and_reboot(persistent_machine: Machine) -> None:
    m = persistent_machine
    m.exec(["useradd", "--no-create-home", "--groups", "dynod", "alice"])
    assert dynoctl(m, "apps:create", "shop").startswith("https://shop.dynod.localhost/ | ")
    dynoctl(m, "config:set", "-a", "shop", "GREETING=hello", "COLOR=blue", user="alice")
    dynoctl(m, "config:set", "-a", "shop", "GREETING=bonjour")
    out = dynoctl(m, "releases", "-a", "shop").splitlines()
    assert out[0] == "=== ⬢ shop Releases - Current: v3"
    assert [line.split()[0] for line in out[1:]] == ["v3", "v2", "v1"]
    assert out[1].startswith("v3  Set GREETING config vars         root  ")
    assert out[2].startswith("v2  Set COLOR, GREETING config vars  alice  ")
    assert out[3].startswith("v1  Initial release                  root  ")

    rollback = m.run(["dynoctl", "rollback", "-a", "shop", "v2"], cwd="/tmp")
    assert rollback.stderr.splitlines()[0] == "Rolling back ⬢ shop to v2... done, v4"
    assert json.loads(dynoctl(m, "config", "-a", "shop", "--json")) == {
        "COLOR": "blue", "GREETING": "hello"}

    m.exec(["sh", "-c", "mkdir -p /tmp/slug/app && echo hi > /tmp/slug/app/hello.txt"
                        " && tar -C /tmp/slug -czf /tmp/slug.tgz ./app"])
    dynoctl(m, "slugs:deploy", "-a", "shop", "/tmp/slug.tgz",
            "--process-type", "web=python3 -m http.server $PORT",
            "--process-type", "worker=sleep infinity")
    dynoctl(m, "ps:scale", "-a", "shop", "web=2", "worker+1")
    # This machine has no stack: the dynos cannot start, and ps says what they run.
    ps = dynoctl(m, "ps", "-a", "shop")
    assert "=== web (Standard-1X): python3 -m http.server $PORT (2)\n" in ps, ps
    assert re.search(r"^web\.1: crashed \d{4}/", ps, re.M), ps
    before = observed(m)
    assert before["formation"] == "web=2:Standard-1X worker=1:Standard-1X\n"
    assert [r[:3] for r in before["releases"][:2]] == [
        (5, before["releases"][0][1], "root"), (4, "Rollback to v2", "root")]
    assert before["releases"][0][1].startswith("Deploy ")
    assert before["v2"] == {"COLOR": "blue", "GREETING": "hello"}

    m.exec(["systemctl", "restart", "dynod"])
    assert observed(m) == before

    m.reboot()
    assert m.exec(["systemctl", "is-active", "dynod"]).stdout == "active\n"
    assert observed(m) == before
