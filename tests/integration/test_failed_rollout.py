"""Issue 13 item 5 in the sandbox: a release whose web process never binds $PORT (R10)
is not rolled out, and the dyno serving the previous release is left alone: no request
lost under a steady load through the router, the same unit, the same InvocationID.

Five apps side by side, each with its own load, so five runs take one R10 (60 s, as
Heroku's; there is no shortening it)."""

from __future__ import annotations

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import pytest

from tests.integration.test_dynos import dynoctl, ps, wait_for
from tests.integration.test_lifecycle import Load, deploy, settled, slug, trouble, versions
from tests.sandbox.machine import Machine

pytestmark = pytest.mark.integration

RUNS = 5
# A web process that runs but never listens: R10 after 60 s.
NEVER_BINDS = "exec sleep infinity"


def invocation(m: Machine, unit: str) -> str:
    return m.exec(["systemctl", "show", "-p", "InvocationID", "--value", unit]).stdout.strip()


def deploy_never_binding(m: Machine, app: str) -> Any:
    return m.run(["dynoctl", "slugs:deploy", "-a", app, slug(m, app, "bad"),
                  "--process-type", f"web={NEVER_BINDS}"], cwd="/tmp")


@pytest.mark.slow
def logged(m: Machine, app: str, text: str) -> bool:
    """``text`` is in one of the app's log lines (journalctl's own grep: the app's log
    holds tens of thousands of router lines here)."""
    return text in m.exec(["journalctl", "--no-pager", "-o", "cat", f"DYNOD_APP={app}",
                           "--grep", re.escape(text)], check=False).stdout


def test_a_release_that_never_binds_leaves_the_serving_dyno_alone(
        stack_machine: Machine) -> None:
    m = stack_machine
    apps = [f"r10-{i}" for i in range(1, RUNS + 1)]
    for app in apps:
        dynoctl(m, "apps:create", app)
        deploy(m, app, "good")
    serving: dict[str, tuple[str, str]] = {}
    for app in apps:
        wait_for(f"{app} v2 up", partial(settled, m, app, {"web": 1}, release=2),
                 timeout=60)
        (dyno,) = ps(m, app)
        serving[app] = (str(dyno["unit"]), invocation(m, str(dyno["unit"])))
        assert serving[app][1]
    loads = {app: Load(m, f"{app}.dynod.localhost", conns=2, name=f"load-{app}")
             for app in apps}
    time.sleep(2)
    t0 = time.monotonic()
    with ThreadPoolExecutor(RUNS) as pool:
        pushes = dict(zip(apps, pool.map(lambda app: deploy_never_binding(m, app), apps),
                          strict=True))
    took = time.monotonic() - t0
    for app in apps:
        wait_for(f"{app}: v2 serving alone", partial(settled, m, app, {"web": 1}, release=2),
                 timeout=60)
    time.sleep(2)  # the load keeps going after the failed release's dyno is gone
    results = {app: load.finish() for app, load in loads.items()}
    summary = {app: (r["requests"], r["failed_connections"], r["status_5xx"])
               for app, r in results.items()}
    print(f"\nR10 rollouts: {RUNS} in {took:.0f} s; requests, failed, 5xx: {summary}")
    failures = []
    for app in apps:
        proc, result = pushes[app], results[app]
        (dyno,) = ps(m, app)
        unit, invocation_id = serving[app]
        if (result["failed_connections"] or result["status_5xx"] or dyno["unit"] != unit
                or invocation(m, unit) != invocation_id):
            failures.append(f"{app}: {json.dumps(result)[:2000]}\n{trouble(m, app)}")
            continue
        assert proc.returncode == 1, proc.stderr
        assert "Rolling out v3.... failed." in proc.stderr, proc.stderr
        assert "v2 keeps serving" in proc.stderr, proc.stderr
        assert set(result["versions"]) == {"good"}, result["versions"]
        assert result["requests"] > 0, result
        rels = {int(r["version"]): r for r in versions(m, app)}
        assert rels[3]["status"] == "failed" and not rels[3].get("current"), rels[3]
        assert rels[2].get("current"), rels[2]
        listing = dynoctl(m, "releases", "-a", app)
        assert "v3" in listing and "failed" in listing, listing
        # journald takes the lines in order, behind each app's ~20,000 router lines of
        # the load: wait for the verdict rather than read once.
        for line in ("Release v3 failed: its web dynos timed out (R10); v2 keeps serving",
                     "Error R10 (Boot timeout)"):
            wait_for(f"{app}: {line!r} in its log", partial(logged, m, app, line), timeout=30)
    assert not failures, "\n\n".join(failures)
    assert all(r["failed_connections"] == 0 and r["status_5xx"] == 0
               for r in results.values()), summary
