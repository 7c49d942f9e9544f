"""``ps`` across a cluster: this node's dynos as its supervisor knows them, every other
node's as it published them (``dynos/<node>/...``, :class:`dynod.model.cluster.Located`).
Pure."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime

from dynod.model.cluster import Located
from dynod.model.dynos import DynoInfo, DynoRef, DynoState
from dynod.runtime.dynos import unit_of
from dynod.runtime.plan import quota_of


def _since(text: str) -> float:
    with contextlib.suppress(ValueError):
        return datetime.fromisoformat(text).timestamp()
    return 0.0


def _state(text: str) -> DynoState:
    try:
        return DynoState(text)
    except ValueError:
        return DynoState.DOWN


def from_located(d: Located, command: str) -> DynoInfo:
    ptype, _, number = d.dyno.rpartition(".")
    unit = unit_of(DynoRef(d.app, ptype, int(number), d.generation)) if number.isdigit() else ""
    return DynoInfo(app=d.app, name=d.dyno, process_type=ptype, state=_state(d.state),
                    since=_since(d.since), command=command, size=d.size,
                    release=d.release, unit=unit, address=d.address, port=d.port,
                    memory_quota=quota_of(d.size), node=d.node)


def cluster_dynos(me: str, local: Sequence[DynoInfo], located: Iterable[Located],
                  commands: Mapping[str, str]) -> list[DynoInfo]:
    """Every node's dynos of one app, each with its node, by type, number and node.
    ``commands``: the process types' commands (another node's record has none)."""
    out = [replace(d, node=me) for d in local]
    out += [from_located(d, commands.get(d.dyno.rpartition(".")[0], ""))
            for d in located if d.node != me]

    def key(d: DynoInfo) -> tuple[str, int, str]:
        number = d.name.rpartition(".")[2]
        return d.process_type, int(number) if number.isdigit() else 0, d.node
    return sorted(out, key=key)
