"""Generate the gRPC code from proto/ whenever the package is built or installed.

The generated modules land in dynod/v1/ (package ``dynod.v1``, matching the proto
package), are never committed, and carry mypy stubs so the servicers type-check.
"""

from __future__ import annotations

from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).resolve().parent


def generate_protos() -> None:
    from grpc_tools import protoc  # build requirement, see pyproject.toml

    import grpc_tools

    protos = sorted(str(p.relative_to(ROOT / "proto")) for p in (ROOT / "proto").rglob("*.proto"))
    include = str(Path(grpc_tools.__file__).parent / "_proto")
    out = ROOT
    args = [
        "grpc_tools.protoc",
        f"-I{ROOT / 'proto'}",
        f"-I{include}",
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
