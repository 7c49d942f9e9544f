"""dynoctl in a cluster, against an in-process daemon whose cluster view is a fixed
picture of three nodes: ``ps`` lists every node's dynos with `` on node-b`` after
Heroku's line (``--json`` with ``node``), and ``ps:scale`` beyond the cluster's memory
is refused with the shortfall, the formation unchanged."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from dynod.api.daemon import Daemon
from dynod.api.server import make_server
from dynod.cli import main as dynoctl
from dynod.model.cluster import Located, Member, Node, Placement
from dynod.model.dynos import DynoInfo, DynoState
from dynod.settings import Settings
from dynod.store.sqlite import SqliteStore
from tests.unit.control_plane.harness import Api


@dataclass
class Picture:
    """A ClusterView that shows what it was given."""

    me: str = "node-a"
    alive: list[Node] = field(default_factory=list)
    where: list[Located] = field(default_factory=list)

    def members(self) -> list[Member]:
        return []

    def nodes(self) -> list[Node]:
        return self.alive

    def leader(self) -> str | None:
        return "node-a"

    def placements(self, app: str | None = None) -> list[Placement]:
        return [Placement(d.app, d.dyno, d.node) for d in self.where
                if app is None or d.app == app]

    def located(self, app: str | None = None) -> list[Located]:
        return [d for d in self.where if app is None or d.app == app]


class LocalDynos:
    """The supervisor's answer for this node: web.1, up a minute."""

    def dynos(self, app: str) -> list[DynoInfo]:
        return [DynoInfo(app, "web.1", "web", DynoState.UP, time.time() - 60, "serve $PORT",
                         "standard-1x", 2, "dynod-shop-web.1-1.service")]


def node(name: str) -> Node:
    return Node(name, "10.216.0.2", "10.216.0.2:5443", "10.213.16.0/20", 4096)


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Api]:
    since = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(time.time() - 120))
    picture = Picture(alive=[node("node-a"), node("node-b"), node("node-c")], where=[
        Located("node-a", "shop", "web.1", "up", 2, "standard-1x", 1, since=since),
        Located("node-b", "shop", "web.2", "up", 2, "standard-1x", 1, "10.213.32.2", 5000,
                since),
        Located("node-c", "shop", "web.3", "starting", 2, "standard-1x", 1, since=since)])
    store = SqliteStore.open(tmp_path / "state" / "state.db")
    daemon = Daemon(store, Settings(state_dir=tmp_path / "state", runtime_dir=tmp_path / "run"),
                    supervisor=LocalDynos(), cluster=picture)  # type: ignore[arg-type]
    server, _ = make_server(daemon, max_workers=8)
    sock = tmp_path / "api.sock"
    server.add_insecure_port(f"unix:{sock}")
    server.start()
    api = Api(grpc.insecure_channel(f"unix:{sock}"), sock, store, daemon)
    monkeypatch.setenv("DYNOD_SOCKET", str(sock))
    monkeypatch.chdir(tmp_path)
    api.create_app("shop")
    api.deploy("shop", {"web": "serve $PORT", "worker": "work"})
    try:
        yield api
    finally:
        api.channel.close()
        server.stop(None).wait()
        store.close()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = dynoctl.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_ps_lists_every_nodes_dynos_with_its_node(cli: Api,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "ps", "-a", "shop")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "=== web (Standard-1X): serve $PORT (3)"
    assert [line.split(":")[0] for line in lines[1:]] == ["web.1", "web.2", "web.3"]
    assert lines[1].startswith("web.1: up ") and lines[1].endswith("(~ 1m ago) on node-a")
    assert lines[2].startswith("web.2: up ") and lines[2].endswith("(~ 2m ago) on node-b")
    assert lines[3].startswith("web.3: starting ") and lines[3].endswith(" on node-c")
    dynos = json.loads(run(capsys, "ps", "-a", "shop", "--json")[1])
    assert [(d["name"], d["node"]) for d in dynos] == [
        ("web.1", "node-a"), ("web.2", "node-b"), ("web.3", "node-c")]
    assert dynos[1]["address"] == "10.213.32.2"


def test_scale_beyond_the_clusters_memory_is_refused_and_changes_nothing(
        cli: Api, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "ps:scale", "-a", "shop", "worker=12")[0] == 0  # 6144 MB
    before = cli.dump()
    code, _, err = run(capsys, "ps:scale", "-a", "shop", "web=40")
    assert (code, err) == (1, " !    Not enough memory for web=40 (standard-1x, 512 MB "
                              "each): the cluster has 6144 MB free of 12288 MB; scale down "
                              "or add a machine\n")
    assert cli.dump() == before
    assert run(capsys, "ps:scale", "-a", "shop")[1] == "web=1:Standard-1X worker=12:Standard-1X\n"
    code, _, err = run(capsys, "ps:type", "-a", "shop", "worker=performance-l")
    assert code == 1 and "Not enough memory for worker=12 (performance-l, 14336 MB each)" in err
    assert cli.dump() == before
    # What fits is accepted.
    assert run(capsys, "ps:scale", "-a", "shop", "web=12")[0] == 0
