"""Dynos in the sandbox, driven with dynoctl as a user would: a real web app scaled,
probed from inside, stopped the Heroku way, and adopted after dynod is killed."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.sandbox.machine import Machine

pytestmark = pytest.mark.integration

APP_SOURCE = Path(__file__).with_name("dyno_app.py")


def dynoctl(m: Machine, *args: str) -> str:
    proc = m.run(["dynoctl", *args], cwd="/tmp")
    assert proc.returncode == 0, f"dynoctl {' '.join(args)}: {proc.stderr}"
    return proc.stdout


def deploy(m: Machine, app: str, **process_types: str) -> None:
    """Create ``app`` and deploy a slug holding dyno_app.py as /app/server.py."""
    m.exec(["mkdir", "-p", f"/tmp/{app}/app/.profile.d"])
    m.exec(["cp", str(APP_SOURCE), f"/tmp/{app}/app/server.py"])
    m.exec(["sh", "-c", f"echo 'export FROM_PROFILE_D=yes' > /tmp/{app}/app/.profile.d/t.sh"])
    m.exec(["tar", "-C", f"/tmp/{app}", "-czf", f"/tmp/{app}.tgz", "./app"])
    dynoctl(m, "apps:create", app)
    types = [a for name, cmd in process_types.items() for a in ("--process-type", f"{name}={cmd}")]
    dynoctl(m, "slugs:deploy", "-a", app, f"/tmp/{app}.tgz", *types)


def ps(m: Machine, app: str) -> list[dict[str, object]]:
    return list(json.loads(dynoctl(m, "ps", "-a", app, "--json")))


def wait_for(what: str, check: Callable[[], object], timeout: float = 60.0) -> object:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def diagnose(m: Machine, app: str) -> str:
    return "\n".join([
        m.exec(["dynoctl", "ps", "-a", app], check=False).stdout,
        m.exec(["journalctl", "--no-pager", "-n", "60", "-o", "cat", "-u", "dynod.service",
                "+", f"DYNOD_APP={app}"], check=False).stdout,
    ])


def all_up(m: Machine, app: str, count: int, ptype: str = "web") -> list[dict[str, object]]:
    def check() -> list[dict[str, object]] | None:
        dynos = [d for d in ps(m, app) if d["type"] == ptype]
        ok = len(dynos) == count and all(d["state"] == "up" for d in dynos)
        return dynos if ok else None

    try:
        found = wait_for(f"{count} {ptype} dynos of {app} up", check)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{diagnose(m, app)}") from None
    assert isinstance(found, list)
    return found


def http(m: Machine, address: str, path: str = "/", timeout: float = 5.0) -> str:
    proc = m.exec(["curl", "-sS", "--max-time", str(timeout), f"http://{address}:5000{path}"],
                  check=False)
    assert proc.returncode == 0, f"GET {address}{path}: {proc.stderr}"
    return proc.stdout


def journal(m: Machine, *matches: str) -> str:
    return m.exec(["journalctl", "--no-pager", "-o", "cat", *matches]).stdout


def test_scale_web_to_three(stack_machine: Machine) -> None:
    m = stack_machine
    deploy(m, "shop", web="exec python3 -u server.py")
    all_up(m, "shop", 1)
    out = dynoctl(m, "ps:scale", "-a", "shop", "web=3")
    assert "now running web at 3:Standard-1X" in out + dynoctl(m, "ps:scale", "-a", "shop")
    dynos = all_up(m, "shop", 3)
    assert sorted(str(d["name"]) for d in dynos) == ["web.1", "web.2", "web.3"]
    addresses = {str(d["address"]) for d in dynos}
    assert len(addresses) == 3
    for address in addresses:
        assert http(m, address) == "hello from dyno\n"
    units = [str(d["unit"]) for d in dynos]
    for unit in units:
        status = m.exec(["systemctl", "status", "--no-pager", unit], check=False).stdout
        assert "dynod.slice/dynod-shop.slice/" + unit in status.replace("├─", "").replace(
            "└─", "").replace(" ", "/") or "dynod-shop.slice" in status
        assert m.exec(["systemctl", "show", "-p", "Slice", "--value", unit]).stdout.strip() == (
            "dynod-shop.slice")
    lines = journal(m, "DYNOD_APP=shop", "DYNOD_DYNO=web.3", "DYNOD_SOURCE=app")
    assert "listening on 5000" in lines
    events = journal(m, "DYNOD_APP=shop", "DYNOD_DYNO=web.2", "DYNOD_SOURCE=dynod")
    assert "Starting process with command `exec python3 -u server.py`" in events
    assert "State changed from starting to up" in events
    # Heroku's ps format.
    text = dynoctl(m, "ps", "-a", "shop")
    assert text.splitlines()[0].startswith(
        "=== web (Standard-1X): exec python3 -u server.py (3)")
    assert text.splitlines()[1].startswith("web.1: up ")
    # Scaling down stops the highest numbers, exactly.
    dynoctl(m, "ps:scale", "-a", "shop", "web=1")
    wait_for("web=1", lambda: [str(d["name"]) for d in ps(m, "shop")] == ["web.1"])
    assert str(ps(m, "shop")[0]["unit"]) == units[0]
    assert "Process exited with status 143" in journal(
        m, "DYNOD_APP=shop", "DYNOD_DYNO=web.3", "DYNOD_SOURCE=dynod")
    _ = urllib.request  # the host cannot reach the machine's dynos; curl runs inside
