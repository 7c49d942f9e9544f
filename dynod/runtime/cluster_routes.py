"""Every machine's router routes to every ``up`` web dyno of the cluster: this
machine's own come from its supervisor (``Router.set_backends``), the other machines'
from what each publishes under ``dynos/`` (``ClusterView.located``, on its lease).

A follower thread reads ``located()`` every second and hands the router the other
nodes' up web dynos whenever they change (``router.protocol.RemoteRoutes``); HAProxy's
runtime API adds and removes the servers, without a reload. A node whose lease lapsed
has no records any more, so its dynos leave every router within about a second of
etcd dropping them. When etcd cannot be read, the last routes stay.

Server names (``haproxy_config.server_name``: dyno, address, port) cannot collide
across nodes or generations: each node's dynos take addresses from a pool of its own,
and two dynos up at once never share one.
"""

from __future__ import annotations

from collections.abc import Iterable

from dynod.model.cluster import ClusterView, Located
from dynod.model.dynos import DynoState
from dynod.router.protocol import Backend, RemoteRoutes
from dynod.runtime.follower import Follower

INTERVAL = 1.0


def remote_backends(located: Iterable[Located], me: str) -> dict[str, list[Backend]]:
    """Other nodes' up web dynos with an address and port, by app, each list sorted."""
    found: dict[str, set[Backend]] = {}
    for d in located:
        if (d.node == me or d.state != DynoState.UP or d.dyno.partition(".")[0] != "web"
                or not d.address or not 0 < d.port < 65536):
            continue
        found.setdefault(d.app, set()).add(Backend(d.dyno, d.address, d.port))
    return {app: sorted(bs) for app, bs in sorted(found.items())}


class ClusterRoutes(Follower):
    """Follows ``view.located()`` into ``router.set_remote``."""

    name = "cluster-routes"

    def __init__(self, view: ClusterView, router: RemoteRoutes, *,
                 interval: float = INTERVAL) -> None:
        super().__init__(interval)
        self.view = view
        self.router = router
        self._routed: dict[str, list[Backend]] | None = None

    def sync(self) -> bool:
        """One pass; True when the router was given new routes. Raises DynodError."""
        found = remote_backends(self.view.located(), self.view.me)
        if found == self._routed:
            return False
        self.router.set_remote(found)
        self._routed = found
        return True
