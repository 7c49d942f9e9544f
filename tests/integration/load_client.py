"""Runs inside a sandbox machine: a steady HTTP load on the router (127.0.0.1:80).

    load_client.py HOST STOPFILE [CONNECTIONS]

CONNECTIONS threads, each with one kept-alive connection, send GET / back to back until
STOPFILE exists, then print JSON totals: requests, failed connections (refused, reset,
closed without an answer, timed out; a new connection follows each), 5xx responses,
seconds, requests/s, the answers' first words (the app's version), the worst
requests/s over any whole second, the slowest request and how many took over 1 s.
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


def main() -> None:
    host, stop = sys.argv[1], Path(sys.argv[2])
    conns = int(sys.argv[3]) if len(sys.argv) > 3 else 8
    lock = threading.Lock()
    totals: Counter[str] = Counter()
    versions: Counter[str] = Counter()
    per_second: Counter[int] = Counter()
    failures: list[str] = []
    slowest = [0.0]

    def worker() -> None:
        conn: http.client.HTTPConnection | None = None
        while not stop.exists():
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", 80, timeout=30)
            began = time.monotonic()
            try:
                conn.request("GET", "/", headers={"Host": host})
                resp = conn.getresponse()
                body = resp.read().decode(errors="replace")
                took = time.monotonic() - began
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                conn = None
                with lock:
                    totals["failed_connections"] += 1
                    failures.append(f"{time.time():.3f} {exc!r}")
                continue
            with lock:
                totals["requests"] += 1
                slowest[0] = max(slowest[0], took)
                totals["over_1s"] += took > 1.0
                per_second[int(time.monotonic())] += 1
                if resp.status >= 500:
                    totals["status_5xx"] += 1
                    failures.append(f"{time.time():.3f} status {resp.status} {body[:80]!r}")
                else:
                    versions[body.split(" ")[0]] += 1
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
    whole = sorted(per_second)[1:-1]  # the first and last seconds are partial
    print(json.dumps({
        "requests": totals["requests"], "failed_connections": totals["failed_connections"],
        "status_5xx": totals["status_5xx"], "seconds": round(seconds, 1),
        "rate": round(totals["requests"] / seconds, 1),
        "min_rate": min((per_second[s] for s in whole), default=0),
        "versions": versions, "failures": failures[:50],
        "slowest": round(slowest[0], 3), "over_1s": totals["over_1s"],
    }))


if __name__ == "__main__":
    main()
