"""The placement planner: spread, capacity, no churn, failover, scale down, refusal."""

from __future__ import annotations

from collections import Counter

from dynod.model.cluster import Node, Placement
from dynod.model.formation import Process
from dynod.model.placement import Plan, Wanted, place, shortfall


def node(name: str, memory_mb: int = 4096) -> Node:
    return Node(name, "10.216.0.2", "10.216.0.2:5443", "10.213.16.0/20", memory_mb)


ABC = [node("node-a"), node("node-b"), node("node-c")]


def per_node(plan: Plan, app: str = "shop", ptype: str | None = None) -> dict[str, int]:
    return dict(Counter(p.node for p in plan.placements if p.app == app
                        and (ptype is None or p.dyno.startswith(ptype + "."))))


def test_replicas_of_a_type_spread_evenly_across_nodes() -> None:
    plan = place({"shop": [Process("web", 6, "standard-1x"),
                           Process("worker", 3, "standard-1x")]}, ABC, [])
    assert per_node(plan, ptype="web") == {"node-a": 2, "node-b": 2, "node-c": 2}
    assert per_node(plan, ptype="worker") == {"node-a": 1, "node-b": 1, "node-c": 1}
    assert sorted(p.dyno for p in plan.placements) == sorted(
        [f"web.{n}" for n in range(1, 7)] + [f"worker.{n}" for n in range(1, 4)])
    assert plan.unplaced == ()


def test_a_second_app_fills_the_emptier_nodes_first() -> None:
    plan = place({"shop": [Process("web", 2, "standard-1x")],
                  "blog": [Process("web", 1, "standard-1x")]}, ABC, [])
    # blog's web.1 goes first (apps by name) to node-a; shop's two then avoid it.
    assert [(p.app, p.dyno, p.node) for p in plan.placements] == [
        ("blog", "web.1", "node-a"), ("shop", "web.1", "node-b"), ("shop", "web.2", "node-c")]


def test_memory_capacity_is_respected_by_dyno_size() -> None:
    # 2 GB nodes: at most one performance-m (2560 MB) fits nowhere, standard-2x two each.
    small = [node("node-a", 2048), node("node-b", 2048)]
    plan = place({"shop": [Process("web", 5, "standard-2x"),
                           Process("big", 1, "performance-m")]}, small, [])
    assert per_node(plan) == {"node-a": 2, "node-b": 2}
    assert plan.unplaced == (Wanted("shop", "big.1", 2560), Wanted("shop", "web.5", 1024))


def test_existing_placements_are_kept_while_their_node_lives() -> None:
    current = [Placement("shop", "web.1", "node-c"), Placement("shop", "web.2", "node-c")]
    plan = place({"shop": [Process("web", 3, "standard-1x")]}, ABC, current)
    assert set(plan.placements) >= set(current)
    assert per_node(plan) == {"node-c": 2, "node-a": 1}


def test_a_node_joining_moves_nothing() -> None:
    first = place({"shop": [Process("web", 4, "standard-1x")]}, ABC[:2], [])
    again = place({"shop": [Process("web", 4, "standard-1x")]}, ABC, first.placements)
    assert again.placements == first.placements


def test_dynos_of_a_vanished_node_move_to_the_alive_ones() -> None:
    formation = {"shop": [Process("web", 6, "standard-1x"), Process("worker", 3, "standard-1x")]}
    before = place(formation, ABC, [])
    after = place(formation, ABC[:2], before.placements)
    assert "node-c" not in per_node(after)
    assert per_node(after, ptype="web") == {"node-a": 3, "node-b": 3}
    kept = {p for p in before.placements if p.node != "node-c"}
    assert kept <= set(after.placements)  # only node-c's dynos moved
    assert len(after.placements) == 9 and after.unplaced == ()


def test_numbers_beyond_the_quantity_are_dropped() -> None:
    before = place({"shop": [Process("web", 6, "standard-1x")]}, ABC, [])
    after = place({"shop": [Process("web", 2, "standard-1x")]}, ABC, before.placements)
    assert [p.dyno for p in after.placements] == ["web.1", "web.2"]
    assert set(after.placements) <= set(before.placements)
    assert place({}, ABC, before.placements).placements == ()


def test_a_kept_dyno_that_no_longer_fits_its_node_moves() -> None:
    current = [Placement("shop", "web.1", "node-a")]
    nodes = [node("node-a", 512), node("node-b", 4096)]
    plan = place({"shop": [Process("web", 1, "standard-2x")]}, nodes, current)
    assert plan.placements == (Placement("shop", "web.1", "node-b"),)


def test_no_nodes_leaves_everything_unplaced() -> None:
    plan = place({"shop": [Process("web", 2, "standard-1x")]}, [], [])
    assert plan.placements == () and len(plan.unplaced) == 2


def test_scaling_beyond_capacity_names_the_shortfall() -> None:
    nodes = [node("node-a"), node("node-b"), node("node-c")]  # 12288 MB
    others = [Process("worker", 12, "standard-1x")]  # 6144 MB
    formations = {"shop": [Process("web", 40, "standard-1x"), *others]}
    short = shortfall(formations, nodes, [], "shop", ["web"])
    assert short is not None
    assert short.message() == (
        "Not enough memory for web=40 (standard-1x, 512 MB each): the cluster has "
        "6144 MB free of 12288 MB; scale down or add a machine")
    assert shortfall({"shop": [Process("web", 12, "standard-1x"), *others]}, nodes, [],
                     "shop", ["web"]) is None


def test_fragmented_memory_is_a_shortfall_even_when_the_sum_fits() -> None:
    # 2 x 1536 MB free: 3072 MB in all, yet no node holds a 2560 MB dyno.
    nodes = [node("node-a", 1536), node("node-b", 1536)]
    short = shortfall({"shop": [Process("big", 1, "performance-m")]}, nodes, [], "shop",
                      ["big"])
    assert short is not None and "3072 MB free of 3072 MB" in short.message()
