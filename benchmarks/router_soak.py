"""A keep-alive soak through the router (issue 16): two thread-per-connection apps at
once for 10 minutes, each with 2 dynos, 10 kept-alive client connections each. One app
is python's http.server with its threads capped a little above the router's idle pool
bound (an idle kept-alive connection holds a thread), the other gunicorn's sync workers
(2 per dyno, from PyPI, one request at a time, each connection closed after it).

Prints, per app, the checks the suite makes in 40 s: requests answered, failed
connections, 5xx, requests over 1 s and the slowest, H12 lines, the most idle
connections HAProxy held per dyno (its stats socket) against the bound, and requests
answered against router lines in the journal (and the drops apps:info counted). Not part
of benchmarks/run (10 minutes): run it on its own.

    .venv/bin/python -m benchmarks.router_soak [--minutes 10]
"""

from __future__ import annotations

import argparse
import re
import sys
import time

from dynod.router.haproxy_config import POOL_MAX_CONN
from tests.integration.conftest import built_stack, stack_bind
from tests.integration.test_builds import EXAMPLES, push, setup_push
from tests.integration.test_dynos import all_up, dynoctl, wait_for
from tests.integration.test_router import deploy_echo, get, router_lines
from tests.integration.test_router_throughput import CAPPED, soak
from tests.sandbox.machine import Machine

APPS = ("capped", "sync")


def run(minutes: float) -> bool:
    """True when every check held."""
    m = Machine(binds=[stack_bind(built_stack())])
    m.boot()
    ok = True
    try:
        deploy_echo(m, "capped", web=f"exec python3 -u server.py $PORT {POOL_MAX_CONN + 4}",
                    source=CAPPED)
        setup_push(m, "sync", str(EXAMPLES / "gunicorn-sync"))
        push(m, "sync")
        for app in APPS:
            dynoctl(m, "ps:scale", "-a", app, "web=2")
            all_up(m, app, 2)
            wait_for(f"{app} routed", lambda app=app: get(  # type: ignore[misc]
                m, f"{app}.dynod.localhost")[0] == 200)
        time.sleep(1)
        before = {a: len([x for x in router_lines(m, a) if 'path="/"' in x]) for a in APPS}
        results, most = soak(m, [f"{a}.dynod.localhost" for a in APPS], minutes * 60)
        time.sleep(2)  # the reader's last flush
        for app in APPS:
            r = results[f"{app}.dynod.localhost"]
            lines = router_lines(m, app)
            logged = len([x for x in lines if 'path="/"' in x]) - before[app]
            h12 = len([x for x in lines if "code=H12" in x])
            idle = {s.split("/", 1)[1]: n for s, n in most.items() if s.startswith(f"app_{app}/")}
            info = dynoctl(m, "apps:info", "-a", app)
            dropped = re.search(r"Router Lines Dropped:\s+(.*)", info)
            print(f"{app}: {r['requests']} requests in {r['seconds']} s ({r['rate']}/s, worst "
                  f"second {r['min_rate']}/s); failed connections {r['failed_connections']}, "
                  f"5xx {r['status_5xx']}, over 1 s {r['over_1s']} (slowest {r['slowest']} s), "
                  f"H12 {h12}")
            print(f"{app}: most idle connections per dyno {idle} (bound {POOL_MAX_CONN}); "
                  f"router lines {logged} for {r['requests']} answered; counted drops "
                  f"{dropped.group(1) if dropped else '?'}")
            ok &= (r["failed_connections"] == 0 and r["status_5xx"] == 0 and r["over_1s"] == 0
                   and h12 == 0 and max(idle.values(), default=0) <= POOL_MAX_CONN
                   and logged == r["requests"])
    finally:
        m.shutdown()
    print("all checks held" if ok else "A CHECK FAILED")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=10.0)
    args = parser.parse_args()
    return 0 if run(args.minutes) else 1


if __name__ == "__main__":
    sys.exit(main())
