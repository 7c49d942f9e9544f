"""Hostile requests against the real daemon: tests/hostile_api.py runs inside a sandbox
machine against /run/dynod/dynod.sock (through the front socket and the gate, as any
client), every RPC of every service, checking each refused call against the state
database; then dynod's journal must hold no traceback and dynod must still answer.

CI: 50 examples per service (DYNOD_FUZZ_EXAMPLES raises it; the issue's run used 2,000).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest

from tests.hostile_api import services
from tests.integration.conftest import _teardown
from tests.sandbox.machine import PROJECT, Machine

pytestmark = pytest.mark.integration

VENV_PY = str(PROJECT / ".venv/bin/python")
EXAMPLES = int(os.environ.get("DYNOD_FUZZ_EXAMPLES", "50"))


@pytest.fixture(scope="module")
def offline_machine() -> Iterator[Machine]:
    """A machine without egress: a fuzzed SetAcm would otherwise have dynod order
    certificates from Let's Encrypt for made-up names."""
    m = Machine(egress=False)
    m.boot()
    try:
        yield m
    finally:
        _teardown(m)


def test_every_rpc_survives_hostile_requests(offline_machine: Machine) -> None:
    shared_machine = offline_machine
    timeout = 600 + EXAMPLES * 19 * 0.5
    proc = shared_machine.run(
        [VENV_PY, "-m", "tests.hostile_api", "--examples", str(EXAMPLES)],
        timeout=timeout, properties=["MemoryMax=2G"])
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout)
    print(proc.stderr)  # examples and seconds per service, for the record (pytest -s)
    assert result["examples"] == {s: EXAMPLES for s in services()}
    assert not result["violations"], "\n".join(result["violations"])
    journal = shared_machine.exec(["journalctl", "-u", "dynod", "-o", "cat", "--no-pager"]
                                  ).stdout
    assert "Traceback" not in journal, journal[journal.index("Traceback") - 2000:][:6000]
    assert "internal error" not in journal
    assert shared_machine.run(["dynoctl", "version"]).returncode == 0
