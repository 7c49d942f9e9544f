"""The seam between the dyno runtime's supervisor and the HTTP router.

The supervisor owns which web dynos are *up*; the router only routes. Whenever the set
of up web dynos of an app changes, the supervisor calls ``set_backends(app, backends)``
with the whole set (not a delta), so a router can be restarted or swapped and catch up
on the next call. ``remove_app(app)`` follows an app's deletion. Calls come from one
thread (the supervisor's) and must not block for long; errors are logged by the caller
and the call is repeated on the next change or periodic pass.

``dynod/router/haproxy.py`` (``HaproxyRouter``) implements this protocol; ``NullRouter``
is the default until it is swapped in.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol


class Backend(NamedTuple):
    """One up web dyno: its user-facing name (``web.1``), its netns address and $PORT.

    A tuple, so ``(dyno, ip, port)`` unpacks and compares as one.
    """

    dyno: str
    ip: str
    port: int


class Router(Protocol):
    def set_backends(self, app: str, backends: list[Backend]) -> None:
        """Route ``app`` to exactly these backends (sorted by dyno name; may be empty)."""

    def remove_app(self, app: str) -> None:
        """Forget ``app`` entirely (it was deleted)."""


class Draining(Protocol):
    """Optional (the supervisor uses it when the router has it): rollouts without a dropped
    request. ``ready``: the backend takes requests now (an old dyno may leave);
    ``in_flight``: requests it is still busy with (0 when gone), before its SIGTERM."""

    def ready(self, app: str, backend: Backend) -> bool: ...

    def in_flight(self, app: str, backend: Backend) -> int: ...


class RemoteRoutes(Protocol):
    """Optional (a cluster): the other machines' up web dynos, which
    ``runtime.cluster_routes`` reads from what each node publishes."""

    def set_remote(self, backends: dict[str, list[Backend]]) -> None:
        """Route each app also to these backends (the whole set; an app missing from
        ``backends`` has none on another machine)."""


class NullRouter:
    """Routes nothing; remembers the last backends per app (tests and the default)."""

    def __init__(self) -> None:
        self.backends: dict[str, list[Backend]] = {}

    def set_backends(self, app: str, backends: list[Backend]) -> None:
        self.backends[app] = list(backends)

    def remove_app(self, app: str) -> None:
        self.backends.pop(app, None)
