"""Add-ons end to end in the sandbox (issue 15, "Must show"): a Django app from PyPI with
``release: python manage.py migrate`` gets heroku-postgresql and heroku-redis through
``dynoctl addons:create``, is pushed with git, writes and reads rows through its web
dyno, and its worker takes jobs off a Redis list; the rows are still there after
``ps:restart``, a new deploy, a dynod restart and a reboot of the machine.

One machine, one app, several assertions: a push from PyPI is the slow part.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import _teardown, stack_bind
from tests.integration.test_builds import EXAMPLES, commit, push, setup_push, sh
from tests.integration.test_dynos import wait_for
from tests.sandbox.machine import Machine

pytestmark = [pytest.mark.integration, pytest.mark.network]

APP = "notes"


def http(m: Machine, method: str, path: str) -> tuple[int, Any]:
    proc = m.exec(["curl", "-sS", "--max-time", "10", "-X", method, "-o", "/dev/stdout",
                   "-w", "\n%{http_code}", "-H", f"Host: {APP}.dynod.localhost",
                   f"http://127.0.0.1{path}"], check=False)
    body, _, code = proc.stdout.rpartition("\n")
    try:
        return int(code or 0), json.loads(body) if body else None
    except ValueError:
        return int(code or 0), body


def notes(m: Machine) -> list[str] | None:
    code, body = http(m, "GET", "/notes")
    return list(body["notes"]) if code == 200 and isinstance(body, dict) else None


def serving(m: Machine, version: str, addons: list[str]) -> bool:
    """Every web dyno the router picks runs code ``version`` with these add-on URLs."""
    seen = set()
    for _ in range(4):
        code, body = http(m, "GET", "/")
        if code != 200 or not isinstance(body, dict):
            return False
        seen.add((body["version"], tuple(body["addons"])))
    return seen == {(version, tuple(addons))}


def released(out: str) -> int:
    found = re.search(r"^remote:        Released v(\d+)\s*$", out, re.M)
    assert found, out
    return int(found.group(1))


def databases(m: Machine) -> list[str]:
    """The databases of dynod's cluster, asked as its superuser over the unix socket."""
    return sh(m, "runuser -u postgres -- psql -X -w -h /run/dynod-postgresql -d postgres "
                 "-At -c 'SELECT datname FROM pg_database'")[1].split()


def release_of(m: Machine, version: int) -> dict[str, Any]:
    info: dict[str, Any] = json.loads(sh(m, f"dynoctl releases:info v{version} -a {APP} "
                                            "--json")[1])
    return info


def test_django_on_postgres_and_redis_survives_restarts_deploys_and_a_reboot(
        stack: Path, tmp_path: Path) -> None:
    m = Machine(state_dir=tmp_path / "state", binds=[stack_bind(stack)])
    m.boot()
    try:
        setup_push(m, APP, str(EXAMPLES / "django-postgres"))
        # Heroku's lines, and DATABASE_URL on the dynos' gateway in release v2.
        _code, out = sh(m, f"dynoctl addons:create heroku-postgresql -a {APP} 2>&1")
        assert "Creating heroku-postgresql:essential-0 on ⬢ notes... free\n" in out, out
        found = re.search(r"^Created (postgresql-[a-z]+-\d{5}) as DATABASE_URL$", out, re.M)
        assert found, out
        database = found.group(1)
        url = sh(m, f"dynoctl config:get DATABASE_URL -a {APP}")[1].strip()
        assert url.startswith("postgres://") and "@10.213.0.1:" in url, url
        assert sh(m, f"dynoctl releases -a {APP}")[1].splitlines()[1].split()[:4] == [
            "v2", "Attach", "DATABASE", f"(@ref:{database})"]

        # The push: dependencies from PyPI, the release phase migrates, the web serves.
        out = push(m, APP)
        assert released(out) == 3, out
        assert "Running release command..." in out and "Applying notes.0001_initial... OK" \
            in out, out
        assert "remote: Verifying deploy... done." in out, out
        assert http(m, "POST", "/notes?text=first")[0] == 201
        assert notes(m) == ["first"]

        # Redis after the deploy: its release skips the release phase and rolls out.
        out = sh(m, f"dynoctl addons:create heroku-redis -a {APP} 2>&1")[1]
        found = re.search(r"^Created (redis-[a-z]+-\d{5}) as REDIS_URL$", out, re.M)
        assert found, out
        redis = found.group(1)
        v4 = release_of(m, 4)
        assert v4["description"].startswith("Attach REDIS (@ref:redis-"), v4
        assert v4["status"] == "succeeded", v4
        log = sh(m, f"journalctl DYNOD_APP={APP} -o cat --no-pager")[1]
        assert "Running release v3 commands" in log, log
        assert "Running release v4 commands" not in log, log
        assert f"@ref:{database} completed provisioning, setting DATABASE_URL." in log, log
        wait_for("v4 serving", lambda: serving(m, "", ["DATABASE_URL", "REDIS_URL"]),
                 timeout=90)
        # The worker takes the job off REDIS_URL and writes to DATABASE_URL; the web shows it.
        sh(m, f"dynoctl ps:scale worker=1 -a {APP}")
        assert http(m, "POST", "/jobs?text=resize")[0] == 201

        def jobs() -> dict[str, str] | None:
            code, body = http(m, "GET", "/jobs")
            done = body["jobs"] if code == 200 and isinstance(body, dict) else {}
            return done if done.get("resize") else None

        assert wait_for("the worker did the job", jobs, timeout=90) == {"resize": "worker.1"}

        # The rows outlive the dynos, a new deploy, dynod and the machine.
        sh(m, f"dynoctl ps:restart -a {APP}")
        wait_for("rows after ps:restart", lambda: notes(m) == ["first"], timeout=90)
        commit(m, APP, "VERSION", "2\n")
        out = push(m, APP)
        assert released(out) == 5, out
        wait_for("v5 serving", lambda: serving(m, "2", ["DATABASE_URL", "REDIS_URL"]),
                 timeout=90)
        assert notes(m) == ["first"]
        assert http(m, "POST", "/notes?text=second")[0] == 201
        m.exec(["systemctl", "restart", "dynod"], timeout=180)
        wait_for("rows after a dynod restart", lambda: notes(m) == ["first", "second"],
                 timeout=90)
        m.shutdown()
        m.boot()
        wait_for("rows after a reboot", lambda: notes(m) == ["first", "second"], timeout=180)
        assert http(m, "POST", "/jobs?text=after-reboot")[0] == 201
        wait_for("the worker after a reboot",
                 lambda: (jobs() or {}).get("after-reboot") == "worker.1", timeout=90)
        for unit in ("dynod-postgresql.service",):
            assert sh(m, f"systemctl is-active {unit}")[1].strip() == "active"
        listed = sh(m, f"dynoctl addons -a {APP}")[1]
        assert f"heroku-postgresql ({database})" in listed and " └─ as DATABASE" in listed, \
            listed

        # apps:destroy takes its add-ons with it: records, Redis's unit, Postgres's database.
        dbname = url.rpartition("/")[2]
        assert dbname in databases(m)
        out = sh(m, f"dynoctl apps:destroy {APP} --confirm {APP} 2>&1")[1]
        assert out == f"Destroying ⬢ {APP} (including all add-ons)... done\n", out
        assert sh(m, "dynoctl addons --all")[1] == "No add-ons.\n"
        assert sh(m, f"systemctl is-active dynod-redis@{redis}.service", ok=False)[1].strip() \
            != "active"
        assert dbname not in databases(m)
    finally:
        _teardown(m)
