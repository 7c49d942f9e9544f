"""Formation: how many dynos of each process type run, and at which size.

Heroku (scaling article, CLI ps/scale.ts): ``web=3`` sets, ``worker+1`` / ``web-1``
change relatively, ``web=2:standard-2x`` also resizes; a count alone keeps the size.
Only types the current release declares can be scaled. On the first deploy that
declares ``web`` it starts at 1, every other type at 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from dynod.control import slugs
from dynod.errors import FailedPrecondition, InvalidArgument, ResourceExhausted
from dynod.model import sizes
from dynod.model.cluster import ClusterView
from dynod.model.events import EventBus, FormationChanged
from dynod.model.formation import MAX_DYNOS_PER_APP, Process, ScaleChange
from dynod.model.placement import shortfall
from dynod.store import reads
from dynod.store.protocol import Store, Tx


def declare(tx: Tx, app: str, process_types: Mapping[str, str]) -> None:
    """Give each newly declared process type its formation entry (web 1, others 0)."""
    known = {p.type for p in tx.processes(app)}
    for name in process_types:
        if name not in known:
            tx.put_process(app, Process(name, 1 if name == "web" else 0, sizes.DEFAULT_SIZE))


def _declared(tx: Tx, app: str) -> tuple[int, dict[str, str]]:
    """The current release's version and process types. Raises NotFound."""
    reads.require_app(tx, app)
    release = tx.latest_release(app)
    if release is None or release.slug_id is None:
        return (0 if release is None else release.version), {}
    return release.version, dict(slugs.require(tx, app, release.slug_id).process_types)


def _entries(tx: Tx, app: str, declared: Mapping[str, str]) -> list[Process]:
    rows = {p.type: p for p in tx.processes(app)}
    out = []
    for name in sorted(declared):
        row = rows.get(name) or Process(name, 0, sizes.DEFAULT_SIZE)
        out.append(Process(name, row.quantity, row.size, declared[name]))
    return out


def _check_declared(app: str, version: int, declared: Mapping[str, str], name: str) -> None:
    if name in declared:
        return
    if not declared:
        raise FailedPrecondition(
            f'app "{app}": release v{version} declares no process types; deploy a slug '
            "with process types first (dynoctl slugs:deploy, or git push)"
        )
    raise FailedPrecondition(
        f'app "{app}": no process type "{name}" in release v{version}; '
        f"declared types: {', '.join(sorted(declared))}"
    )


def _check_capacity(tx: Tx, cluster: ClusterView | None, app: str,
                    rows: Mapping[str, Process], grown: Sequence[str]) -> None:
    """In a cluster, refuse a formation of ``app`` whose ``grown`` types the alive
    nodes cannot hold beside every other app's dynos. Raises ResourceExhausted."""
    if cluster is None or not grown:
        return
    formations = {a.name: _entries(tx, a.name, _declared(tx, a.name)[1])
                  for a in tx.apps() if a.name != app}
    formations[app] = list(rows.values())
    short = shortfall(formations, cluster.nodes(), cluster.placements(), app, grown)
    if short is not None:
        raise ResourceExhausted(short.message())


def _grown(old: Process, new: Process) -> bool:
    return new.quantity > old.quantity or (
        new.quantity > 0 and sizes.parse_size(new.size).memory_mb
        > sizes.parse_size(old.size).memory_mb)


def get_formation(store: Store, app: str) -> list[Process]:
    """The entries of the process types the current release declares, by type name.

    Raises NotFound.
    """
    with store.read() as tx:
        _, declared = _declared(tx, app)
        return _entries(tx, app, declared)


def scale(store: Store, events: EventBus, app: str, changes: Sequence[ScaleChange],
          user: str, *, cluster: ClusterView | None = None) -> list[Process]:
    """Apply ``changes`` atomically (all or none); returns the whole formation and
    publishes FormationChanged.

    Raises InvalidArgument (empty, duplicate type, negative count, unknown size),
    FailedPrecondition (undeclared type, a decrease below zero), ResourceExhausted
    (over MAX_DYNOS_PER_APP; in a ``cluster``, more memory than its nodes have),
    NotFound.
    """
    if not changes:
        raise InvalidArgument("nothing to scale; use TYPE=N, TYPE+N or TYPE-N")
    seen: set[str] = set()
    for c in changes:
        if c.type in seen:
            raise InvalidArgument(f"process type {c.type!r} is given twice; give it once")
        seen.add(c.type)
        if c.quantity is not None and c.delta is not None:
            raise InvalidArgument(f"{c.type}: give a count or a change, not both")
        if c.quantity is None and c.delta is None and c.size is None:
            raise InvalidArgument(f"{c.type}: give a count (={c.type}=N), a change or a size")
        if c.quantity is not None and c.quantity < 0:
            raise InvalidArgument(
                f"{c.type}={c.quantity}: a dyno count cannot be negative; "
                f"use {c.type}=0 to stop them all"
            )
        if c.size is not None:
            sizes.parse_size(c.size)
    with store.write() as tx:
        version, declared = _declared(tx, app)
        rows = {p.type: p for p in _entries(tx, app, declared)}
        before = dict(rows)
        for c in changes:
            _check_declared(app, version, declared, c.type)
            if c.type == "release" and (c.quantity or c.delta or 0) > 0:
                # Heroku: release@0; it runs as a one-off dyno in the release phase.
                raise InvalidArgument(
                    f'app "{app}": the release process type runs once per release (the '
                    "release phase) and cannot be scaled; set its size with "
                    "ps:type release=SIZE")
            old = rows[c.type]
            quantity = old.quantity
            if c.quantity is not None:
                quantity = c.quantity
            elif c.delta is not None:
                quantity = old.quantity + c.delta
                if quantity < 0:
                    raise FailedPrecondition(
                        f'app "{app}": {c.type} has {old.quantity} dynos, so '
                        f"{c.type}{c.delta:+d} would be negative; use {c.type}=0 to stop them all"
                    )
            size = sizes.parse_size(c.size).name if c.size is not None else old.size
            rows[c.type] = Process(c.type, quantity, size, old.command)
        total = sum(p.quantity for p in rows.values())
        if total > MAX_DYNOS_PER_APP:
            raise ResourceExhausted(
                f'app "{app}": {total} dynos would exceed the limit of {MAX_DYNOS_PER_APP} '
                "per app; scale other types down first"
            )
        _check_capacity(tx, cluster, app, rows,
                        [c.type for c in changes if _grown(before[c.type], rows[c.type])])
        for c in changes:
            p = rows[c.type]
            tx.put_process(app, Process(p.type, p.quantity, p.size))
        found = _entries(tx, app, declared)
    events.publish(FormationChanged(app, user, tuple(found), scaled=True))
    return found


def resize(store: Store, events: EventBus, app: str, new_sizes: Mapping[str, str],
           user: str, *, cluster: ClusterView | None = None) -> list[Process]:
    """Set the size of each named type (counts unchanged); returns the whole formation
    and publishes FormationChanged.

    Raises InvalidArgument (empty, unknown size), FailedPrecondition (undeclared type),
    ResourceExhausted (in a ``cluster``, more memory than its nodes have), NotFound.
    """
    if not new_sizes:
        raise InvalidArgument("nothing to resize; use TYPE=SIZE")
    parsed = {t: sizes.parse_size(s).name for t, s in new_sizes.items()}
    with store.write() as tx:
        version, declared = _declared(tx, app)
        rows = {p.type: p for p in _entries(tx, app, declared)}
        for name in parsed:
            _check_declared(app, version, declared, name)
        after = {**rows, **{n: Process(n, rows[n].quantity, size, rows[n].command)
                            for n, size in parsed.items()}}
        _check_capacity(tx, cluster, app, after,
                        [n for n in parsed if _grown(rows[n], after[n])])
        for name, size in parsed.items():
            tx.put_process(app, Process(name, rows[name].quantity, size))
        found = _entries(tx, app, declared)
    events.publish(FormationChanged(app, user, tuple(found), scaled=False))
    return found
