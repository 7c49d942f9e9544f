"""The servicers called over a real gRPC server: the flows, and the bad-input table."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import grpc
import pytest

from dynod.v1 import (
    apps_pb2,
    config_pb2,
    formation_pb2,
    releases_pb2,
    slugs_pb2,
    system_pb2,
    system_pb2_grpc,
)
from tests.unit.control_plane.harness import Api, make_slug

Code = grpc.StatusCode


def test_new_app_has_initial_release_and_random_name(api: Api) -> None:
    reply = api.apps.Create(apps_pb2.CreateAppRequest())
    name = reply.app.name
    assert reply.app.current_release == 1
    assert reply.app.owner == "root"
    got = api.releases.Get(releases_pb2.GetReleaseRequest(app=name)).release
    assert (got.version, got.description, got.user, got.current) == (1, "Initial release",
                                                                      "root", True)
    assert [a.name for a in api.apps.List(apps_pb2.ListAppsRequest()).apps] == [name]


def test_config_changes_make_releases_with_snapshots(api: Api) -> None:
    api.create_app("shop")
    r2 = api.config.Set(config_pb2.SetConfigRequest(app="shop", vars={"FOO": "1", "BAR": "2"}))
    assert (r2.release.version, r2.release.description) == (2, "Set BAR, FOO config vars")
    r3 = api.config.Set(config_pb2.SetConfigRequest(app="shop", vars={"FOO": "3"}))
    assert dict(r3.release.config) == {"FOO": "3", "BAR": "2"}
    r4 = api.config.Unset(config_pb2.UnsetConfigRequest(app="shop", keys=["BAR"]))
    assert (r4.release.version, r4.release.description) == (4, "Remove BAR config vars")
    assert dict(api.config.Get(config_pb2.GetConfigRequest(app="shop")).vars) == {"FOO": "3"}
    v2 = api.releases.Get(releases_pb2.GetReleaseRequest(app="shop", version=2)).release
    assert dict(v2.config) == {"FOO": "1", "BAR": "2"}
    assert not v2.current
    listed = api.releases.List(releases_pb2.ListReleasesRequest(app="shop", limit=2)).releases
    assert [(r.version, r.current) for r in listed] == [(4, True), (3, False)]


def test_rollback_copies_config_and_slug(api: Api) -> None:
    api.create_app("shop")
    api.config.Set(config_pb2.SetConfigRequest(app="shop", vars={"A": "1"}))  # v2
    api.deploy("shop", {"web": "serve"})  # v3
    api.config.Set(config_pb2.SetConfigRequest(app="shop", vars={"A": "2"}))  # v4
    v3 = api.releases.Get(releases_pb2.GetReleaseRequest(app="shop", version=3)).release
    back = api.releases.Rollback(releases_pb2.RollbackReleaseRequest(app="shop")).release
    assert (back.version, back.description) == (5, "Rollback to v3")
    assert (back.slug_id, dict(back.config)) == (v3.slug_id, {"A": "1"})
    first = api.releases.Rollback(releases_pb2.RollbackReleaseRequest(app="shop", version=1))
    assert (first.release.slug_id, dict(first.release.config)) == ("", {})
    assert api.formation.Get(formation_pb2.GetFormationRequest(app="shop")).processes == []


def test_formation_scale_resize(api: Api) -> None:
    api.create_app("shop")
    api.deploy("shop", {"web": "serve", "worker": "work"})
    got = api.formation.Get(formation_pb2.GetFormationRequest(app="shop")).processes
    assert [(p.type, p.quantity, p.size, p.command) for p in got] == [
        ("web", 1, "standard-1x", "serve"), ("worker", 0, "standard-1x", "work")]
    scaled = api.formation.Scale(formation_pb2.ScaleFormationRequest(app="shop", updates=[
        formation_pb2.ScaleUpdate(type="web", quantity=2, size="Standard-2X"),
        formation_pb2.ScaleUpdate(type="worker", delta=1)])).processes
    assert [(p.type, p.quantity, p.size) for p in scaled] == [
        ("web", 2, "standard-2x"), ("worker", 1, "standard-1x")]
    # Heroku: a count alone keeps the size set before.
    scaled = api.formation.Scale(formation_pb2.ScaleFormationRequest(app="shop", updates=[
        formation_pb2.ScaleUpdate(type="web", delta=-1)])).processes
    assert (scaled[0].quantity, scaled[0].size, scaled[0].memory_mb) == (1, "standard-2x", 1024)
    resized = api.formation.Resize(formation_pb2.ResizeFormationRequest(app="shop", updates=[
        formation_pb2.ResizeUpdate(type="worker", size="performance-l")])).processes
    assert (resized[1].quantity, resized[1].size) == (1, "performance-l")
    # A new deploy keeps the formation and adds new types at 0.
    api.deploy("shop", {"web": "serve2", "worker": "work", "clock": "tick"})
    got = api.formation.Get(formation_pb2.GetFormationRequest(app="shop")).processes
    assert [(p.type, p.quantity, p.command) for p in got] == [
        ("clock", 0, "tick"), ("web", 1, "serve2"), ("worker", 1, "work")]
    app = api.apps.Get(apps_pb2.GetAppRequest(name="shop"))
    assert dict(app.dynos) == {"clock": 0, "web": 1, "worker": 1}


def test_slug_stored_once_by_checksum(api: Api) -> None:
    api.create_app("shop")
    api.create_app("blog")
    tgz = make_slug()
    api.deploy("shop", {"web": "a"}, tgz)
    api.deploy("blog", {"web": "a"}, tgz)
    slugs_dir = api.daemon.slugs_dir
    stored = sorted(p.name for p in slugs_dir.iterdir())
    assert stored == [hashlib.sha256(tgz).hexdigest() + ".tgz"]
    assert (slugs_dir / stored[0]).read_bytes() == tgz
    api.apps.Delete(apps_pb2.DeleteAppRequest(name="shop"))
    assert [p.name for p in slugs_dir.iterdir()] == stored  # blog still uses it
    api.apps.Delete(apps_pb2.DeleteAppRequest(name="blog"))
    assert list(slugs_dir.iterdir()) == []


def test_upload_in_chunks(api: Api) -> None:
    api.create_app("shop")
    tgz = make_slug({"app/big": bytes(range(256)) * 20000})
    slug = api.slugs.Create(slugs_pb2.CreateSlugRequest(
        app="shop", checksum="SHA256:" + hashlib.sha256(tgz).hexdigest().upper(),
        size=len(tgz))).slug
    chunks = [tgz[i:i + 1000] for i in range(0, len(tgz), 1000)]
    reqs = [slugs_pb2.UploadSlugRequest(app="shop", id=slug.id, data=chunks[0])]
    reqs += [slugs_pb2.UploadSlugRequest(data=c) for c in chunks[1:]]
    done = api.slugs.Upload(iter(reqs)).slug
    assert done.uploaded
    assert api.slugs.Get(slugs_pb2.GetSlugRequest(app="shop", id=slug.id)).slug.uploaded


def test_system_version_still_answers(api: Api) -> None:
    reply = system_pb2_grpc.SystemStub(api.channel).Version(system_pb2.VersionRequest())
    assert reply.api_version == "v1"


# --- the bad-input table ------------------------------------------------------------


@dataclass(frozen=True)
class Bad:
    name: str
    call: Callable[[Api], object]
    code: grpc.StatusCode
    message: str


def _big() -> dict[str, str]:
    return {"BIG": "x" * (64 * 1024)}


def _pending_slug(api: Api) -> str:
    tgz = make_slug()
    return str(api.slugs.Create(slugs_pb2.CreateSlugRequest(
        app="shop", checksum="sha256:" + hashlib.sha256(tgz).hexdigest(),
        size=len(tgz))).slug.id)


def _upload(api: Api, data: bytes, declared: bytes) -> object:
    slug = api.slugs.Create(slugs_pb2.CreateSlugRequest(
        app="shop", checksum="sha256:" + hashlib.sha256(declared).hexdigest(),
        size=len(declared))).slug
    return api.slugs.Upload(iter([slugs_pb2.UploadSlugRequest(app="shop", id=slug.id,
                                                              data=data)]))


def _scale(*updates: formation_pb2.ScaleUpdate) -> Callable[[Api], object]:
    return lambda a: a.formation.Scale(formation_pb2.ScaleFormationRequest(
        app="shop", updates=list(updates)))


def _set(vars_: dict[str, str], app: str = "shop") -> Callable[[Api], object]:
    return lambda a: a.config.Set(config_pb2.SetConfigRequest(app=app, vars=vars_))


BAD = [
    Bad("uppercase app name", lambda a: a.apps.Create(apps_pb2.CreateAppRequest(name="Shop")),
        Code.INVALID_ARGUMENT, "app name 'Shop' is invalid: use 3 to 30 lower-case letters"),
    Bad("short app name", lambda a: a.apps.Create(apps_pb2.CreateAppRequest(name="ab")),
        Code.INVALID_ARGUMENT, "app name 'ab' is invalid"),
    Bad("app name ending in a dash",
        lambda a: a.apps.Create(apps_pb2.CreateAppRequest(name="shop-")),
        Code.INVALID_ARGUMENT, "ending with a letter or digit"),
    Bad("31-character app name",
        lambda a: a.apps.Create(apps_pb2.CreateAppRequest(name="a" * 31)),
        Code.INVALID_ARGUMENT, "is invalid"),
    Bad("duplicate app name", lambda a: a.apps.Create(apps_pb2.CreateAppRequest(name="shop")),
        Code.ALREADY_EXISTS, 'app "shop" already exists; choose another name'),
    Bad("unknown app: info", lambda a: a.apps.Get(apps_pb2.GetAppRequest(name="nope")),
        Code.NOT_FOUND, 'app "nope" not found; list your apps with `dynoctl apps`'),
    Bad("unknown app: destroy", lambda a: a.apps.Delete(apps_pb2.DeleteAppRequest(name="nope")),
        Code.NOT_FOUND, 'app "nope" not found'),
    Bad("unknown app: config", lambda a: a.config.Get(config_pb2.GetConfigRequest(app="nope")),
        Code.NOT_FOUND, 'app "nope" not found'),
    Bad("unknown app: config:set", _set({"A": "1"}, app="nope"),
        Code.NOT_FOUND, 'app "nope" not found'),
    Bad("unknown app: releases",
        lambda a: a.releases.List(releases_pb2.ListReleasesRequest(app="nope")),
        Code.NOT_FOUND, 'app "nope" not found'),
    Bad("unknown app: ps:scale",
        lambda a: a.formation.Scale(formation_pb2.ScaleFormationRequest(
            app="nope", updates=[formation_pb2.ScaleUpdate(type="web", quantity=1)])),
        Code.NOT_FOUND, 'app "nope" not found'),
    Bad("config key starting with a digit", _set({"1FOO": "x"}),
        Code.INVALID_ARGUMENT, "config key '1FOO' is invalid: use letters, digits and"),
    Bad("config key with a dash", _set({"FOO-BAR": "x"}),
        Code.INVALID_ARGUMENT, "config key 'FOO-BAR' is invalid"),
    Bad("empty config key", _set({"": "x"}), Code.INVALID_ARGUMENT, "config key '' is invalid"),
    Bad("reserved key PORT", _set({"PORT": "80"}),
        Code.INVALID_ARGUMENT, "config key 'PORT' is reserved: dynod sets PORT, DYNO and"),
    Bad("reserved key DYNO", _set({"DYNO": "web.1"}), Code.INVALID_ARGUMENT, "'DYNO' is reserved"),
    Bad("reserved prefix DYNOD_", _set({"DYNOD_X": "1"}),
        Code.INVALID_ARGUMENT, "'DYNOD_X' is reserved"),
    Bad("NUL in a value", _set({"A": "a\0b"}), Code.INVALID_ARGUMENT, "cannot contain a NUL"),
    Bad("no config vars", _set({}), Code.INVALID_ARGUMENT, "no config vars given"),
    Bad("config over 64 KB", _set(_big()),
        Code.RESOURCE_EXHAUSTED, "over the limit of 65536 (64 KB) per app"),
    Bad("rollback to a missing version",
        lambda a: a.releases.Rollback(releases_pb2.RollbackReleaseRequest(app="shop", version=99)),
        Code.NOT_FOUND, 'app "shop" has no release v99 (the current one is v3)'),
    Bad("release info of a missing version",
        lambda a: a.releases.Get(releases_pb2.GetReleaseRequest(app="shop", version=42)),
        Code.NOT_FOUND, "has no release v42"),
    Bad("scale of an undeclared type",
        _scale(formation_pb2.ScaleUpdate(type="clock", quantity=1)),
        Code.FAILED_PRECONDITION,
        'app "shop": no process type "clock" in release v3; declared types: web, worker'),
    Bad("negative count", _scale(formation_pb2.ScaleUpdate(type="web", quantity=-1)),
        Code.INVALID_ARGUMENT, "web=-1: a dyno count cannot be negative; use web=0"),
    Bad("decrease below zero", _scale(formation_pb2.ScaleUpdate(type="worker", delta=-1)),
        Code.FAILED_PRECONDITION, "worker has 0 dynos, so worker-1 would be negative"),
    Bad("unknown size", _scale(formation_pb2.ScaleUpdate(type="web", quantity=1, size="huge")),
        Code.INVALID_ARGUMENT, "unknown dyno size 'huge'; use one of: eco, basic"),
    Bad("unknown size on resize",
        lambda a: a.formation.Resize(formation_pb2.ResizeFormationRequest(
            app="shop", updates=[formation_pb2.ResizeUpdate(type="web", size="xl")])),
        Code.INVALID_ARGUMENT, "unknown dyno size 'xl'"),
    Bad("resize of an undeclared type",
        lambda a: a.formation.Resize(formation_pb2.ResizeFormationRequest(
            app="shop", updates=[formation_pb2.ResizeUpdate(type="clock", size="basic")])),
        Code.FAILED_PRECONDITION, "declared types: web, worker"),
    Bad("scale the same type twice",
        _scale(formation_pb2.ScaleUpdate(type="web", quantity=1),
               formation_pb2.ScaleUpdate(type="web", delta=1)),
        Code.INVALID_ARGUMENT, "process type 'web' is given twice"),
    Bad("over 100 dynos", _scale(formation_pb2.ScaleUpdate(type="web", quantity=101)),
        Code.RESOURCE_EXHAUSTED, "101 dynos would exceed the limit of 100 per app"),
    Bad("scale half valid: nothing applied",
        _scale(formation_pb2.ScaleUpdate(type="web", quantity=5),
               formation_pb2.ScaleUpdate(type="clock", quantity=1)),
        Code.FAILED_PRECONDITION, 'no process type "clock"'),
    Bad("bad slug checksum",
        lambda a: a.slugs.Create(slugs_pb2.CreateSlugRequest(app="shop", checksum="md5:x",
                                                             size=10)),
        Code.INVALID_ARGUMENT, "slug checksum 'md5:x' is invalid"),
    Bad("bad process type name",
        lambda a: a.slugs.Create(slugs_pb2.CreateSlugRequest(
            app="shop", checksum="sha256:" + "0" * 64, size=10, process_types={"a b": "x"})),
        Code.INVALID_ARGUMENT, "process type 'a b' is invalid"),
    Bad("uploaded bytes differ from the checksum",
        lambda a: _upload(a, make_slug({"app/a": b"1"}), make_slug({"app/a": b"2"})),
        Code.INVALID_ARGUMENT, "checksum is sha256:"),
    Bad("upload is not gzip", lambda a: _upload(a, b"plain tar", b"plain tar"),
        Code.INVALID_ARGUMENT, "slug tarball is not gzip-compressed"),
    Bad("release of a slug not uploaded",
        lambda a: a.releases.Create(releases_pb2.CreateReleaseRequest(
            app="shop", slug_id=_pending_slug(a))),
        Code.FAILED_PRECONDITION, "has not been uploaded; upload its tarball first"),
    Bad("release of an unknown slug",
        lambda a: a.releases.Create(releases_pb2.CreateReleaseRequest(app="shop", slug_id="x")),
        Code.NOT_FOUND, "app \"shop\" has no slug 'x'"),
]


@pytest.mark.parametrize("case", BAD, ids=[c.name for c in BAD])
def test_bad_input(api: Api, case: Bad) -> None:
    api.create_app("shop")
    api.config.Set(config_pb2.SetConfigRequest(app="shop", vars={"KEEP": "1"}))
    api.deploy("shop", {"web": "serve", "worker": "work"})
    before = api.dump()
    blobs = sorted(api.daemon.slugs_dir.iterdir())
    with pytest.raises(grpc.RpcError) as raised:
        case.call(api)
    err: grpc.Call = raised.value  # type: ignore[assignment]
    assert err.code() == case.code, err.details()
    assert case.message in str(err.details())
    after = api.dump()
    if case.name.startswith(("uploaded", "upload is", "release of a slug")):
        # Creating the slug record is its own, earlier, successful step.
        def slug(line: str) -> bool:  # a row of SQLite's table, a key of etcd's
            return "INTO \"slugs\"" in line or line.startswith("slugs/")
        after = "\n".join(line for line in after.splitlines() if not slug(line))
        before = "\n".join(line for line in before.splitlines() if not slug(line))
    assert after == before
    assert sorted(api.daemon.slugs_dir.iterdir()) == blobs  # no partial upload left
