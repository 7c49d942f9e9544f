# dynod: the README's two commands are `make up` and `make test`.
SHELL := /bin/bash
PYTEST_WORKERS ?= 4

.PHONY: up test prereqs unit integration lint down clean deb

prereqs:
	@.ci/prereqs
	@mkdir -p .state

# Bring dynod up with its embedded defaults and show it answering. With systemd as PID 1,
# dynod is installed on this host; otherwise it runs in a sandbox machine whose state
# persists in .state/machine (so `make up` again is a reboot of the same machine).
up: prereqs
	@.ci/up

# The whole suite: linters, unit tests, and integration tests in sandbox machines; then
# a check that what the suite may create on the host (netns, overlay mounts, cgroups,
# processes in its cgroups or marked DYNOD_SUITE, links, iptables rules of its names) is
# as it was before it; other processes on the host meanwhile are not its business.
test: prereqs
	@tests/sandbox/run --purge >/dev/null
	@tests/sandbox/hostcheck save .state/hostcheck.json
	@export DYNOD_SUITE=$$$$; rc=0; .venv/bin/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile -rfE --durations=25 tests || rc=$$?; \
	  tests/sandbox/hostcheck compare .state/hostcheck.json || rc=$${rc/#0/1}; exit $$rc

unit: prereqs
	@.venv/bin/python -m pytest -q tests/unit

integration: prereqs
	@.venv/bin/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile -m integration tests

lint: prereqs
	@.venv/bin/python -m pytest -q tests/unit/test_lint.py

# The Debian package for this host's release: dist/dynod_<version>_<arch>.deb. As root it
# installs what it needs first (git, dpkg-dev, packaging/debian/control's Build-Depends);
# lintian runs if present.
# DYNOD_DEB_VERSION=... overrides the version. Skipped when dist/ has it from this tree.
deb:
	@packaging/build-deb dist

clean:
	tests/sandbox/run --purge
	rm -rf .state build dist *.egg-info
