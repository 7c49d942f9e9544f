"""What this machine says it runs, for the cluster (``dynos/<me>/...`` records, which
``ps`` across the cluster and every machine's router read)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from dynod.model.cluster import Located
from dynod.runtime.plan import Dyno


def located_of(node: str, records: Sequence[Dyno]) -> list[Located]:
    """The supervisor's dyno records as :class:`Located` values of ``node``; a dyno
    being stopped is left out (the router stops sending it requests first)."""
    return [Located(node=node, app=d.ref.app, dyno=d.ref.dyno, state=str(d.state),
                    release=d.release, size=d.size, generation=d.ref.generation,
                    address="" if d.meta is None else d.meta.address,
                    port=0 if d.meta is None else d.meta.port,
                    since=datetime.fromtimestamp(d.since, UTC).isoformat())
            for d in records if not d.stopping]
