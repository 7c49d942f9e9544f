"""Hostile requests against the servicers in process (tests/hostile_api.py): every RPC of
every service, never UNKNOWN or INTERNAL, never a logged traceback, the state database
unchanged by a refused call.

CI runs 25 examples per service here (and 50 against the real daemon in
tests/integration/test_hostile_api.py); DYNOD_FUZZ_EXAMPLES raises both.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from dynod.store.sqlite import SqliteStore
from dynod.v1 import auth_pb2, auth_pb2_grpc, builds_pb2, builds_pb2_grpc
from tests import hostile_api
from tests.sandbox.machine import PROJECT
from tests.unit.control_plane.harness import Api, serving

EXAMPLES = int(os.environ.get("DYNOD_FUZZ_EXAMPLES", "25"))


@pytest.fixture(scope="module")
def fuzz_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    with serving(Path(tmp_path_factory.mktemp("hostile"))) as client:
        yield client


def test_every_service_is_driven() -> None:
    services = hostile_api.services()
    assert "dynod.v1.Apps" in services and "dynod.v1.Databases" in services
    protos = sorted((PROJECT / "proto/dynod/v1").glob("*.proto"))
    rpcs = sum(line.strip().startswith("rpc ") for p in protos for line in
               p.read_text().splitlines())
    assert len(services) == sum(p.read_text().count("\nservice ") for p in protos)
    assert len(hostile_api.methods()) == rpcs


@pytest.mark.parametrize("service", hostile_api.services())
def test_hostile_requests(fuzz_api: Api, service: str, caplog: pytest.LogCaptureFixture) -> None:
    tally = hostile_api.Tally()
    assert isinstance(fuzz_api.store, SqliteStore)  # the fuzzer compares state.db
    with caplog.at_level(logging.WARNING):
        hostile_api.fuzz_service(fuzz_api.channel, service, EXAMPLES, fuzz_api.store.path, tally)
    assert tally.examples[service] == EXAMPLES
    assert not tally.violations, "\n".join(tally.violations)
    tracebacks = [r.getMessage() for r in caplog.records if r.exc_info]
    assert not tracebacks, tracebacks


def test_invalid_utf8_is_invalid_argument_and_names_the_problem(fuzz_api: Api) -> None:
    # A string field (CreateAppRequest.name) holding the byte 0xff: grpc alone says
    # INTERNAL "Exception deserializing request!".
    channel: Any = fuzz_api.channel  # raw bytes: no serialiser
    create = channel.unary_unary("/dynod.v1.Apps/Create")
    before = fuzz_api.dump()
    with pytest.raises(grpc.RpcError) as err:
        create(b"\n\x01\xff", timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "bad UTF-8" in (err.value.details() or "")
    assert "valid protobuf message" in (err.value.details() or "")
    assert fuzz_api.dump() == before


def test_undecodable_message_in_a_build_stream_fails_the_build_with_the_reason(
        fuzz_api: Api) -> None:
    # The build has started when its second message arrives: it fails as a build does.
    fuzz_api.create_app("streamy")
    good = builds_pb2.CreateBuildRequest(app="streamy").SerializeToString()
    channel: Any = fuzz_api.channel
    stream = channel.stream_stream(
        "/dynod.v1.Builds/Create", response_deserializer=builds_pb2.CreateBuildResponse.FromString)
    replies = list(stream(iter([good, b"\x22\x05\x01"]), timeout=30))  # 5 bytes, 1 sent
    lines = [r.line for r in replies if r.line]
    assert "Wire format was corrupt" in lines[0] and "valid protobuf message" in lines[0]
    assert lines[-1] == " !     Push failed"
    assert replies[-1].build.status == "failed"
    builds = builds_pb2_grpc.BuildsStub(fuzz_api.channel).List(
        builds_pb2.ListBuildsRequest(app="streamy"))
    assert [b.status for b in builds.builds] == ["failed"]


def test_login_with_an_overflowing_lifetime_is_invalid_argument(fuzz_api: Api) -> None:
    # Found by the fuzzer: timedelta(seconds=2**62) raised OverflowError (INTERNAL).
    login = auth_pb2_grpc.AuthStub(fuzz_api.channel).Login
    with pytest.raises(grpc.RpcError) as err:
        login(auth_pb2.LoginRequest(email="a@example.com", password="x",  # noqa: S106
                                    expires_in=2**62),
              timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "longer than 36500 days" in (err.value.details() or "")
