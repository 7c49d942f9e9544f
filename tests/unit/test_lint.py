"""The linters are part of the suite: ruff, mypy strict, shellcheck."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=False)


def test_ruff() -> None:
    proc = _run([str(VENV_BIN / "ruff"), "check", "dynod", "tests", "benchmarks"])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_strict() -> None:
    proc = _run([str(VENV_BIN / "mypy")])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def shell_scripts() -> list[Path]:
    scripts = [p for p in (ROOT / "buildpacks").rglob("*") if p.is_file() and "bin" in p.parts]
    for p in [*(ROOT / ".ci").iterdir(), *ROOT.glob("dynod/**/*.sh"), *ROOT.glob("benchmarks/*")]:
        if p.is_file() and p.read_bytes()[:64].startswith((b"#!/bin/bash", b"#!/bin/sh",
                                                           b"#!/usr/bin/env bash")):
            scripts.append(p)
    return sorted(scripts)


def test_shellcheck() -> None:
    if shutil.which("shellcheck") is None:
        pytest.fail("shellcheck is not installed; run .ci/prereqs")
    scripts = shell_scripts()
    assert scripts, "no shell scripts found: the glob is wrong"
    proc = _run(["shellcheck", "-x", *map(str, scripts)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
