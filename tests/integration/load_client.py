"""Runs inside a sandbox machine: a steady HTTP load on the router (127.0.0.1:80).

    load_client.py [--retry-after SECONDS] HOST STOPFILE [CONNECTIONS]

CONNECTIONS threads, each with one kept-alive connection, send GET / back to back until
STOPFILE exists, then print JSON totals: requests answered, failed connections (refused,
reset, closed without an answer, timed out; a new connection follows each), 5xx
responses, both together (``failed``) and the requests ``sent``, the first and last
failure (monotonic seconds, comparable with a ``time.monotonic()`` read inside the same
machine), seconds, requests/s, the answers' first words (the app's version), the worst
requests/s over any whole second, the slowest request and how many took over 1 s.

Each request carries an X-Request-Id of its own, which the router keeps and logs: each
failed one is listed (``failed_requests``: id, the wall-clock time it was sent, what
happened), so its router line (``request_id=...``) says which dyno it went to.

With ``--retry-after``, a thread that fails (or gets a 5xx) waits that long before it
tries again, as a browser's retry would: a fault that makes the router refuse
connections for a while would otherwise count thousands of "failures" from a client
spinning on ECONNREFUSED for one second of outage. Standard library only.
"""

from __future__ import annotations

import argparse
import http.client
import json
import threading
import time
import uuid
from collections import Counter
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--retry-after", type=float, default=0.0)
    parser.add_argument("host")
    parser.add_argument("stop", type=Path)
    parser.add_argument("connections", type=int, nargs="?", default=8)
    args = parser.parse_args()
    host, stop, retry_after = args.host, args.stop, args.retry_after
    lock = threading.Lock()
    totals: Counter[str] = Counter()
    versions: Counter[str] = Counter()
    per_second: Counter[int] = Counter()
    failures: list[tuple[float, str]] = []  # (monotonic, wall clock and what)
    failed_requests: list[tuple[str, float, str]] = []  # (request id, sent at, what)
    slowest = [0.0]

    def failed(kind: str, why: str, rid: str, sent: float) -> None:
        with lock:
            totals[kind] += 1
            failures.append((time.monotonic(), f"{time.time():.3f} {why}"))
            failed_requests.append((rid, round(sent, 3), why))

    def worker() -> None:
        conn: http.client.HTTPConnection | None = None
        while not stop.exists():
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", 80, timeout=30)
            began, sent, rid = time.monotonic(), time.time(), str(uuid.uuid4())
            try:
                conn.request("GET", "/", headers={"Host": host, "X-Request-Id": rid})
                resp = conn.getresponse()
                body = resp.read().decode(errors="replace")
                took = time.monotonic() - began
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                conn = None
                failed("failed_connections", repr(exc), rid, sent)
                time.sleep(retry_after)
                continue
            with lock:
                totals["requests"] += 1
                slowest[0] = max(slowest[0], took)
                totals["over_1s"] += took > 1.0
                per_second[int(time.monotonic())] += 1
                if resp.status < 500:
                    versions[body.split(" ")[0]] += 1
            if resp.will_close:
                conn.close()
                conn = None
            if resp.status >= 500:
                failed("status_5xx", f"status {resp.status} {body[:80]!r}", rid, sent)
                time.sleep(retry_after)

    started = time.monotonic()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(args.connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.monotonic() - started
    whole = sorted(per_second)[1:-1]  # the first and last seconds are partial
    print(json.dumps({
        "requests": totals["requests"], "failed_connections": totals["failed_connections"],
        "status_5xx": totals["status_5xx"],
        "failed": totals["failed_connections"] + totals["status_5xx"],
        "sent": totals["requests"] + totals["failed_connections"],
        "first_failure": failures[0][0] if failures else None,
        "last_failure": failures[-1][0] if failures else None,
        "seconds": round(seconds, 1), "rate": round(totals["requests"] / seconds, 1),
        "min_rate": min((per_second[s] for s in whole), default=0),
        "versions": versions, "failures": [why for _, why in failures[:50]],
        "failed_requests": failed_requests[:500],
        "slowest": round(slowest[0], 3), "over_1s": totals["over_1s"],
    }))


if __name__ == "__main__":
    main()
