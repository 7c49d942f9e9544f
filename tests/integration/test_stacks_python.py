"""The debian-14 stack (forky: Python 3.14) and dynos that run on their slug's stack
(issue 14): Heroku's python-getting-started (Django 6 on Python 3.14) pushed with git
over ssh is refused on debian-13 with the stack that has its Python named, the old
release serving on; after `stack:set debian-14` the next push runs on forky, and a
rollback goes back to trixie with its release.

The only module that builds debian-14 (about 2 minutes and 1.7 GB, cached after)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from tests.integration.conftest import _teardown, built_stack, stack_bind
from tests.integration.test_builds import EXAMPLES, commit, current, push, setup_push, sh
from tests.integration.test_dynos import diagnose, wait_for
from tests.integration.test_languages import page
from tests.sandbox.machine import Machine

pytestmark = [pytest.mark.integration, pytest.mark.network]

APP = "getting-started"


@pytest.fixture
def two_stacks_machine() -> Iterator[Machine]:
    """A machine whose dynod has debian-13 (the default) and debian-14 built."""
    m = Machine(binds=[stack_bind(built_stack()), stack_bind(built_stack("debian-14"))])
    m.boot()
    try:
        yield m
    finally:
        _teardown(m)


def serves(m: Machine, *parts: str) -> None:
    try:
        wait_for(f"the page with {parts}", lambda: all(p in page(m, APP) for p in parts), 60)
    except AssertionError:
        raise AssertionError(diagnose(m, APP) + page(m, APP)) from None


def run(m: Machine, command: str) -> str:
    """The last line a one-off dyno printed (after dynoctl's `Running ... up` line)."""
    return sh(m, f"dynoctl run -a {APP} -- {command} 2>&1")[1].splitlines()[-1]


def test_python_314_needs_debian_14_and_each_release_runs_on_its_stack(
        two_stacks_machine: Machine) -> None:
    m = two_stacks_machine
    out = sh(m, "dynoctl stacks")[1]
    # the recorded Python of each stack is the built one's (the buildpack names it)
    assert re.search(r"^\* debian-13  \(trixie, built, Python 3\.13\)$", out, re.M), out
    assert re.search(r"^  debian-14  \(forky, built, Python 3\.14\)$", out, re.M), out

    # The app on trixie first, asking for its Python.
    setup_push(m, APP, str(EXAMPLES / "python-getting-started"))
    commit(m, APP, ".python-version", "3.13\n")
    out = push(m, APP)
    assert "remote: -----> Building on the debian-13 stack" in out, out
    assert "remote: -----> Using Python 3.13 specified in .python-version" in out, out
    assert "remote: -----> $ python manage.py collectstatic --noinput" in out, out
    serves(m, "Getting started with Python 3.13.", "Django 6.", "on Debian 13.")

    # Python 3.14 is refused on trixie, naming the stack that has it; v2 keeps serving.
    commit(m, APP, ".python-version", "3.14\n")
    out = push(m, APP, ok=False)
    for line in (
            "remote:  !     Error: Python 3.14 (from .python-version) is not available on "
            "the debian-13 stack (it has Python 3.13).",
            f"remote:  !     The debian-14 stack has Python 3.14: dynoctl stack:set debian-14 "
            f"-a {APP}, then push again.",
            "remote:  !     Push failed"):
        assert line in out, out
    assert current(m, APP)["version"] == 2
    assert "Python 3.13." in page(m, APP)

    # Heroku's spelling. The running release stays on its own stack until the next build.
    out = sh(m, f"dynoctl stack:set debian-14 -a {APP} 2>&1")[1]
    assert out.startswith("Setting stack to debian-14... done\n"
                          f"You will need to redeploy ⬢ {APP} for the change to take "
                          "effect.\n"), out
    out = sh(m, f"dynoctl stack -a {APP}")[1]
    assert f"=== ⬢ {APP} Available Stacks" in out and "\n* debian-14  (Python 3.14)" in out, out
    assert "Python 3.13." in page(m, APP)
    assert run(m, "cat /etc/debian_version").startswith("13.")

    # The same commit pushed again builds on forky and runs there.
    out = push(m, APP)
    for line in ("remote: -----> Building on the debian-14 stack",
                 "remote: -----> Using Python 3.14 specified in .python-version",
                 "remote:        Released v3"):
        assert line in out, out
    serves(m, "Getting started with Python 3.14.", "Django 6.", "on Debian forky/sid")
    assert run(m, "cat /etc/debian_version") == "forky/sid"
    assert "Python 3.14." in run(m, "python --version")

    # A rollback to the release built on trixie runs on trixie again.
    sh(m, f"dynoctl rollback -a {APP} v2")
    serves(m, "Getting started with Python 3.13.", "on Debian 13.")
