"""Generate the gRPC code from proto/ whenever the package is built or installed.

The generated modules land in dynod/v1/ (package ``dynod.v1``, matching the proto
package), are never committed, and carry mypy stubs so the servicers type-check.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).resolve().parent


def generate_protos() -> None:
    from grpc_tools import protoc  # build requirement, see pyproject.toml

    import grpc_tools

    # The mypy plugins come with mypy-protobuf, installed beside this interpreter (a
    # venv's bin/ is not on PATH when pip runs us).
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    plugins = []
    for name in ("protoc-gen-mypy", "protoc-gen-mypy_grpc"):
        found = shutil.which(name, path=search)
        if found is None:
            raise SystemExit(f"{name} not found: install mypy-protobuf first")
        plugins.append(f"--plugin={name}={found}")
    protos = sorted(str(p.relative_to(ROOT / "proto")) for p in (ROOT / "proto").rglob("*.proto"))
    include = str(Path(grpc_tools.__file__).parent / "_proto")
    out = ROOT
    args = [
        "grpc_tools.protoc",
        f"-I{ROOT / 'proto'}",
        f"-I{include}",
        *plugins,
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed on " + " ".join(protos))
    (ROOT / "dynod" / "v1" / "__init__.py").write_text('"""Generated from proto/dynod/v1."""\n')


generate_protos()
setup()
