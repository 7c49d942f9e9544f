"""After a dynod restart: the dynos already running are adopted, never restarted.

A dyno unit outlives dynod (it is systemd's, not dynod's child), and its ``dyno.json``
says what it runs; so at start the supervisor tracks every formation unit it finds as
it is (up if a web dyno answers, else starting), stops a unit without ``dyno.json``,
and removes dyno directories and network namespaces that no unit owns. One-off units
are ``OneOffs.recover``'s. Slug trees of deleted apps are collected here too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from dynod.model.dynos import ONE_OFF_TYPES, DynoRef, DynoState, parse_key
from dynod.runtime import plan
from dynod.runtime.dynos import Host, read_meta, ref_of
from dynod.runtime.executor import STOP_TIMEOUT
from dynod.runtime.plan import Dyno
from dynod.settings import Settings
from dynod.slug import trees
from dynod.store.protocol import Store
from dynod.system import mounts, netns, units

log = logging.getLogger(__name__)


def adopt(settings: Settings, host: Callable[[], Host], listening: Callable[[str, int], bool],
          now: float, monotonic: float) -> dict[DynoRef, Dyno]:
    """The formation's running dynos as records (never restarting one); units without
    a dyno.json are stopped; dyno directories and netns no unit owns are removed.

    ``host`` is asked for only when there is something to tear down: the dyno host
    reads the addresses in use when it is made, so making it before the first dyno
    starts would miss the network of a build running by then."""
    found: dict[DynoRef, Dyno] = {}
    owned: set[str] = set()
    for unit in units.list_dynos():
        ref = ref_of(unit.dyno)
        owned.add(ref.key)
        if ref.process_type in ONE_OFF_TYPES:
            continue  # one-off dynos (dynoctl run, release phase) are oneoff.py's
        meta = read_meta(settings, ref)
        if meta is None:
            log.warning("unit %s has no dyno.json; stopping it", unit.name)
            units.stop_dyno(unit.name)
            units.wait_gone(unit.name, timeout=STOP_TIMEOUT + 5)
            host().teardown(ref)
            continue
        status = units.dyno_status(unit.name)
        since = status.main_started_usec / 1e6 if status and status.main_started_usec else now
        # The daily cycle counts the dyno's uptime from its start, on the monotonic clock
        # (CLOCK_MONOTONIC is the machine's: dynod's restart does not reset it).
        started = (status.main_started_monotonic_usec / 1e6
                   if status and status.main_started_monotonic_usec else monotonic)
        up = listening(meta.address, meta.port) if ref.web else True
        found[ref] = Dyno(ref, meta, DynoState.UP if up else DynoState.STARTING, since,
                          launched=monotonic, cycle_at=plan.cycle_due(started))
        log.info("adopted %s (%s)", unit.name, "up" if up else "starting")
    orphans = set(mounts.list_dyno_dirs(settings.runtime_dir))
    orphans |= set(netns.list_dyno_netns())
    for key in sorted(orphans - owned):
        orphan = parse_key(key)
        if orphan is None:
            netns.remove_netns(netns.NETNS_PREFIX + key)
            continue
        log.info("removing leftovers of %s", key)
        host().teardown(orphan)
    return found


def collect_trees(store: Store, settings: Settings) -> None:
    """Remove slug trees of app uids that no longer exist (deleted apps); a tree of
    a live app stays (a rollback may use it again)."""
    with store.read() as tx:
        uids = {tx.app_uid(a.name) for a in tx.apps()}
    for uid in {tree.uid for tree in trees.list_trees(settings)} - uids:
        for tree in trees.list_trees(settings):
            if tree.uid == uid and not mounts.is_overlay_lower(tree.path):
                log.info("removing slug tree %s (its app is gone)", tree.path)
                trees.remove(tree.path)
