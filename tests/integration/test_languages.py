"""Languages beyond Python and Node.js, each pushed with git over ssh as a user would:
the build's Heroku-style output, the release, and the app answering through the router
with a page it computed; a second push with unchanged dependencies reuses the cache."""

from __future__ import annotations

import re

import pytest

from tests.integration.test_builds import EXAMPLES, commit, current, push, setup_push, sh
from tests.integration.test_dynos import diagnose, wait_for
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
    # This machine has only the base stack: the first Go build makes the go layer.
    for line in ("remote: -----> Installing the go layer of debian-13 (Go: 1 package with apt)",
                 "remote: -----> Building on the debian-13 stack with the go layer",
                 "remote: -----> Go app detected",
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
    assert "Installing the go layer" not in out, out
    assert "+go    Go (for go; built)" in sh(m, "dynoctl stacks")[1]

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


@pytest.mark.layers("php")
def test_php_with_composer_and_a_front_controller(stack_machine: Machine) -> None:
    m = stack_machine
    setup_push(m, "php", str(EXAMPLES / "php"))
    out = push(m, "php")
    for line in ("remote: -----> PHP app detected",
                 "remote: -----> Installing dependencies...",
                 "remote:        Generating optimized autoload files",
                 "remote:        Released v2"):
        assert line in out, out
    assert re.search(r"remote:        Using the stack's PHP 8\.\d+\.\d+ \(composer\.json "
                     r"require\.php: >=8\.1\)", out), out
    # The front controller answers any path; a file under public/ is served as is.
    try:
        wait_for("the PHP page", lambda: "25 primes below 100" in page(m, "php", "/any/path"), 30)
    except AssertionError:
        raise AssertionError(diagnose(m, "php") + page(m, "php", "/any/path")) from None
    assert "at /any/path" in page(m, "php", "/any/path")
    assert page(m, "php", "/static.txt") == "a static file, served by nginx\n"
    assert "https: no" in page(m, "php", "/")
    # PHP-FPM's workers are sized from the dyno's memory, as Heroku's are.
    logs = sh(m, "journalctl DYNOD_APP=php -o cat --no-pager")[1]
    assert re.search(r"heroku-php-nginx: 4 PHP-FPM workers for 512 MB", logs), logs
    # The runtime is there for one-off dynos too.
    assert re.search(r"PHP 8\.\d+\.\d+ \(cli\)", sh(m, "dynoctl run -a php -- php -v")[1])

    # A second push with the same composer.lock reuses Composer's cache.
    commit(m, "php", "README", "again\n")
    out = push(m, "php")
    assert "remote: -----> Restoring cache" in out, out
    assert "Downloading" not in out, out
    assert "remote:        Released v3" in out, out

    # A PHP version the stack lacks; dependencies without composer.lock: refused, the
    # release keeps serving.
    commit(m, "php", "composer.json", '{"require": {"php": "^7.4"}}\n')
    out = push(m, "php", ok=False)
    assert 'composer.json requires php "^7.4", but the debian-13 stack has PHP 8.' in out, out
    commit(m, "php", "composer.json", '{"require": {"php": ">=8.1", "monolog/monolog": "^3"}}\n')
    sh(m, "cd /tmp/php && git rm -q composer.lock && "
          "git -c user.email=t@e -c user.name=t commit -qm 'no lock'")
    out = push(m, "php", ok=False)
    assert "No composer.lock file present. Run 'composer update'" in out, out
    assert current(m, "php")["version"] == 3
    assert "25 primes below 100" in page(m, "php", "/")

    # The workers follow the dyno's size (read from its own cgroup, not a default).
    sh(m, "dynoctl ps:type web=standard-2x -a php")
    wait_for("8 workers on a Standard-2X", lambda: re.search(
        r"heroku-php-nginx: 8 PHP-FPM workers for 1024 MB",
        sh(m, "journalctl DYNOD_APP=php -o cat --no-pager")[1]), 60)
    wait_for("the PHP page on Standard-2X", lambda: "25 primes" in page(m, "php", "/"), 60)


def test_django_and_node_apps_without_a_procfile_get_herokus_defaults(
        stack_machine: Machine) -> None:
    m = stack_machine
    # Django without a Procfile: static files collected, the default web process, and
    # a warning to declare one.
    setup_push(m, "django", str(EXAMPLES / "django"))
    out = push(m, "django")
    for line in ("remote: -----> $ python manage.py collectstatic --noinput",
                 "remote:  !     This Django app has no Procfile: its web process is the "
                 "default one",
                 "remote:  !     ('python manage.py runserver 0.0.0.0:$PORT --noreload').",
                 "remote:        Released v2"):
        assert line in out, out
    assert re.search(r"Default types for buildpack\s+-> web", out), out
    assert re.search(r"remote:        1 static file copied to '/\S+/staticfiles'", out), out
    wait_for("the Django page", lambda: "Hello from Django" in page(m, "django"), 60)
    assert re.search(r"Hello from Django \d+\.\d+(\.\d+)?: 234168\n", page(m, "django"))

    # Node.js with only "main": node lib/app.js.
    setup_push(m, "nodemain", str(EXAMPLES / "node-main"))
    out = push(m, "nodemain")
    assert "remote: -----> Node.js app detected" in out, out
    assert re.search(r"Default types for buildpack\s+-> web", out), out
    wait_for("the Node.js page", lambda: "fib(20) = 6765" in page(m, "nodemain"), 30)
    assert "node lib/app.js" in sh(m, "dynoctl ps -a nodemain")[1]


def test_an_aptfile_package_used_at_run_time(stack_machine: Machine) -> None:
    m = stack_machine
    setup_push(m, "aptapp", str(EXAMPLES / "aptfile"))
    out = push(m, "aptapp")
    # The apt buildpack runs first, then the one that detects next (here: procfile).
    for line in ("remote: -----> Apt app detected",
                 "remote: -----> Detected Aptfile: 1 package(s): jq",
                 "remote: -----> Procfile app detected",
                 "remote:        Released v2"):
        assert line in out, out
    assert re.search(r"remote: -----> Installing jq_[^ ]+\.deb", out), out
    assert re.search(r"remote: -----> Installing libjq1_[^ ]+\.deb", out), out
    wait_for("the jq page",
             lambda: "jq at /app/.apt/usr/bin/jq says the sum of squares is 30" in
             page(m, "aptapp"), 30)
    # A one-off finds it too; the stack itself has no jq.
    assert "/app/.apt/usr/bin/jq" in sh(m, "dynoctl run -a aptapp -- 'command -v jq'")[1]
    assert sh(m, "test -e /var/lib/dynod/stacks/debian-13/usr/bin/jq", ok=False)[0] != 0

    # Unchanged Aptfile: nothing downloaded.
    commit(m, "aptapp", "README", "again\n")
    out = push(m, "aptapp")
    assert "remote: -----> Restoring cache" in out, out
    assert "Updating apt caches" not in out and "Fetching .debs" not in out, out
    assert "remote:        Released v3" in out, out

    # A package Debian does not have: refused, the release keeps serving.
    commit(m, "aptapp", "Aptfile", "jq\nno-such-package-dynod\n")
    out = push(m, "aptapp", ok=False)
    assert "apt could not download jq no-such-package-dynod" in out, out
    assert current(m, "aptapp")["version"] == 3
    assert "sum of squares is 30" in page(m, "aptapp")
