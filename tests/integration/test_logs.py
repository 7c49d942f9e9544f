"""dynoctl logs in the sandbox: one Heroku-style stream per app, from journald."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.test_dynos import all_up, dynoctl, ps, wait_for
from tests.integration.test_router import deploy_echo, get
from tests.sandbox.machine import Machine

pytestmark = pytest.mark.integration

LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00 (app|dynod)\[[\w.-]+\]: ")


def test_tail_shows_api_platform_app_and_router_lines_in_order(stack_machine: Machine) -> None:
    m = stack_machine
    deploy_echo(m, "shop")
    all_up(m, "shop", 1)
    m.exec(["systemd-run", "--unit=tail", "-p", "StandardOutput=file:/tmp/tail.txt",
            "dynoctl", "logs", "--tail", "-a", "shop"])

    def tail() -> list[str]:
        return m.exec(["cat", "/tmp/tail.txt"], check=False).stdout.splitlines()

    wait_for("the backlog", lambda: any("State changed from starting to up" in x
                                        for x in tail()))
    start = len(tail())
    dynoctl(m, "slugs:deploy", "-a", "shop", "/tmp/shop.tgz", "--process-type",
            "web=exec python3 -u server.py $PORT")
    dynoctl(m, "ps:scale", "-a", "shop", "web=2")
    all_up(m, "shop", 2)
    for _ in range(3):
        assert get(m, "shop.dynod.localhost", "/marker")[0] == 200
    wanted = [
        r"app\[api\]: Release v\d+ created by user root",
        r"app\[api\]: Scaled to web@2:Standard-1X by user root",
        r"dynod\[web\.2\]: State changed from starting to up",
        r"app\[web\.\d\]: GET /marker from ",
        r'dynod\[router\]: at=info method=GET path="/marker" host=shop.dynod.localhost ',
    ]

    def positions() -> list[int] | None:
        lines = tail()[start:]
        found = [next((i for i, x in enumerate(lines) if re.search(w, x)), -1)
                 for w in wanted]
        return found if -1 not in found else None

    try:
        found = wait_for("every kind of line", positions, timeout=20)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n" + "\n".join(tail()[start:])) from None
    assert isinstance(found, list) and found == sorted(found), "\n".join(tail()[start:])
    assert all(LINE.match(x) for x in tail()), tail()
    tail_pid = m.exec(["systemctl", "show", "-p", "MainPID", "--value", "tail"]).stdout
    restart_across_a_request_loop(m, tail)
    # The same dynoctl, still streaming.
    assert m.exec(["systemctl", "show", "-p", "MainPID", "--value", "tail"]).stdout == tail_pid
    prometheus_counts_the_traffic(m)
    # Ctrl-C ends the stream, and its journalctl in dynod.
    m.exec(["systemctl", "stop", "tail"])
    wait_for("journalctl --follow to end", lambda: m.exec(
        ["pgrep", "-f", "journalctl --output=json"], check=False).returncode == 1, timeout=10)


LOOP = 60


def restart_across_a_request_loop(m: Machine, tail: Callable[[], list[str]]) -> None:
    """`systemctl restart dynod` while requests go on: the open tail shows every
    router line of the loop exactly once (it reconnects, resuming after its last line,
    also inside a batched router entry)."""
    m.exec(["rm", "-f", "/tmp/half"])
    loop = (f"for i in $(seq 0 {LOOP - 1}); do "
            "curl -s -o /dev/null -H 'Host: shop.dynod.localhost' "
            "http://127.0.0.1/loop-$i; "
            f"[ $i = {LOOP // 2} ] && touch /tmp/half; sleep 0.05; done")
    before = m.exec(["systemctl", "show", "-p", "MainPID", "--value", "dynod"]).stdout
    # The restart also turns /metrics on (prometheus, below).
    m.exec(["sh", "-c", "mkdir -p /etc/dynod && echo 'metrics_listen = \"127.0.0.1:9311\"'"
                        " >> /etc/dynod/dynod.toml"])
    m.exec(["systemd-run", "--unit=loop", "--collect", "bash", "-c", loop])
    try:
        wait_for("half the loop", lambda: m.exec(["test", "-e", "/tmp/half"],
                                                   check=False).returncode == 0)
        m.exec(["systemctl", "restart", "dynod"], timeout=120)
        after = m.exec(["systemctl", "show", "-p", "MainPID", "--value", "dynod"]).stdout
        assert after != before
        wait_for("the loop to end", lambda: m.exec(
            ["systemctl", "is-active", "loop"], check=False).stdout.strip() != "active",
            timeout=60)
    finally:
        m.exec(["systemctl", "stop", "loop"], check=False)

    def shown() -> dict[int, int] | None:
        counts = dict.fromkeys(range(LOOP), 0)
        for x in tail():
            found = re.search(r'dynod\[router\]: at=info method=GET path="/loop-(\d+)"', x)
            if found:
                counts[int(found.group(1))] += 1
        return counts if all(counts.values()) else None

    try:
        counts = wait_for("every router line of the loop", shown, timeout=30)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n" + "\n".join(tail()[-80:])) from None
    assert isinstance(counts, dict)
    assert {i: n for i, n in counts.items() if n != 1} == {}, "shown more than once"


def scrape(m: Machine) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = m.exec(["curl", "-sS", "--max-time", "10", "http://127.0.0.1:9311/metrics"]).stdout
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def prometheus_counts_the_traffic(m: Machine) -> None:
    """curl /metrics parses as Prometheus' text format; the request counter, bytes and
    the duration histogram move with the requests sent; dynos, builds, health."""
    ok = ("dynod_router_requests_total", (("app", "shop"), ("code", ""), ("status", "200")))
    hist = ("dynod_router_request_duration_seconds_count", (("app", "shop"),))
    nbytes = ("dynod_router_response_bytes_total", (("app", "shop"),))
    first = scrape(m)
    for _ in range(5):
        assert get(m, "shop.dynod.localhost", "/counted")[0] == 200
    try:
        wait_for("the counter to move by 5", lambda: scrape(m).get(ok, 0)
                 == first.get(ok, 0) + 5, timeout=20)
    except AssertionError:
        raise AssertionError(f"{scrape(m).get(ok)} vs {first.get(ok)}") from None
    last = scrape(m)
    assert last[hist] == first.get(hist, 0) + 5
    assert last[nbytes] > first.get(nbytes, 0)
    assert last[("dynod_up", ())] == 1 and last[("dynod_store_ok", ())] == 1
    up = [k for k, v in last.items() if k[0] == "dynod_dyno_state" and v == 1]
    assert (("app", "shop"), ("dyno", "web.1"), ("state", "up"), ("type", "web")) in [
        k[1] for k in up], up
    assert any(k[0] == "dynod_dyno_memory_bytes" and v > 0 for k, v in last.items())
    assert any(k[0] == "dynod_dyno_cpu_seconds_total" for k in last), sorted(last)


def test_history_filters_and_errors(stack_machine: Machine) -> None:
    m = stack_machine
    deploy_echo(m, "shop")
    all_up(m, "shop", 1)
    dynoctl(m, "config:set", "-a", "shop", "GREETING=hi")
    assert get(m, "shop.dynod.localhost")[0] == 200
    wait_for("a router line", lambda: "dynod[router]" in dynoctl(m, "logs", "-a", "shop"))
    # The config change rolls out: wait until the old web.1 has exited, so no line
    # arrives between the reads compared below.
    wait_for("the rollout to end", lambda: "Process exited with status" in dynoctl(
        m, "logs", "-a", "shop", "-s", "dynod"), timeout=60)
    everything = dynoctl(m, "logs", "-a", "shop").splitlines()
    assert 5 < len(everything) <= 100
    assert all(LINE.match(x) for x in everything), everything
    assert any(x.endswith("app[api]: Set GREETING config vars by user root")
               for x in everything)
    assert len(dynoctl(m, "logs", "-a", "shop", "-n", "3").splitlines()) == 3
    assert dynoctl(m, "logs", "-a", "shop", "-n", "3").splitlines() == everything[-3:]
    app_only = dynoctl(m, "logs", "-a", "shop", "-s", "app").splitlines()
    assert app_only and all(" app[" in x for x in app_only)
    web = dynoctl(m, "logs", "-a", "shop", "-d", "web").splitlines()
    assert web and all("[web.1]:" in x for x in web)
    assert any("dynod[web.1]: State changed from starting to up" in x for x in web)
    bad = m.run(["dynoctl", "logs", "-a", "shop", "-n", "5000"], cwd="/tmp")
    assert bad.returncode == 1 and "give 1 to 1500 lines" in bad.stderr
    bad = m.run(["dynoctl", "logs", "-a", "nope"], cwd="/tmp")
    assert bad.returncode == 1 and 'app "nope" not found' in bad.stderr
    runtime_metrics_from_the_cgroup(m)


SAMPLE = re.compile(r"dynod\[web\.1\]: source=web\.1 dyno=heroku\.shop\.[0-9a-f-]{36} "
                    r"sample#memory_total=([\d.]+)MB sample#memory_rss=([\d.]+)MB "
                    r"sample#memory_cache=([\d.]+)MB sample#memory_swap=([\d.]+)MB "
                    r"sample#memory_pgpgin=(\d+)pages sample#memory_pgpgout=(\d+)pages "
                    r"sample#memory_quota=512\.00MB$")
LOAD = re.compile(r"dynod\[web\.1\]: source=web\.1 dyno=heroku\.shop\.[0-9a-f-]{36} "
                  r"sample#load_avg_1m=\d+\.\d\d sample#load_avg_5m=\d+\.\d\d "
                  r"sample#load_avg_15m=\d+\.\d\d$")


def runtime_metrics_from_the_cgroup(m: Machine) -> None:
    """labs:enable log-runtime-metrics: Heroku's two lines for web.1 within 25 s, with
    the figures of its cgroup's memory.stat."""
    assert "source=web.1" not in dynoctl(m, "logs", "-a", "shop", "-d", "web.1")
    out = m.run(["dynoctl", "labs:enable", "log-runtime-metrics", "-a", "shop"], cwd="/tmp")
    assert "Enabling log-runtime-metrics for ⬢ shop... done" in out.stdout + out.stderr
    [web] = [d for d in ps(m, "shop") if d["name"] == "web.1"]

    def sample() -> tuple[re.Match[str], re.Match[str] | None] | None:
        lines = dynoctl(m, "logs", "-a", "shop", "-d", "web.1", "-n", "20").splitlines()
        found = [s for x in lines if (s := SAMPLE.search(x))]
        return (found[-1], next((s for x in lines if (s := LOAD.search(x))), None)
                ) if found else None

    got = wait_for("a runtime metrics line", sample, timeout=25)
    assert isinstance(got, tuple)
    memory, load = got
    assert load is not None, "no load line"
    cgroup = f"dynod.slice/dynod-shop.slice/{web['unit']}"
    v1 = m.exec(["cat", f"/sys/fs/cgroup/memory/{cgroup}/memory.stat"], check=False)
    stat = v1.stdout if v1.returncode == 0 else m.exec(
        ["cat", f"/sys/fs/cgroup/{cgroup}/memory.stat"]).stdout  # a cgroup v2 host
    fields = {k: int(v) for k, v in (line.split() for line in stat.splitlines())}
    rss_mb = fields.get("total_rss", fields.get("anon", 0)) / 2**20
    # The idle echo app's memory moves little between the sample and this read.
    assert abs(float(memory.group(2)) - rss_mb) < 2.0, (memory.group(0), rss_mb)
    assert float(memory.group(2)) > 1.0
    if "total_pgpgin" in fields:  # cgroup v2 does not count pages in and out
        assert 0 < int(memory.group(5)) <= fields["total_pgpgin"]
    total = float(memory.group(2)) + float(memory.group(4))
    assert abs(float(memory.group(1)) - total) < 0.015  # total = rss + swap
