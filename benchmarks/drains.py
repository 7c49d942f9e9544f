"""Log drains: how fast dynod ships an app's lines to a syslog+tls receiver, beside
Debian's rsyslog forwarding the same lines (from journald, over TLS, octet-counted) to
the same receiver in the same run; and the app's p50 latency with a drain attached
beside without.

Both paths start at journald: N entries of the same text are written by one unit
(journald's rate limit off for it), one set tagged as the app's stream (dynod's drain
picks them up), one set for rsyslog's imjournal; the clock runs until the receiver
(rsyslogd with imtcp over gtls) has written them all.

    .venv/bin/python -m benchmarks.drains [--scale 0.1]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from benchmarks.common import Figure, Summary, main
from tests.integration.conftest import built_stack, stack_bind
from tests.integration.test_drains import PYTHON, RECEIVER, SYSLOG_URL, _p50, _start_receivers
from tests.integration.test_dynos import all_up, dynoctl
from tests.integration.test_router import deploy_echo
from tests.sandbox.machine import Machine

PROJECT = Path(__file__).resolve().parents[1]
FORWARDER_CONF = """\
global(workDirectory="/tmp/rsyslog-fwd"
       DefaultNetstreamDriverCAFile="/tmp/drains/test-ca.pem")
module(load="imjournal" StateFile="imjournal.state" IgnorePreviousMessages="on"
       Ratelimit.Interval="0")
if $!DYNOD_APP == "bench" then {
  action(type="omfwd" target="localhost" port="6514" protocol="tcp"
         StreamDriver="gtls" StreamDriverMode="1" StreamDriverAuthMode="x509/name"
         StreamDriverPermittedPeers="localhost" TCP_Framing="octet-counted"
         template="RSYSLOG_SyslogProtocol23Format")
}
stop
"""
WRITER = ("import sys\nfrom dynod.system import journal\n"
          "for i in range(int(sys.argv[2])):\n"
          "    journal.app_event(sys.argv[1], 'web.1', f'bench line {i} ' + 'x' * 80,"
          " source='app')\n")


def received(m: Machine) -> int:
    out = m.exec(["sh", "-c", "wc -l < /tmp/drains/rsyslog.out || echo 0"]).stdout
    return int(out.split()[0])


def shipped(m: Machine, app: str, n: int) -> tuple[float, int]:
    """(lines per second delivered, lines not delivered) from the first write until the
    receiver stops growing. A dynod drain whose receiver is slower than the writer drops
    its oldest lines past 1,024 (Heroku's L10); rsyslog queues them instead."""
    before = received(m)
    start = time.perf_counter()
    m.exec(["systemd-run", "--wait", "--quiet", "-p", "LogRateLimitIntervalSec=0",
            f"--working-directory={PROJECT}", PYTHON, "-c", WRITER, app, str(n)],
           timeout=600)
    last, last_at = received(m), time.perf_counter()
    while last < before + n and time.perf_counter() - last_at < 3:
        time.sleep(0.2)
        now = received(m)
        if now != last:
            last, last_at = now, time.perf_counter()
    got = min(last - before, n)
    return got / (last_at - start), n - got


def collect(scale: float = 1.0) -> list[Figure]:
    n = max(2000, round(50000 * scale))
    rounds = max(1, round(3 * scale))
    m = Machine(binds=[stack_bind(built_stack())])
    m.boot()
    try:
        deploy_echo(m, "shop")
        all_up(m, "shop", 1)
        _start_receivers(m)
        m.exec(["mkdir", "-p", "/tmp/rsyslog-fwd"])
        m.run(["sh", "-c", "cat > /tmp/drains/forward.conf"], input=FORWARDER_CONF,
              check=True)
        m.exec(["systemd-run", "--unit=drain-forwarder", "rsyslogd", "-n", "-f",
                "/tmp/drains/forward.conf", "-i", "/tmp/drains/forward.pid"])
        time.sleep(2)
        requests = max(50, round(300 * scale))
        plain = [_p50(m, requests) for _ in range(rounds)]
        dynoctl(m, "drains:add", SYSLOG_URL, "-a", "shop")
        drained = [_p50(m, requests) for _ in range(rounds)]
        ours, theirs, lost = [], [], [0, 0]
        for _ in range(rounds):  # interleaved, so drift hits both alike
            rate, dropped = shipped(m, "shop", n)
            ours.append(rate)
            lost[0] += dropped
            rate, dropped = shipped(m, "bench", n)
            theirs.append(rate)
            lost[1] += dropped
        print(f"{n} lines a round, {rounds} rounds (helpers: {RECEIVER.name}); not "
              f"delivered: dynod drain {lost[0]} (dropped, L10), rsyslog {lost[1]}")
    finally:
        m.shutdown()
    return [Figure("drain throughput to rsyslog over TLS",
                   Summary.of(ours, "l/s"), "rsyslog imjournal -> omfwd TLS",
                   Summary.of(theirs, "l/s")),
            Figure("app p50 with a syslog+tls drain", Summary.of(drained, "ms"),
                   "app p50 without a drain", Summary.of(plain, "ms"))]




if __name__ == "__main__":
    sys.exit(main(collect))
