"""The Builder's own state and what a push prints after its release, without systemd:
a fake store, fake watchers in place of the runtime's supervisor and release phase."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest

from dynod.build.pipeline import Builder
from dynod.build.watchers import ReleasePhaseWatcher, RolloutWatcher
from dynod.errors import FailedPrecondition
from dynod.model.apps import App
from dynod.model.builds import BuildSettings
from dynod.model.events import EventBus
from dynod.model.releases import Release, ReleaseStatus
from dynod.settings import Settings
from dynod.store.protocol import Store


class _Tx:
    def __init__(self, releases: dict[int, Release]) -> None:
        self.releases = releases

    def app(self, name: str) -> App | None:
        return cast(App, object()) if name in ("shop", "blog") else None

    def app_build_settings(self, app: str) -> BuildSettings:
        return BuildSettings("debian-13", ())

    def app_uid(self, app: str) -> int:
        return 70000

    def latest_succeeded_release(self, app: str) -> Release:
        return _release(app, 1, ReleaseStatus.SUCCEEDED)

    def release(self, app: str, version: int) -> Release | None:
        return self.releases.get(version)


class _Store:
    def __init__(self, releases: dict[int, Release] | None = None) -> None:
        self.tx = _Tx(releases or {})

    @contextmanager
    def read(self) -> Iterator[_Tx]:
        yield self.tx


def _release(app: str, version: int, status: ReleaseStatus) -> Release:
    return Release(app=app, version=version, description=f"Deploy v{version}", user="u",
                   created_at=datetime.now(UTC), slug_id="s", status=status)


def _builder(store: _Store, **watchers: Any) -> Builder:
    settings = Settings(state_dir=Path("/nonexistent/state"))
    return Builder(cast(Store, store), settings, EventBus(), **watchers)


class _Rollout:
    """The supervisor's verdict; a failed rollout marks the release failed with
    ``cause`` in ``store``, as the runtime does ("": a dynod that kept no cause)."""

    def __init__(self, verdict: bool | None, store: _Store | None = None,
                 cause: str = "") -> None:
        self.verdict = verdict
        self.store = store
        self.cause = cause
        self.calls: list[tuple[str, int]] = []

    def follow_rollout(self, app: str, version: int, timeout: float = 150.0) -> bool | None:
        self.calls.append((app, version))
        if self.verdict is False and self.store is not None:
            self.store.tx.releases[version] = replace(
                _release(app, version, ReleaseStatus.FAILED), failure=self.cause)
        return self.verdict


class _Phase:
    """Runs the release command: prints its lines and marks the release ``outcome``."""

    def __init__(self, store: _Store, outcome: ReleaseStatus) -> None:
        self.store = store
        self.outcome = outcome

    def follow_lines(self, app: str, version: int, on_line: Callable[[str], None],
                     indent: str = "") -> ReleaseStatus:
        on_line("Running release command...")
        self.store.tx.releases[version] = _release(app, version, self.outcome)
        return self.outcome


def test_the_runtime_satisfies_the_watchers_by_shape() -> None:
    rollout: RolloutWatcher = _Rollout(True)
    phase: ReleasePhaseWatcher = _Phase(_Store(), ReleaseStatus.SUCCEEDED)
    assert rollout.follow_rollout("shop", 2) is True
    assert phase.follow_lines("shop", 2, lambda _: None) is ReleaseStatus.SUCCEEDED


@pytest.mark.parametrize(("verdict", "cause", "last"), [
    # Heroku's "Verifying deploy... done." only once the new release serves.
    (True, "", ["       done.", "Verifying deploy... done."]),
    (None, "", ["       still rolling out; see dynoctl ps"]),
    # The cause the web dynos showed, not a guess.
    (False, "could not start: No space left on device unpacking slug sha256:x",
     [" !     Release v2 failed: its web dynos did not come up: could not start: No space "
      "left on device unpacking slug sha256:x; the previous release keeps serving. See "
      "dynoctl logs"]),
    (False, "", [" !     Release v2 failed: its web dynos did not come up: crashed at boot "
                 "or R10; the previous release keeps serving. See dynoctl logs"]),
])
def test_a_push_verifies_the_deploy(verdict: bool | None, cause: str, last: list[str]) -> None:
    store = _Store({2: _release("shop", 2, ReleaseStatus.SUCCEEDED)})
    rollout = _Rollout(verdict, store, cause)
    lines: list[str] = []
    _builder(store, rollout=rollout)._report_release(
        "shop", 2, ReleaseStatus.SUCCEEDED, lines.append)
    assert lines == ["       Released v2", "       https://shop.dynod.localhost/ deployed to dynod",
                     "", "-----> Verifying deploy...", *last]
    assert rollout.calls == [("shop", 2)]


def test_without_dynos_a_push_says_there_is_no_release_phase_and_does_not_wait() -> None:
    store = _Store({2: _release("shop", 2, ReleaseStatus.PENDING)})
    lines: list[str] = []
    _builder(store)._report_release("shop", 2, ReleaseStatus.PENDING, lines.append)
    assert lines == [
        " !     Release command declared: this new release will not be available until the "
        "command succeeds.",
        "       Released v2", "       https://shop.dynod.localhost/ deployed to dynod", "",
        "Release command declared, but this dynod runs no release phase",
    ]


@pytest.mark.parametrize("outcome", [ReleaseStatus.SUCCEEDED, ReleaseStatus.FAILED])
def test_a_release_command_is_followed_then_the_rollout_only_if_it_succeeded(
        outcome: ReleaseStatus) -> None:
    store = _Store({2: _release("shop", 2, ReleaseStatus.PENDING)})
    rollout = _Rollout(True)
    lines: list[str] = []
    _builder(store, rollout=rollout, release_phase=_Phase(store, outcome))._report_release(
        "shop", 2, ReleaseStatus.PENDING, lines.append)
    assert lines[4] == "Running release command..."
    if outcome is ReleaseStatus.SUCCEEDED:
        assert lines[5:] == ["-----> Verifying deploy...", "       done.",
                             "Verifying deploy... done."]
        assert rollout.calls == [("shop", 2)]
    else:
        assert lines[5:] == []
        assert rollout.calls == []


def test_one_build_per_app_at_a_time_per_builder() -> None:
    builder = _builder(_Store())
    started, release = threading.Event(), threading.Event()

    def slow_build(app: str, **_: object) -> Any:  # the Build, here just its app
        if app == "shop":  # the first build: runs until the test lets it end
            started.set()
            release.wait(10)
        return app

    builder._build = slow_build  # type: ignore[method-assign]
    first = threading.Thread(target=builder.run_build, args=("shop",),
                             kwargs={"user": "u", "source": [], "on_line": print})
    first.start()
    assert started.wait(10)
    try:
        with pytest.raises(FailedPrecondition, match='a build of app "shop" is running'):
            builder.run_build("shop", user="u", source=[], on_line=print)
        # Another app builds meanwhile, and so does the same app on another builder
        # (the state is the builder's, not the process's).
        assert cast(str, builder.run_build("blog", user="u", source=[], on_line=print)) == "blog"
        other = _builder(_Store())
        other._build = lambda app, **_: app  # type: ignore[method-assign]
        assert cast(str, other.run_build("shop", user="u", source=[], on_line=print)) == "shop"
    finally:
        release.set()
        first.join(10)
    # Once the first build ends the app may build again.
    builder._build = lambda app, **_: app  # type: ignore[method-assign]
    assert cast(str, builder.run_build("shop", user="u", source=[], on_line=print)) == "shop"
