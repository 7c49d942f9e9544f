"""Waiting for a release to roll out (issue 7): ``dynoctl slugs:deploy`` (and anything
else that makes a release) returns once the new web dynos are up and the old ones are
gone, or says that the release failed and which one keeps serving."""

from __future__ import annotations

import sys
import time

from dynod.cli import client
from dynod.cli.client import CliError, call
from dynod.v1 import dynos_pb2, dynos_pb2_grpc, releases_pb2, releases_pb2_grpc

# Heroku's boot timeout is 60 s; a failed release is decided after at most that, plus
# the time to stop the old dynos (which drain for up to 30 s).
TIMEOUT = 150.0


def failure_of(release: releases_pb2.Release) -> str:
    """Why a failed release's web dynos never came up, as dynod recorded it (a dynod
    from before it kept the cause records none)."""
    return release.failure or "crashed at boot or R10"


def wait_rollout(app: str, version: int, timeout: float = TIMEOUT) -> None:
    """``Rolling out vN.... done.`` once every web dyno runs ``version`` (old ones
    drained and stopped); raises CliError when the release failed."""
    channel = client.channel()
    rels = releases_pb2_grpc.ReleasesStub(channel)
    dynos = dynos_pb2_grpc.DynosStub(channel)
    deadline = time.monotonic() + timeout
    said = False
    while True:
        newest = call(rels.List, releases_pb2.ListReleasesRequest(app=app, limit=1)).releases
        release = call(rels.Get, releases_pb2.GetReleaseRequest(app=app, version=version)).release
        if release.status == "failed":
            print(f"Rolling out v{version}.... failed." if not said else "failed.",
                  file=sys.stderr, flush=True)
            serving = call(rels.List, releases_pb2.ListReleasesRequest(app=app)).releases
            now = next((f"v{r.version}" for r in serving if r.current), "the previous release")
            raise CliError(f"release v{version} failed: its web dynos did not come up: "
                           f"{failure_of(release)}; {now} keeps serving. See "
                           "`dynoctl logs` and `dynoctl releases`")
        if newest and newest[0].version > version:
            if said:
                print("superseded.", file=sys.stderr, flush=True)
            return
        try:
            web = [d for d in call(dynos.List, dynos_pb2.ListDynosRequest(app=app)).dynos
                   if d.type == "web"]
        except CliError:
            if said:
                raise
            return  # a dynod that runs no dynos: nothing to wait for
        # Old web dynos leave only once their replacements are up and routed, so none
        # left means rolled out (a first release has none to wait for: nothing said).
        if all(d.release == version for d in web):
            if said:
                print("done.", file=sys.stderr, flush=True)
            return
        if not said:
            print(f"Rolling out v{version}....", end=" ", file=sys.stderr, flush=True)
            said = True
        if time.monotonic() > deadline:
            print(f"still going after {timeout:.0f} s; see `dynoctl ps`.", file=sys.stderr,
                  flush=True)
            return
        time.sleep(0.25)
