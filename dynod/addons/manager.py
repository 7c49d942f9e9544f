"""``AddonManager``: the :class:`~dynod.model.addons.AddonServices` the composition root
gives the control plane, over the one PostgreSQL cluster and the Redis instances.

Where things are (``state_dir`` is ``/var/lib/dynod``)::

    <state_dir>/addons/postgresql/data     the cluster (dynod-postgresql.service)
    <state_dir>/addons/postgresql/bin      -> /usr/lib/postgresql/<major>/bin
    <state_dir>/addons/redis/<addon>/      redis.conf, instance.json (root's)
    <state_dir>/addons/redis/<addon>/data  dump.rdb, appendonlydir (the server's)

The servers listen on the dynos' bridge gateway (``10.213.0.1``), so they can start
only once the bridge exists: the units are not enabled on their own; dynod starts them
(:meth:`ensure_running`, called by the composition root after ``ensure_network`` and
before the supervisor starts any dyno), the way it starts its router. Their units
outlive dynod: a restart or an upgrade of dynod restarts no database.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Set
from pathlib import Path

from dynod.addons.postgres import DEFAULT_PORT, PostgresCluster
from dynod.addons.redis import RedisInstances
from dynod.errors import InvalidArgument
from dynod.model.addons import POSTGRES, REDIS, Credentials, Plan


class AddonManager:
    """Provision, administer and admit add-ons on this machine's servers.

    ``gateway``: the address dynos reach the servers at (``plan_bridge(pool).gateway``).
    ``ensure_network``: makes that address exist (``netns.ensure_bridge``), called
    before a server is started. Thread-safe.
    """

    def __init__(self, state_dir: Path, gateway: str,
                 ensure_network: Callable[[], object] = lambda: None, *,
                 postgres: PostgresCluster | None = None,
                 redis: RedisInstances | None = None,
                 postgres_port: int = DEFAULT_PORT) -> None:
        root = state_dir / "addons"
        self.postgres = postgres or PostgresCluster(root / "postgresql", gateway,
                                                    postgres_port)
        self.redis = redis or RedisInstances(root / "redis", gateway)
        self._ensure_network = ensure_network
        self._network_ready = False
        self._lock = threading.Lock()

    def _network(self) -> None:
        with self._lock:
            if not self._network_ready:
                self._ensure_network()
                self._network_ready = True

    @staticmethod
    def _service(service: str) -> str:
        if service not in (POSTGRES, REDIS):
            raise InvalidArgument(f'unknown add-on service "{service}"; dynod runs '
                                  f"{POSTGRES} and {REDIS}")
        return service

    def provision(self, addon: str, plan: Plan) -> Credentials:
        self._network()
        if self._service(plan.service) == POSTGRES:
            return self.postgres.provision(addon, plan)
        credentials, _new = self.redis.provision(addon, plan)
        return credentials

    def deprovision(self, addon: str, service: str) -> None:
        if self._service(service) == POSTGRES:
            self._network()
            self.postgres.deprovision(addon)
        else:
            self.redis.deprovision(addon)

    def rotate_credentials(self, addon: str, service: str) -> Credentials:
        self._network()
        if self._service(service) == POSTGRES:
            return self.postgres.rotate(addon)
        return self.redis.rotate(addon)

    def reset(self, addon: str, service: str) -> None:
        self._network()
        if self._service(service) == POSTGRES:
            self.postgres.reset(addon)
        else:
            self.redis.reset(addon)

    def info(self, addon: str, service: str) -> Mapping[str, str]:
        self._network()
        if self._service(service) == POSTGRES:
            return self.postgres.info(addon)
        return self.redis.info(addon)

    def admit(self, addresses: Mapping[str, Set[str]]) -> None:
        """Redis add-ons are the ones with an instance here; every other name is a
        Postgres add-on (its pg_hba lines; a name with no database admits no one)."""
        redis_names = set(self.redis.names())
        if not addresses and not redis_names and not self.postgres.initialized:
            return  # no add-on server here: nothing to tell, and no bridge to make yet
        self._network()
        self.postgres.admit({a: s for a, s in addresses.items() if a not in redis_names})
        self.redis.admit({a: s for a, s in addresses.items() if a in redis_names})

    def ensure_running(self) -> None:
        """Start the cluster (if any Postgres add-on was ever made) and every Redis
        instance; at dynod's start, before dynos."""
        if not self.postgres.initialized and not self.redis.names():
            return
        self._network()
        if self.postgres.initialized:
            self.postgres.ensure_running()
        self.redis.ensure_running()
