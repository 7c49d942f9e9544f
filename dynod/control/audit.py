"""The ``app[api]`` lines of an app's log: what the API changed, by whom.

One place writes them, from the control plane's events (the composition root subscribes
:class:`Audit` to :data:`Audit.EVENTS`), so a change reads the same whether it came
from ``dynoctl``, a git push or a rollback. Heroku's lines (logging article):

    app[api]: Set FOO, BAR config vars by user jane
    app[api]: Release v5 created by user jane
    app[api]: Deploy 1a2b3c4d by user jane
    app[api]: Rollback to v3 by user jane
    app[api]: Scaled to web@3:Standard-1X worker@1:Standard-1X by user jane

and the platform's verdicts, published by the build pipeline and the runtime:
``Build started by user jane``, ``Build succeeded``/``Build failed``, ``Running release
v5 commands by user jane``, ``Release v5 failed: ...``.
"""

from __future__ import annotations

from collections.abc import Callable

from dynod.model import sizes
from dynod.model.events import (
    AddonsChanged,
    AppEvent,
    BackupFailed,
    BuildFinished,
    BuildStarted,
    ConfigChanged,
    FormationChanged,
    ReleaseCreated,
    ReleaseFailed,
    ReleasePhaseStarted,
    RolledBack,
)
from dynod.model.releases import Release
from dynod.system import journal


def release_lines(release: Release) -> list[str]:
    """Heroku's pair for a new release: its description (``Set FOO config vars``,
    ``Deploy 1a2b3c4d``, ``Rollback to v3``) and ``Release v5 created``, each by user."""
    return [f"{release.description} by user {release.user}",
            f"Release v{release.version} created by user {release.user}"]


def scale_line(event: FormationChanged) -> str:
    """``Scaled to web@3:Standard-1X worker@0:Standard-1X by user jane``."""
    scaled = " ".join(f"{p.type}@{p.quantity}:{sizes.parse_size(p.size).label}"
                      for p in event.processes)
    return f"Scaled to {scaled} by user {event.user}"


def lines_of(event: AppEvent) -> list[str]:
    """The ``app[api]`` lines ``event`` makes (none for a resize, as before)."""
    if isinstance(event, ConfigChanged | ReleaseCreated | RolledBack):
        return release_lines(event.release)
    if isinstance(event, AddonsChanged):
        made = [] if event.release is None else release_lines(event.release)
        return made + [f"{line} by user {event.user}" for line in event.lines]
    if isinstance(event, FormationChanged) and event.scaled:
        return [scale_line(event)]
    if isinstance(event, BuildStarted):
        return [f"Build started by user {event.user}"]
    if isinstance(event, BuildFinished):
        return ["Build succeeded" if event.succeeded else "Build failed"]
    if isinstance(event, ReleasePhaseStarted):
        return [f"Running release v{event.version} commands by user {event.user}"]
    if isinstance(event, ReleaseFailed | BackupFailed):
        return [event.message]
    return []


class Audit:
    """Writes each event's lines with ``write(app, message)`` (journald's
    ``api_event`` in the daemon, a list in tests)."""

    EVENTS: tuple[type[AppEvent], ...] = (ConfigChanged, ReleaseCreated, RolledBack,
                                          FormationChanged, BuildStarted, BuildFinished,
                                          ReleasePhaseStarted, ReleaseFailed,
                                          AddonsChanged, BackupFailed)

    def __init__(self, write: Callable[[str, str], None] = journal.api_event) -> None:
        self.write = write

    def __call__(self, event: AppEvent) -> None:
        for line in lines_of(event):
            self.write(event.app, line)
