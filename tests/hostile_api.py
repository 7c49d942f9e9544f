"""Hostile requests for every RPC of dynod's API, generated from the protobuf descriptors.

A Hypothesis strategy walks each request message's fields: strings (empty, huge, control
characters, path tricks, names that exist), bytes (random, invalid UTF-8), numbers at
and past their bounds, unknown enum values, nested messages, repeated fields and maps.
Each request is then serialised and may get wire-level extras a well-behaved client
cannot produce: an integer field's varint past its width (an overflowing number), a
string field holding invalid UTF-8, an unknown field. Calls go through a generic
channel with raw bytes, so the server sees exactly those bytes.

The property (``check``): no call ends UNKNOWN or INTERNAL, and a refused call leaves
the state database as it was. The caller also checks dynod's log for tracebacks.

Used in process by tests/unit/test_hostile_api.py and inside a sandbox machine against
the real daemon by tests/integration/test_hostile_api.py
(``python -m tests.hostile_api --socket ... --examples N``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import descriptor as d
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import dynod.v1

# The app every generated request may name (so calls reach past "no such app").
APP = "fuzz-app"
KNOWN = [APP, "web", "worker", "web.1", "basic", "standard-1x", "main", "v1", "1"]

# Per-call deadlines: a refusal is quick; a server stream is read for a few messages.
UNARY_DEADLINE = 20.0
STREAM_DEADLINE = 5.0
STREAM_READ = 20

BAD_CODES = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}

_I32 = (-(2**31), 2**31 - 1)
_I64 = (-(2**63), 2**63 - 1)
_U32 = (0, 2**32 - 1)
_U64 = (0, 2**64 - 1)
_INT_RANGE = {
    d.FieldDescriptor.TYPE_INT32: _I32, d.FieldDescriptor.TYPE_SINT32: _I32,
    d.FieldDescriptor.TYPE_SFIXED32: _I32, d.FieldDescriptor.TYPE_INT64: _I64,
    d.FieldDescriptor.TYPE_SINT64: _I64, d.FieldDescriptor.TYPE_SFIXED64: _I64,
    d.FieldDescriptor.TYPE_UINT32: _U32, d.FieldDescriptor.TYPE_FIXED32: _U32,
    d.FieldDescriptor.TYPE_UINT64: _U64, d.FieldDescriptor.TYPE_FIXED64: _U64,
}
_VARINT_TYPES = {
    d.FieldDescriptor.TYPE_INT32, d.FieldDescriptor.TYPE_INT64,
    d.FieldDescriptor.TYPE_UINT32, d.FieldDescriptor.TYPE_UINT64,
    d.FieldDescriptor.TYPE_ENUM, d.FieldDescriptor.TYPE_BOOL,
}


@dataclass(frozen=True)
class Method:
    service: str  # "dynod.v1.Apps"
    name: str  # "Create"
    request: type[Message]
    client_streaming: bool
    server_streaming: bool

    @property
    def path(self) -> str:
        return f"/{self.service}/{self.name}"


def methods() -> list[Method]:
    """Every RPC of every dynod.v1 service, from the generated descriptors."""
    found: list[Method] = []
    for info in pkgutil.iter_modules(dynod.v1.__path__):
        if not info.name.endswith("_pb2"):
            continue
        module = importlib.import_module(f"dynod.v1.{info.name}")
        for service in module.DESCRIPTOR.services_by_name.values():
            for m in service.methods:
                found.append(Method(service.full_name, m.name, GetMessageClass(m.input_type),
                                    m.client_streaming, m.server_streaming))
    return sorted(found, key=lambda m: m.path)


def services() -> list[str]:
    return sorted({m.service for m in methods()})


# ---- values

def _strings(big: bool = True) -> st.SearchStrategy[str]:
    """Strings; ``big`` adds values up to ~1 MB (singular fields only: a list of them
    would make messages past gRPC's 4 MB and the fuzzer's memory)."""
    small = st.one_of(
        st.sampled_from(KNOWN),
        st.just(""),
        st.text(max_size=40),
        st.text(alphabet=st.characters(codec="ascii"), max_size=40),
        st.sampled_from(["../../etc/passwd", "/", ".", "a\x00b", "a\nb", " ", "-h",
                         "--help", "%s%n", "' OR 1=1 --", "\u202e", "a" * 300,
                         "FUZZ_APP", "fuzz_app", "x" * 64]),
    )
    if not big:
        return small
    return st.one_of(small, st.integers(1, 5).map(lambda n: "é" * (n * 100_000)))


def _bytes(big: bool = True) -> st.SearchStrategy[bytes]:
    small = st.one_of(
        st.binary(max_size=64),
        st.sampled_from([b"", b"\xff\xfe\xfd", b"\xc3\x28", b"\x00" * 16,
                         b"\x1f\x8b\x08\x00", b"ustar\x00"]),
    )
    if not big:
        return small
    return st.one_of(small, st.integers(1, 4).map(lambda n: b"\xff" * (n * 250_000)))


def _ints(lo: int, hi: int) -> st.SearchStrategy[int]:
    return st.one_of(st.sampled_from(sorted({lo, hi, 0, 1, -1 if lo < 0 else 2, 2**31 - 1
                                             if hi >= 2**31 - 1 else hi})),
                     st.integers(lo, hi), st.integers(-3, 12).filter(lambda i: lo <= i <= hi))


# String fields that name the app: half of their values name the one that exists.
_APP_FIELDS = {"app", "app_name", "name", "target", "source_app"}


def _scalar(f: Any, big: bool = True) -> st.SearchStrategy[Any]:
    t = f.type
    if t == d.FieldDescriptor.TYPE_STRING and f.name in _APP_FIELDS:
        return st.one_of(st.just(APP), _strings(big))
    if t == d.FieldDescriptor.TYPE_STRING:
        return _strings(big)
    if t == d.FieldDescriptor.TYPE_BYTES:
        return _bytes(big)
    if t == d.FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if t in (d.FieldDescriptor.TYPE_DOUBLE, d.FieldDescriptor.TYPE_FLOAT):
        return st.floats(allow_nan=True, allow_infinity=True, width=32
                         if t == d.FieldDescriptor.TYPE_FLOAT else 64)
    if t == d.FieldDescriptor.TYPE_ENUM:
        known = [v.number for v in f.enum_type.values]
        return st.one_of(st.sampled_from(known), st.integers(*_I32))  # unknown values too
    lo, hi = _INT_RANGE[t]
    return _ints(lo, hi)


def _value(f: Any, depth: int, big: bool = True) -> st.SearchStrategy[Any]:
    if f.type == d.FieldDescriptor.TYPE_MESSAGE:
        return message_dicts(f.message_type, depth + 1, big=False)
    return _scalar(f, big)


def message_dicts(desc: Any, depth: int = 0, *, big: bool = True,
                  ) -> st.SearchStrategy[dict[str, Any]]:
    """A strategy of {field name: value} for ``desc``: each field present or not; ``big``
    allows ~1 MB values in its singular fields (the request's own, not nested ones)."""
    parts: dict[str, st.SearchStrategy[Any]] = {}
    for f in desc.fields:
        if depth > 3 and f.type == d.FieldDescriptor.TYPE_MESSAGE:
            continue
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            key, val = f.message_type.fields_by_name["key"], f.message_type.fields_by_name["value"]
            parts[f.name] = st.dictionaries(_scalar(key, False), _value(val, depth, False),
                                            max_size=4)
        elif f.is_repeated:
            parts[f.name] = st.one_of(st.lists(_value(f, depth, False), max_size=4),
                                      st.lists(_value(f, depth, False), min_size=50,
                                               max_size=200)
                                      if f.type != d.FieldDescriptor.TYPE_MESSAGE
                                      else st.just([]))
        else:
            parts[f.name] = _value(f, depth, big)
    if not parts:
        return st.just({})
    return st.fixed_dictionaries({}, optional=parts)


def build(cls: type[Message], values: dict[str, Any]) -> Message:
    msg = cls()
    _fill(msg, values)
    return msg


def _fill(msg: Message, values: dict[str, Any]) -> None:
    desc = msg.DESCRIPTOR
    for name, value in values.items():
        f = desc.fields_by_name[name]
        target: Any = getattr(msg, name) if f.type == d.FieldDescriptor.TYPE_MESSAGE or \
            f.is_repeated else None
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            vf = f.message_type.fields_by_name["value"]
            for k, v in value.items():
                if vf.type == d.FieldDescriptor.TYPE_MESSAGE:
                    _fill(target[k], v)
                else:
                    target[k] = v
        elif f.is_repeated:
            for v in value:
                if f.type == d.FieldDescriptor.TYPE_MESSAGE:
                    _fill(target.add(), v)
                else:
                    target.append(v)
        elif f.type == d.FieldDescriptor.TYPE_MESSAGE:
            msg_field: Message = getattr(msg, name)
            msg_field.SetInParent()
            _fill(msg_field, value)
        else:
            setattr(msg, name, value)


# ---- wire-level extras a typed client cannot send

def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _key(number: int, wire: int) -> bytes:
    return _varint(number << 3 | wire)


def wire_extras(desc: Any) -> st.SearchStrategy[bytes]:
    """Bytes to append to a serialised ``desc``: overflowing varints on its integer
    fields, invalid UTF-8 on its string fields, unknown fields."""
    options: list[st.SearchStrategy[bytes]] = [
        st.builds(lambda n, v: _key(n, 0) + _varint(v), st.integers(1000, 2**29 - 1),
                  st.integers(0, 2**64 - 1)),
        st.builds(lambda n, b: _key(n, 2) + _varint(len(b)) + b, st.integers(1000, 5000),
                  st.binary(max_size=32)),
    ]
    ints = [f.number for f in desc.fields if f.type in _VARINT_TYPES]
    if ints:
        # A 10-byte varint past the field's width (int32 = 2**64 - 1, ...).
        options.append(st.builds(lambda n, v: _key(n, 0) + _varint(v), st.sampled_from(ints),
                                 st.integers(2**32, 2**64 - 1)))
    strs = [f.number for f in desc.fields if f.type == d.FieldDescriptor.TYPE_STRING]
    if strs:
        options.append(st.builds(lambda n, b: _key(n, 2) + _varint(len(b)) + b,
                                 st.sampled_from(strs),
                                 st.sampled_from([b"\xff", b"\xc3\x28", b"a\xed\xa0\x80b",
                                                  b"\xf8\x88\x80\x80\x80"])))
    return st.lists(st.one_of(*options), max_size=2).map(b"".join)


def _pin(method: Method, values: dict[str, Any]) -> dict[str, Any]:
    """Keep a few requests from doing real work for a long time: a log tail or a release
    output never follows (a follow streams until cancelled: not a refusal to check), and
    a stack build never names the default stack (debootstrap, minutes)."""
    if method.path in ("/dynod.v1.Logs/Tail", "/dynod.v1.OneOff/ReleaseOutput"):
        values.pop("follow", None)
    if method.path == "/dynod.v1.Stacks/Build":
        values["name"] = "fuzz-" + str(values.get("name", ""))[:20]
    return values


def requests(method: Method) -> st.SearchStrategy[list[bytes]]:
    """One request (or a stream of up to three) for ``method``, serialised, with extras."""
    desc = method.request.DESCRIPTOR
    one = st.builds(lambda v, extra: build(method.request, _pin(method, v)).SerializeToString()
                    + extra, message_dicts(desc), wire_extras(desc))
    if method.client_streaming:
        return st.lists(one, max_size=3)
    return one.map(lambda b: [b])


# ---- calling and checking

@dataclass
class Outcome:
    method: str
    code: grpc.StatusCode
    details: str


@dataclass
class Tally:
    """What a run saw: examples and status codes per service, and every violation."""

    examples: Counter[str] = field(default_factory=Counter)
    codes: Counter[str] = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


def call(channel: grpc.Channel, method: Method, payloads: Sequence[bytes]) -> Outcome:
    """Send the raw payloads (no serialiser: the bytes as they are)."""
    raw: Any = channel  # grpc's stubs type the multicallables by their serialisers
    try:
        if method.client_streaming and method.server_streaming:
            _drain(raw.stream_stream(method.path)(iter(payloads), timeout=STREAM_DEADLINE))
        elif method.client_streaming:
            raw.stream_unary(method.path)(iter(payloads), timeout=UNARY_DEADLINE)
        elif method.server_streaming:
            _drain(raw.unary_stream(method.path)(payloads[0], timeout=STREAM_DEADLINE))
        else:
            raw.unary_unary(method.path)(payloads[0], timeout=UNARY_DEADLINE)
    except grpc.RpcError as exc:
        return Outcome(method.path, exc.code(), exc.details() or "")
    return Outcome(method.path, grpc.StatusCode.OK, "")


def _drain(stream: Any) -> None:
    for i, _ in enumerate(stream):
        if i >= STREAM_READ:
            stream.cancel()
            return


def dump(db: Path) -> str:
    """Every row of the state database (read only), for "unchanged on refusal"."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return "\n".join(conn.iterdump())
    finally:
        conn.close()


def ensure_app(channel: grpc.Channel) -> None:
    from dynod.v1 import apps_pb2  # noqa: PLC0415 - keeps the module's imports generic

    try:
        channel.unary_unary("/dynod.v1.Apps/Create",
                            request_serializer=apps_pb2.CreateAppRequest.SerializeToString)(
            apps_pb2.CreateAppRequest(name=APP), timeout=UNARY_DEADLINE)
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.ALREADY_EXISTS:
            raise


def fuzz_service(channel: grpc.Channel, service: str, examples: int, db: Path | None,
                 tally: Tally) -> None:
    """Drive every RPC of ``service`` with ``examples`` generated calls in all."""
    ms = [m for m in methods() if m.service == service]
    strategy = st.sampled_from(ms).flatmap(lambda m: st.tuples(st.just(m), requests(m)))
    started = time.monotonic()

    @settings(max_examples=examples, deadline=None, database=None,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck),
              report_multiple_bugs=False)
    @given(strategy)
    def run(case: tuple[Method, list[bytes]]) -> None:
        method, payloads = case
        ensure_app(channel)
        before = dump(db) if db is not None else None
        outcome = call(channel, method, payloads)
        tally.examples[service] += 1
        tally.codes[f"{method.path} {outcome.code.name}"] += 1
        if outcome.code in BAD_CODES:
            tally.violations.append(f"{method.path}: {outcome.code.name}: {outcome.details} "
                                    f"(request {payloads[0][:200]!r})")
        elif outcome.code != grpc.StatusCode.OK and before is not None and db is not None:
            after = dump(db)
            if after != before:
                tally.violations.append(
                    f"{method.path}: refused ({outcome.code.name}: {outcome.details}) but "
                    f"changed the state: {_diff(before, after)} (request {payloads[0][:200]!r})")

    run()
    tally.seconds[service] = round(time.monotonic() - started, 1)


def _diff(before: str, after: str) -> str:
    a, b = set(before.splitlines()), set(after.splitlines())
    return f"-{sorted(a - b)[:3]} +{sorted(b - a)[:3]}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--socket", default="/run/dynod/dynod.sock")
    parser.add_argument("--db", default="/var/lib/dynod/state.db")
    parser.add_argument("--examples", type=int, default=50, help="per service")
    parser.add_argument("--service", action="append", help="only these (dynod.v1.Apps)")
    args = parser.parse_args(argv)
    tally = Tally()
    with grpc.insecure_channel(f"unix:{args.socket}", options=[
            ("grpc.max_send_message_length", 8 << 20)]) as channel:
        for service in args.service or services():
            fuzz_service(channel, service, args.examples, Path(args.db), tally)
            codes = Counter({k.split()[1]: 0 for k in tally.codes})
            for key, n in tally.codes.items():
                if key.startswith(f"/{service}/"):
                    codes[key.split()[1]] += n
            seen = ", ".join(f"{c} {n}" for c, n in codes.most_common() if n)
            print(f"{service}: {tally.examples[service]} examples in "
                  f"{tally.seconds[service]} s ({seen})", file=sys.stderr, flush=True)
    json.dump({"examples": tally.examples, "codes": tally.codes, "seconds": tally.seconds,
               "violations": tally.violations}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
