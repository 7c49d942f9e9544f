"""dynod.model.dynos: which dyno, what it runs, what ``ps`` shows of it.

A dyno is (app, process type, number, generation); a rollout starts the next
generation beside the current one. Naming its unit is the runtime's business
(``dynod.runtime.dynos.unit_of``): systemd's escaping does not belong in the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from dynod.model.releases import RELEASE_TYPE

# The process type of one-off dynos (Heroku's run.N): never part of a formation.
ONE_OFF_TYPE = "run"
# One-off dynos: ``dynoctl run`` and the release phase (release.N); neither is scaled.
ONE_OFF_TYPES = frozenset({ONE_OFF_TYPE, RELEASE_TYPE})


class DynoState(StrEnum):
    """Heroku's dyno states (heroku.md §5), as ``ps`` and the app's log say them."""

    STARTING = "starting"
    UP = "up"
    CRASHED = "crashed"
    DOWN = "down"


@dataclass(frozen=True)
class DynoRef:
    """Which dyno."""

    app: str
    process_type: str
    number: int
    generation: int

    @property
    def dyno(self) -> str:
        return f"{self.process_type}.{self.number}"

    @property
    def key(self) -> str:
        """Directory and netns name. Apps are [a-z0-9-], types [A-Za-z0-9_-]: '.' is free."""
        return f"{self.app}.{self.process_type}.{self.number}.{self.generation}"

    @property
    def web(self) -> bool:
        return self.process_type == "web"


def parse_key(key: str) -> DynoRef | None:
    parts = key.split(".")
    if len(parts) != 4 or not parts[2].isdigit() or not parts[3].isdigit():
        return None
    return DynoRef(parts[0], parts[1], int(parts[2]), int(parts[3]))


@dataclass(frozen=True)
class DynoMeta:
    """A started dyno, as written to its ``dyno.json``."""

    app: str
    process_type: str
    number: int
    generation: int
    release: int
    command: str
    size: str
    address: str
    port: int

    @property
    def ref(self) -> DynoRef:
        return DynoRef(self.app, self.process_type, self.number, self.generation)


@dataclass(frozen=True)
class DynoInfo:
    """What ``dynoctl ps`` shows of one dyno."""

    app: str
    name: str  # web.1
    process_type: str
    state: DynoState
    since: float
    command: str
    size: str
    release: int
    unit: str
    address: str = ""
    port: int = 0
    memory_bytes: int | None = None
    memory_quota: int = 0
    cpu_nsec: int | None = None
    node: str = ""  # in a cluster: the node that runs it
