"""20 clients x 50 mixed operations at once against one daemon."""

from __future__ import annotations

import random
import threading
from collections import Counter

import grpc

from dynod.v1 import (
    config_pb2,
    config_pb2_grpc,
    formation_pb2,
    formation_pb2_grpc,
    releases_pb2,
    releases_pb2_grpc,
)
from tests.unit.control_plane.harness import Api

CLIENTS = 20
OPS = 50


def test_no_lost_update_no_duplicate_version(api: Api) -> None:
    api.create_app("shop")
    api.deploy("shop", {"web": "serve", "worker": "work"})  # v2, web=1 worker=0
    made: list[releases_pb2.Release] = []
    scaled = Counter[str]()
    final_values: dict[str, str | None] = {}
    errors: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(CLIENTS)

    def client(n: int) -> None:
        rng = random.Random(n)  # noqa: S311 - a reproducible mix, not secrets
        channel = grpc.insecure_channel(f"unix:{api.socket}")
        cfg = config_pb2_grpc.ConfigStub(channel)
        rel = releases_pb2_grpc.ReleasesStub(channel)
        form = formation_pb2_grpc.FormationStub(channel)
        mine: list[releases_pb2.Release] = []
        key = f"CLIENT_{n}"
        value: str | None = None
        scales = 0
        start.wait()
        try:
            for i in range(OPS):
                op = rng.choice(["set", "set", "unset", "scale", "list", "get"])
                if op == "scale" and scales >= 4:
                    op = "get"  # stay under Heroku's 100 dynos per app
                if op == "set":
                    value = f"{n}-{i}"
                    mine.append(cfg.Set(config_pb2.SetConfigRequest(
                        app="shop", vars={key: value})).release)
                elif op == "unset":
                    value = None
                    mine.append(cfg.Unset(config_pb2.UnsetConfigRequest(
                        app="shop", keys=[key])).release)
                elif op == "scale":
                    scales += 1
                    kind = rng.choice(["web", "worker"])
                    form.Scale(formation_pb2.ScaleFormationRequest(app="shop", updates=[
                        formation_pb2.ScaleUpdate(type=kind, delta=1)]))
                    with lock:
                        scaled[kind] += 1
                elif op == "list":
                    rel.List(releases_pb2.ListReleasesRequest(app="shop", limit=15))
                else:
                    cfg.Get(config_pb2.GetConfigRequest(app="shop"))
        except grpc.RpcError as exc:
            with lock:
                errors.append(f"{exc.code()}: {exc.details()}")
        finally:
            channel.close()
        with lock:
            made.extend(mine)
            final_values[key] = value

    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []

    versions = [r.version for r in made]
    assert len(versions) == len(set(versions)), "a version was handed out twice"
    listed = api.releases.List(releases_pb2.ListReleasesRequest(app="shop")).releases
    assert [r.version for r in listed] == list(range(2 + len(made), 0, -1))
    by_version = {r.version: r for r in listed}
    for r in made:  # every reply agrees with the ledger
        assert (by_version[r.version].description, by_version[r.version].user) == (
            r.description, r.user)
    config = dict(api.config.Get(config_pb2.GetConfigRequest(app="shop")).vars)
    assert config == {k: v for k, v in final_values.items() if v is not None}
    procs = {p.type: p.quantity
             for p in api.formation.Get(formation_pb2.GetFormationRequest(app="shop")).processes}
    assert procs == {"web": 1 + scaled["web"], "worker": scaled["worker"]}
