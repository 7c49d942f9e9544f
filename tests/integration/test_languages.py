"""Languages beyond Python and Node.js, each pushed with git over ssh as a user would:
the build's Heroku-style output, the release, and the app answering through the router
with a page it computed; a second push with unchanged dependencies reuses the cache."""

from __future__ import annotations

import pytest

from tests.integration.test_builds import EXAMPLES, commit, current, push, setup_push, sh
from tests.integration.test_dynos import wait_for
from tests.sandbox.machine import Machine

pytestmark = [pytest.mark.integration, pytest.mark.network]


def page(m: Machine, app: str, path: str = "/") -> str:
    """The body the router returns for ``app`` (empty while it does not answer 200)."""
    out = m.exec(["curl", "-sS", "--max-time", "5", "-w", "\n%{http_code}",
                  "-H", f"Host: {app}.dynod.localhost", f"http://127.0.0.1{path}"],
                 check=False).stdout
    body, _, code = out.rpartition("\n")
    return body if code == "200" else ""


def test_go_modules_plain_and_vendored(stack_machine: Machine) -> None:
    m = stack_machine
    setup_push(m, "gohello", str(EXAMPLES / "go"))
    out = push(m, "gohello")
    for line in ("remote: -----> Go app detected",
                 "remote: -----> Detected go modules via go.mod",
                 "remote:        Detected Module Name: example.com/hello",
                 "remote: -----> Running: go install -v -tags heroku  example.com/hello",
                 "remote:        Created a Procfile with the following entries:",
                 "remote:        \t\tweb: bin/hello",
                 "remote:        Released v2"):
        assert line in out, out
    assert "Restoring cache" not in out, out
    wait_for("the Go page", lambda: "sum of squares to 100 is 338350" in page(m, "gohello"), 30)
    # The slug runs the binary; the toolchain is not needed at run time.
    run = sh(m, "dynoctl run -a gohello -- 'ls bin; command -v hello'")[1]
    assert "hello" in run and "/app/bin/hello" in run, run

    # A second push: the caches are reused, nothing is downloaded.
    commit(m, "gohello", "README", "again\n")
    out = push(m, "gohello")
    assert "remote: -----> Restoring cache" in out, out
    assert "go: downloading" not in out, out
    assert "remote:        Released v3" in out, out

    # A go line newer than the stack's toolchain: refused, the release keeps serving.
    commit(m, "gohello", "go.mod", "module example.com/hello\n\ngo 1.99\n")
    out = push(m, "gohello", ok=False)
    assert "go.mod asks for go 1.99, but the debian-13 stack has Go 1." in out, out
    assert "Lower the go line of go.mod to 1." in out and "dynoctl stacks:set NAME" in out, out
    assert current(m, "gohello")["version"] == 3
    assert "338350" in page(m, "gohello")

    # A vendored module: -mod=vendor, no module proxy, a binary in cmd/.
    setup_push(m, "govendor", str(EXAMPLES / "go-vendored"))
    out = push(m, "govendor")
    assert "Using vendored dependencies (vendor/modules.txt): -mod=vendor" in out, out
    assert "remote:        \t\tweb: bin/greeter" in out, out
    wait_for("the vendored page",
             lambda: "HELLO, VENDORED GO!" in page(m, "govendor", "/?name=go"), 30)
