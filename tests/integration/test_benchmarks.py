"""Benchmarks are not tests; this only checks that their code runs, on a tiny size."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.sandbox.machine import PROJECT

pytestmark = pytest.mark.integration


def test_benchmarks_run_and_report_baselines(tmp_path: Path) -> None:
    proc = subprocess.run([str(PROJECT / "benchmarks/run"), "--scale", "0.01", "--only",
                           "sandbox_boot,api", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "results.json").read_text())
    assert result["machine"]["cores"]
    names = [f["name"] for f in result["figures"]]
    assert "sandbox boot to running, dynod READY" in names
    assert any(n.startswith("API config:set") for n in names)
    for figure in result["figures"]:
        assert figure["baseline"]["n"] >= 1 and figure["value"]["median"] > 0
        assert figure["ratio"] > 0
    assert "sandbox boot to running" in (tmp_path / "results.txt").read_text()


def test_the_failover_benchmark_runs_and_reports_the_lease(tmp_path: Path) -> None:
    """Its own test (a cluster of three machines, one round): it runs beside the others
    under pytest -n 4."""
    proc = subprocess.run([str(PROJECT / "benchmarks/run"), "--scale", "0.01", "--only",
                           "failover", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = {f["name"]: f for f in json.loads(
        (tmp_path / "results.json").read_text())["figures"]}
    failover = figures["failover: kill -> 3 web dynos answering"]
    assert failover["baseline_name"] == "node lease TTL (NODE_TTL)"
    assert failover["baseline"]["median"] == 10.0
    assert failover["value"]["n"] == 1 and failover["value"]["median"] > 0
    assert any(n.startswith("etcd store: API config:set") for n in figures)
    assert "failover: kill ->" in (tmp_path / "results.txt").read_text()
