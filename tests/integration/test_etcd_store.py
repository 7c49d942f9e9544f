"""dynod on the etcd store: etcd runs in the machine (Debian's etcd-server), dynod.toml
says ``store = "etcd"``; a git push builds and releases, ``ps:scale`` starts the
dynos, and the state is in etcd (not in a SQLite file), surviving a dynod restart."""

from __future__ import annotations

import json

import pytest

from tests.integration.test_builds import EXAMPLES, push, setup_push, sh
from tests.integration.test_dynos import all_up, dynoctl, wait_for
from tests.sandbox.machine import Machine

pytestmark = pytest.mark.integration

ETCD = ("systemd-run -q --unit etcd-test -p StateDirectory=etcd-test /usr/bin/etcd "
        "--name m --data-dir /var/lib/etcd-test/data "
        "--listen-client-urls http://127.0.0.1:23790 "
        "--advertise-client-urls http://127.0.0.1:23790 "
        "--listen-peer-urls http://127.0.0.1:23800 "
        "--initial-advertise-peer-urls http://127.0.0.1:23800 "
        "--initial-cluster m=http://127.0.0.1:23800")


def etcd_keys(m: Machine, prefix: str) -> list[str]:
    """The keys under ``prefix`` of the machine's etcd, read over its v3 JSON gateway."""
    import base64  # noqa: PLC0415 - only here

    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    body = json.dumps({"key": b64(prefix), "range_end": b64(end), "keys_only": True})
    out = sh(m, f"curl -sS -X POST http://127.0.0.1:23790/v3/kv/range -d '{body}'")[1]
    return [base64.b64decode(kv["key"]).decode() for kv in json.loads(out).get("kvs", [])]


def test_dynod_on_the_etcd_store_pushes_and_scales(stack_machine: Machine) -> None:
    m = stack_machine
    sh(m, ETCD)
    wait_for("etcd healthy", lambda: '"true"' in sh(
        m, "curl -s http://127.0.0.1:23790/health", ok=False)[1])
    sh(m, "mkdir -p /etc/dynod && printf '%s\\n' 'store = \"etcd\"' "
          "'etcd_endpoints = \"127.0.0.1:23790\"' > /etc/dynod/dynod.toml && "
          "rm -f /var/lib/dynod/state.db* && systemctl restart dynod")
    wait_for("dynod on etcd", lambda: "state in etcd at 127.0.0.1:23790" in sh(
        m, "journalctl -u dynod -o cat --no-pager", ok=False)[1])
    wait_for("the API", lambda: sh(m, "dynoctl apps", ok=False)[0] == 0)

    setup_push(m, "shop", str(EXAMPLES / "shell"))
    out = push(m, "shop")
    assert "remote: -----> Procfile app detected" in out, out
    assert "remote:        Released v2" in out, out
    dynoctl(m, "ps:scale", "-a", "shop", "web=2")
    all_up(m, "shop", 2)
    dynoctl(m, "config:set", "-a", "shop", "GREETING=hi")
    assert "v3" in dynoctl(m, "releases", "-a", "shop").splitlines()[1]
    all_up(m, "shop", 2)
    assert "200" in sh(m, "curl -s -o /dev/null -w '%{http_code}' "
                          "-H 'Host: shop.dynod.localhost' http://127.0.0.1/")[1]

    # The state is etcd's: no SQLite file, and the records are keys there.
    assert sh(m, "test -e /var/lib/dynod/state.db", ok=False)[0] != 0
    keys = etcd_keys(m, "/dynod/")
    assert "/dynod/apps/shop" in keys
    assert {"/dynod/releases/shop/0000000001", "/dynod/releases/shop/0000000003",
            "/dynod/formation/shop/web"} <= set(keys)
    # A restarted dynod reads it back: the same releases, the same formation.
    sh(m, "systemctl restart dynod")
    wait_for("the API", lambda: sh(m, "dynoctl ps -a shop", ok=False)[0] == 0)
    assert "GREETING: hi" in dynoctl(m, "config", "-a", "shop")
    all_up(m, "shop", 2)
