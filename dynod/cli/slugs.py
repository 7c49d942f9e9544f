"""dynoctl slugs:deploy: create a slug, stream its tarball, release it."""

from __future__ import annotations

import argparse
import hashlib
from collections.abc import Iterator
from pathlib import Path

from dynod.cli import client, output
from dynod.cli.client import CliError, call
from dynod.cli.rollout import wait_rollout
from dynod.cli.run import follow_release
from dynod.v1 import releases_pb2, releases_pb2_grpc, slugs_pb2, slugs_pb2_grpc

CHUNK = 1024 * 1024


def human(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KB"
    return f"{size / 1024 / 1024:.1f} MB"


def checksum_of(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return "sha256:" + digest.hexdigest(), size


def parse_process_types(pairs: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        name, sep, command = pair.partition("=")
        if not sep or not name or not command.strip():
            raise CliError(f"--process-type {pair} is invalid; use TYPE='command', "
                           "e.g. --process-type web='gunicorn app:app'")
        out[name] = command
    return out


def upload_requests(app: str, slug_id: str, path: Path) -> Iterator[slugs_pb2.UploadSlugRequest]:
    with path.open("rb") as f:
        yield slugs_pb2.UploadSlugRequest(app=app, id=slug_id, data=f.read(CHUNK))
        while chunk := f.read(CHUNK):
            yield slugs_pb2.UploadSlugRequest(data=chunk)


def cmd_deploy(args: argparse.Namespace) -> int:
    path: Path = args.file
    if not path.is_file():
        raise CliError(f"{path}: no such file; give the slug's .tgz")
    process_types = parse_process_types(args.process_type)
    app = client.app_of(args)
    checksum, size = checksum_of(path)
    channel = client.channel()
    slugs = slugs_pb2_grpc.SlugsStub(channel)
    created = call(slugs.Create, slugs_pb2.CreateSlugRequest(
        app=app, checksum=checksum, size=size, process_types=process_types,
        commit=args.commit or ""))
    slug_id = created.slug.id
    call(slugs.Upload, upload_requests(app, slug_id, path), timeout=600)
    if not args.json:
        output.action(f"Uploading {path.name} ({human(size)})", slug_id)
    release = call(releases_pb2_grpc.ReleasesStub(channel).Create,
                   releases_pb2.CreateReleaseRequest(app=app, slug_id=slug_id,
                                                     description=args.description or ""))
    if args.json:
        output.print_json(release.release)
        return 0
    output.action(f"Releasing to {output.app_label(app)}", f"v{release.release.version}")
    # The slug declares release: (Heroku's release phase): wait for it, as git push does.
    pending = release.release.status == "pending"
    if pending and follow_release(app, release.release.version) != "succeeded":
        raise CliError(f"release v{release.release.version}: the release command failed; "
                       "the previous release keeps running (see dynoctl releases:output)")
    if not args.no_wait:
        wait_rollout(app, release.release.version)
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser],
             common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("slugs:deploy", parents=[common],
                       help="release a prebuilt slug (a tar.gz of ./app)")
    p.add_argument("file", type=Path, metavar="FILE.tgz")
    p.add_argument("--process-type", action="append", default=[], metavar="TYPE=CMD",
                   help="a process type and its command; repeat for each type")
    p.add_argument("--commit", help="the git commit the slug was built from")
    p.add_argument("--description", help="the release's description (default: Deploy <sha>)")
    p.add_argument("--no-wait", action="store_true",
                   help="return once released, without waiting for the web dynos to roll out")
    p.set_defaults(func=cmd_deploy)
