"""API latency: config:set and releases on an app with 1,000 releases, ps-free.

Runs inside a sandbox machine against the real dynod.service over its Unix socket.
Baseline in the same run: System.Version, an RPC that touches no state (the floor of a
call through the socket, the peer-credential splice and gRPC).

    .venv/bin/python -m benchmarks.api [--releases 1000] [-n 200] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import grpc

from benchmarks.common import Figure, Summary, timed, write
from dynod.v1 import (
    apps_pb2,
    apps_pb2_grpc,
    config_pb2,
    config_pb2_grpc,
    releases_pb2,
    releases_pb2_grpc,
    system_pb2,
    system_pb2_grpc,
)
from tests.sandbox.machine import PROJECT, Machine

SOCKET = "unix:/run/dynod/dynod.sock"


def release_calls(cfg: config_pb2_grpc.ConfigStub, rel: releases_pb2_grpc.ReleasesStub,
                  releases: int, n: int, app: str = "bench") -> dict[str, list[float]]:
    """Fill ``app`` (made, at v1) to ``releases`` releases with config:set, then ``n``
    samples each of config:set (a new release) and releases (the 15 newest)."""
    for i in range(releases - 1):  # v1 exists already
        cfg.Set(config_pb2.SetConfigRequest(app=app, vars={"FILL": str(i)}))
    counter = iter(range(10**9))
    return {
        "config_set": timed(lambda: cfg.Set(config_pb2.SetConfigRequest(
            app=app, vars={"K": str(next(counter))})), n),
        "releases_15": timed(lambda: rel.List(releases_pb2.ListReleasesRequest(
            app=app, limit=15)), n),
    }


def inner(releases: int, n: int) -> dict[str, list[float]]:
    """In the machine: fill an app to ``releases`` releases, then time the calls."""
    ch = grpc.insecure_channel(SOCKET)
    apps_pb2_grpc.AppsStub(ch).Create(apps_pb2.CreateAppRequest(name="bench"))
    rel = releases_pb2_grpc.ReleasesStub(ch)
    sysstub = system_pb2_grpc.SystemStub(ch)
    return {
        "version": timed(lambda: sysstub.Version(system_pb2.VersionRequest()), n),
        **release_calls(config_pb2_grpc.ConfigStub(ch), rel, releases, n),
        "releases_all": timed(lambda: rel.List(releases_pb2.ListReleasesRequest(
            app="bench")), max(10, n // 10)),
    }


def collect(scale: float = 1.0, releases: int | None = None,
            n: int | None = None) -> list[Figure]:
    """scale 1 = the full run, 0.1 = --quick, 0.01 = the suite's smoke test."""
    releases = releases or max(5, round(1000 * scale))
    n = n or max(3, round(200 * scale))
    with Machine(egress=False) as m:
        proc = m.run([str(PROJECT / ".venv/bin/python"), "-m", "benchmarks.api", "--inner",
                      "--releases", str(releases), "-n", str(n)], check=True, timeout=1800)
    samples = json.loads(proc.stdout)
    base = Summary.of(samples["version"], "ms")
    return [
        Figure(f"API config:set, app with {releases}+ releases",
               Summary.of(samples["config_set"], "ms"), "System.Version RPC", base),
        Figure(f"API releases, 15 newest of {releases}+",
               Summary.of(samples["releases_15"], "ms"), "System.Version RPC", base),
        Figure(f"API releases, all {releases}+",
               Summary.of(samples["releases_all"], "ms"), "System.Version RPC", base),
    ]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--releases", type=int)
    parser.add_argument("-n", type=int)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        print(json.dumps(inner(args.releases, args.n)))
        return 0
    write(collect(args.scale, args.releases, args.n), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
