"""Runs inside a sandbox machine: a steady HTTP load on the router that times its outages.

    fault_load.py HOST STOPFILE [CONNECTIONS]

Like load_client.py (CONNECTIONS threads, one kept-alive connection each, GET / back to
back until STOPFILE exists), but a fault makes the router refuse connections for a
while, and a client spinning on ECONNREFUSED would count thousands of "failures" for
one second of outage. So a thread that fails (or gets a 5xx) waits 0.1 s before it
tries again (a browser's retry), and every failure's time is kept: the JSON totals
give the failures, the first and last of them (monotonic seconds, comparable with a
``time.monotonic()`` read inside the same machine), and the answers' first words.
Standard library only.
"""

from __future__ import annotations

import http.client
import json
import sys
import threading
import time
from collections import Counter
from pathlib import Path

RETRY_AFTER = 0.1


def main() -> None:
    host, stop = sys.argv[1], Path(sys.argv[2])
    conns = int(sys.argv[3]) if len(sys.argv) > 3 else 4
    lock = threading.Lock()
    totals: Counter[str] = Counter()
    versions: Counter[str] = Counter()
    failures: list[tuple[float, str]] = []

    def worker() -> None:
        conn: http.client.HTTPConnection | None = None
        while not stop.exists():
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", 80, timeout=30)
            try:
                conn.request("GET", "/", headers={"Host": host})
                resp = conn.getresponse()
                body = resp.read().decode(errors="replace")
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                conn = None
                with lock:
                    totals["failed"] += 1
                    failures.append((time.monotonic(), repr(exc)))
                time.sleep(RETRY_AFTER)
                continue
            with lock:
                totals["requests"] += 1
                if resp.status >= 500:
                    totals["failed"] += 1
                    failures.append((time.monotonic(), f"status {resp.status} {body[:80]!r}"))
                else:
                    versions[body.split(" ")[0]] += 1
            if resp.status >= 500:
                time.sleep(RETRY_AFTER)
            if resp.will_close:
                conn.close()
                conn = None

    started = time.monotonic()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.monotonic() - started
    print(json.dumps({
        "sent": totals["requests"] + sum(1 for _, why in failures if not why.startswith("status")),
        "requests": totals["requests"], "failed": totals["failed"],
        "first_failure": failures[0][0] if failures else None,
        "last_failure": failures[-1][0] if failures else None,
        "seconds": round(seconds, 1), "rate": round(totals["requests"] / seconds, 1),
        "versions": versions, "failures": [f"{t:.3f} {why}" for t, why in failures[:40]],
    }))


if __name__ == "__main__":
    main()
