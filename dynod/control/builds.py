"""Build records and an app's build settings (stack, buildpacks).

The build pipeline (``dynod.build.pipeline``) writes a build's record when it starts and
when it ends; these are the reads the API serves, and the settings an app's owner sets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from dynod.errors import InvalidArgument, NotFound
from dynod.model.builds import Build, BuildSettings, validate_buildpack
from dynod.store import reads
from dynod.store.protocol import Store, Tx


def list_builds(store: Store, app: str, limit: int | None = None) -> list[Build]:
    """Newest first. Raises NotFound for the app."""
    with store.read() as tx:
        reads.require_app(tx, app)
        return tx.builds(app, limit)


def get_build(store: Store, app: str, build_id: str | None = None) -> Build:
    """Build ``build_id`` (a prefix of 8+ characters will do), or the latest one.
    Raises NotFound."""
    with store.read() as tx:
        reads.require_app(tx, app)
        if build_id:
            build = tx.build(app, build_id)
            if build is not None:
                return build
            matches = [b for b in tx.builds(app, None)
                       if len(build_id) >= 8 and b.id.startswith(build_id)]
            if len(matches) == 1:
                return matches[0]
            raise NotFound(f'app "{app}" has no build {build_id!r}; list them with '
                           "`dynoctl builds`")
        latest = tx.builds(app, 1)
        if not latest:
            raise NotFound(f'app "{app}" has no builds yet; push to it with git, or '
                           "`dynoctl deploy`")
        return latest[0]


def require_settings(tx: Tx, app: str) -> BuildSettings:
    """The app's stack and buildpacks in this transaction. Raises NotFound."""
    reads.require_app(tx, app)
    got = tx.app_build_settings(app)
    assert got is not None  # the app exists
    return got


def get_settings(store: Store, app: str) -> BuildSettings:
    """Raises NotFound."""
    with store.read() as tx:
        return require_settings(tx, app)


def set_buildpacks(store: Store, app: str, urls: Sequence[str]) -> BuildSettings:
    """Replace the app's buildpack list (empty: detection). Raises NotFound,
    InvalidArgument."""
    checked = tuple(validate_buildpack(u) for u in urls)
    if len(set(checked)) != len(checked):
        raise InvalidArgument("a buildpack is listed twice; list each once")
    with store.write() as tx:
        settings = replace(require_settings(tx, app), buildpacks=checked)
        tx.set_app_build_settings(app, settings)
    return settings


def set_stack(store: Store, app: str, stack: str) -> BuildSettings:
    """Build the app's next slugs on ``stack``; the caller checks that the stack exists
    (stacks are the build pipeline's, ``dynod.build.stacks.get_stack``). Raises
    NotFound (app)."""
    with store.write() as tx:
        settings = replace(require_settings(tx, app), stack=stack)
        tx.set_app_build_settings(app, settings)
    return settings
