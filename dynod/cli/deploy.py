"""dynoctl deploy [DIR]: upload a tarball of DIR and stream the build, as git push does.

``stream_build`` is also what the git pre-receive hook uses, so both print the same.
"""

from __future__ import annotations

import argparse
import os
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import grpc

from dynod.cli import client, output
from dynod.cli.client import CliError
from dynod.v1 import apps_pb2, apps_pb2_grpc, builds_pb2, builds_pb2_grpc, keys_pb2, keys_pb2_grpc

CHUNK = 1024 * 1024


def _requests(app: str, commit: str, key_id: str,
              chunks: Iterable[bytes]) -> Iterator[builds_pb2.CreateBuildRequest]:
    yield builds_pb2.CreateBuildRequest(app=app, commit=commit, key_id=key_id)
    for chunk in chunks:
        yield builds_pb2.CreateBuildRequest(data=chunk)


def stream_build(app: str, chunks: Iterable[bytes], *, out: Callable[[str], None],
                 commit: str = "", key_id: str = "") -> builds_pb2.Build:
    """Upload the source, print the build's output lines with ``out`` as they come;
    return the finished build. Raises CliError when the call itself fails."""
    stub = builds_pb2_grpc.BuildsStub(client.channel())
    build: builds_pb2.Build | None = None
    try:
        for reply in stub.Create(_requests(app, commit, key_id, chunks), timeout=20 * 60):
            if reply.HasField("build"):
                build = reply.build
            else:
                out(reply.line)
    except grpc.RpcError as exc:
        raise client.explain(exc) from exc
    if build is None:
        raise CliError("the build ended without a result; see `dynoctl builds:output`")
    return build


def may_push(key_id: str, app: str) -> None:
    """Raises CliError (Heroku's "You do not have access to the app ...") unless the
    key's user may push to ``app``, or when the daemon cannot be asked."""
    stub = keys_pb2_grpc.KeysStub(client.channel())
    try:
        stub.Get(keys_pb2.GetKeyRequest(id=key_id, app=app), timeout=30)
    except grpc.RpcError as exc:
        raise client.explain(exc) from exc


def app_exists(app: str) -> bool:
    """Raises CliError when the daemon cannot be asked."""
    stub = apps_pb2_grpc.AppsStub(client.channel())
    try:
        stub.Get(apps_pb2.GetAppRequest(name=app), timeout=30)
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.NOT_FOUND:
            return False
        raise client.explain(exc) from exc
    return True


def file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            yield chunk


def tar_directory(directory: Path, dest: Path) -> None:
    """A tar of DIR's files (not DIR itself), without ``.git``."""

    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        parts = Path(info.name).parts
        if ".git" in parts:
            return None
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        return info

    with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as tar:
        for entry in sorted(directory.iterdir()):
            tar.add(entry, arcname=entry.name, filter=keep)


def cmd_deploy(args: argparse.Namespace) -> int:
    directory: Path = args.dir
    if not directory.is_dir():
        raise CliError(f"{directory}: not a directory; give the app's source directory")
    app = client.app_of(args)
    fd, name = tempfile.mkstemp(prefix="dynod-deploy-", suffix=".tar")
    os.close(fd)
    tmp = Path(name)
    try:
        tar_directory(directory, tmp)
        print("Compressing source files... done.", flush=True)
        build = stream_build(app, file_chunks(tmp),
                             out=lambda line: print(line, flush=True))
    finally:
        tmp.unlink(missing_ok=True)
    if args.json:
        output.print_json(build)
    if build.status != "succeeded":
        print(f" !     Deploy to {app} failed: {build.error}", file=sys.stderr)
        return 1
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser],
             common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("deploy", parents=[common],
                       help="build DIR (default .) and release it, as git push does")
    p.add_argument("dir", type=Path, nargs="?", default=Path(), metavar="DIR")
    p.set_defaults(func=cmd_deploy)
