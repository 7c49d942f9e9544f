"""A thread that keeps something of this machine in step with the cluster by reading
it again every second or so (``sync``), the way ``runtime.cluster_network`` and
``runtime.cluster_routes`` follow the members and the located dynos. A failed pass is
logged once per distinct failure and retried (``system.loop.Loop``); what the last good
pass applied stays meanwhile.
"""

from __future__ import annotations

from dynod.system.loop import Loop


class Follower(Loop):
    """Subclasses give ``name`` (the thread's, and the log lines' prefix) and ``sync``."""

    name = "follower"
    on_failure = "what was applied stays, retrying"
    on_recovery = "in step again"

    def sync(self) -> bool:
        """One pass; True when it changed something. Raises DynodError."""
        raise NotImplementedError

    def step(self) -> None:
        self.sync()
