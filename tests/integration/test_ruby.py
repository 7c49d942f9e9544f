"""Ruby apps pushed with git over ssh as a user would: Heroku's build output, the gems
installed from the app's vendor/cache (this machine cannot reach rubygems.org; the gems
were built from Debian's packages, tests/integration/debian_gems.rb), the page through
the router, the gem cache reused by the next push, and the refused builds (no
Gemfile.lock, one that is not UTF-8, one Bundler refuses, a Ruby the stack lacks) with the
previous release still serving."""

from __future__ import annotations

import re
import time

import pytest

from tests.integration.test_builds import EXAMPLES, commit, current, push, setup_push, sh
from tests.integration.test_dynos import diagnose, wait_for
from tests.integration.test_languages import page
from tests.sandbox.machine import Machine

pytestmark = [pytest.mark.integration, pytest.mark.network, pytest.mark.layers("ruby")]

INSTALLED = re.compile(r"^remote:        Installing [\w-]+ \d", re.MULTILINE)


def test_sinatra_on_puma(stack_machine: Machine) -> None:
    m = stack_machine
    setup_push(m, "sinatra", str(EXAMPLES / "ruby"))
    t0 = time.monotonic()
    out = push(m, "sinatra")
    cold = time.monotonic() - t0
    for line in ("remote: -----> Ruby app detected",
                 "remote: -----> Compiling Ruby/Rack",
                 "remote: -----> Using Ruby version: ruby-3.3.",
                 "remote: -----> Installing dependencies using bundler 2.",
                 "remote:        Installing puma 6.6.0 (x86_64-linux)",
                 "remote:        Installing sinatra 4.1.1",
                 "remote:        Gems in the groups 'development' and 'test' were not installed.",
                 "remote:        Cleaning up the bundler cache.",
                 "remote:        Default types for buildpack -> console, rake, web",
                 "remote:        Released v2"):
        assert line in out, out
    assert "Restoring cache" not in out, out
    assert "rack-test" not in "\n".join(INSTALLED.findall(out)), out
    # No Procfile: Heroku's default web for a Rack app, rackup on $PORT (Puma).
    try:
        wait_for("the Sinatra page",
                 lambda: "25 primes below 100, the largest 97" in page(m, "sinatra"), 60)
    except AssertionError:
        raise AssertionError(diagnose(m, "sinatra")) from None
    body = page(m, "sinatra")
    assert re.match(r"Hello from Sinatra 4\.1\.1 on Ruby 3\.3\.\d+ \(Puma 6\.6\.0\)", body), body
    assert page(m, "sinatra", "/hello/dynod") == "Hello, Dynod!\n"
    # The stack's Ruby in a one-off dyno, and the app's gems through Bundler.
    run = sh(m, "dynoctl run -a sinatra -- ruby -v")[1]
    assert re.search(r"ruby 3\.3\.\d+", run), run
    run = sh(m, "dynoctl run -a sinatra -- bundle exec ruby -e 'require \"sinatra/base\"; "
                "puts Sinatra::VERSION, ENV[\"RACK_ENV\"]'")[1]
    assert "4.1.1\nproduction" in run, run

    # A second push with the same Gemfile.lock: vendor/bundle from the cache, nothing new.
    commit(m, "sinatra", "README", "again\n")
    t0 = time.monotonic()
    out = push(m, "sinatra")
    warm = time.monotonic() - t0
    assert "remote: -----> Restoring cache" in out, out
    assert not INSTALLED.findall(out), out
    assert "remote:        Bundle complete! 4 Gemfile dependencies, 14 gems now installed." in out
    assert "remote:        Released v3" in out, out
    print(f"\nruby sinatra: first push {cold:.1f} s, second push {warm:.1f} s")

    # A Ruby the stack lacks: refused naming the stack's, the release keeps serving.
    sh(m, "cd /tmp/sinatra && sed -i 's/^ruby .*/ruby \"~> 3.1.0\"/' Gemfile && "
          "git -c user.email=t@e -c user.name=t commit -qam 'ruby 3.1'")
    out = push(m, "sinatra", ok=False)
    assert "Gemfile asks for ruby ~> 3.1.0, but the debian-13 stack has Ruby 3.3." in out, out
    assert "dynoctl stacks:set NAME" in out, out
    sh(m, "cd /tmp/sinatra && git revert --no-edit HEAD >/dev/null && "
          "printf '3.1.4\\n' > .ruby-version && sed -i '/^ruby /d' Gemfile && "
          "git add -A && git -c user.email=t@e -c user.name=t commit -qm '.ruby-version'")
    out = push(m, "sinatra", ok=False)
    assert ".ruby-version asks for ruby 3.1.4, but the debian-13 stack has Ruby 3.3." in out, out

    # A Gemfile.lock that is not UTF-8: the stack's `bundle` would print RubyGems'
    # backtrace (bundler_version_finder.rb: invalid byte sequence in UTF-8).
    lines = len((EXAMPLES / "ruby/Gemfile.lock").read_text().splitlines())
    sh(m, "cd /tmp/sinatra && git rm -q .ruby-version && printf 'caf\\351\\n' >> Gemfile.lock && "
          "git -c user.email=t@e -c user.name=t commit -qam 'latin-1'")
    out = push(m, "sinatra", ok=False)
    assert (f"remote:  !     Gemfile.lock is not UTF-8 text (line {lines + 1}); regenerate "
            "it with bundle lock, commit it and push again") in out, out
    assert ".rb:" not in out, out
    # One Bundler reads but refuses: no PLATFORMS (in deployment mode, as on Heroku).
    sh(m, "cd /tmp/sinatra && git checkout -q HEAD~1 -- Gemfile.lock && "
          "sed -i '/^PLATFORMS/,/^$/d' Gemfile.lock && "
          "git -c user.email=t@e -c user.name=t commit -qam 'no platforms'")
    out = push(m, "sinatra", ok=False)
    assert "remote:        Your bundle only supports platforms [] " in out, out
    assert ("remote:  !     Gemfile.lock does not fit the Gemfile, or Bundler cannot read it "
            "(bundle install exit 16); see its output above.") in out, out
    assert "remote:  !     Run bundle install (or bundle lock) where the Gemfile is" in out, out

    # No Gemfile.lock: Heroku's error, naming bundle lock.
    sh(m, "cd /tmp/sinatra && git rm -q Gemfile.lock && "
          "git -c user.email=t@e -c user.name=t commit -qm 'no lock'")
    out = push(m, "sinatra", ok=False)
    assert "Gemfile.lock required. Please check it in." in out, out
    assert "Run 'bundle lock'" in out, out
    assert current(m, "sinatra")["version"] == 3
    assert "25 primes below 100" in page(m, "sinatra")


def test_rails_with_assets_and_a_release_phase_migration(stack_machine: Machine) -> None:
    m = stack_machine
    setup_push(m, "rails", str(EXAMPLES / "rails"))
    t0 = time.monotonic()
    out = push(m, "rails")
    cold = time.monotonic() - t0
    for line in ("remote: -----> Ruby app detected",
                 "remote: -----> Compiling Ruby/Rails",
                 "remote:        Installing railties 7.2.2.2",
                 "remote:        Installing nokogiri 1.18.2 (x86_64-linux)",
                 "remote: -----> Detecting rails configuration (Rails 7.2.2.2)",
                 "remote: -----> Preparing app for Rails asset pipeline",
                 "remote:        Running: rake assets:precompile",
                 "remote:        Procfile declares types     -> release",
                 "remote:        Default types for buildpack -> console, rake, web"):
        assert line in out, out
    assert "remote:        Asset precompilation completed" in out, out
    # The release phase: bin/rails db:migrate against SQLite, before the release is live.
    assert re.search(r"remote: == 20250101000000 CreateVisits: migrated", out), out
    assert "remote: Waiting for release.... done." in out, out
    # Heroku's default Rails web, bin/rails server in production, serving the
    # precompiled stylesheet itself (RAILS_SERVE_STATIC_FILES).
    try:
        wait_for("the Rails page", lambda: "6 * 7 = 42" in page(m, "rails"), 90)
    except AssertionError:
        raise AssertionError(diagnose(m, "rails")) from None
    body = page(m, "rails")
    assert re.match(r"Rails 7\.2\.2\.2 on Ruby 3\.3\.\d+ \(production\): SQLite 3\.\d+", body), body
    stylesheet = re.search(r"stylesheet (/assets/application-[0-9a-f]{8}\.css)", body)
    assert stylesheet, body
    assert "font-family" in page(m, "rails", stylesheet.group(1))
    env = sh(m, "dynoctl run -a rails -- 'echo $RAILS_ENV $RACK_ENV $RAILS_LOG_TO_STDOUT "
                "$RAILS_SERVE_STATIC_FILES ${#SECRET_KEY_BASE}'")[1]
    assert "production production enabled enabled 128" in env, env
    # Config vars win over the buildpack's defaults.
    sh(m, "dynoctl config:set -a rails RAILS_LOG_TO_STDOUT=no >/dev/null")
    # (the new release goes live once its release phase has migrated again)
    wait_for("the config var in a one-off dyno", lambda: "logs:no" in sh(
        m, "dynoctl run -a rails -- 'echo logs:$RAILS_LOG_TO_STDOUT'")[1], 60)

    commit(m, "rails", "README", "again\n")
    t0 = time.monotonic()
    out = push(m, "rails")
    warm = time.monotonic() - t0
    assert "remote: -----> Restoring cache" in out, out
    assert not INSTALLED.findall(out), out
    print(f"\nruby rails: first push {cold:.1f} s, second push {warm:.1f} s")
