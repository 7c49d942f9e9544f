"""The etcd store's values: ``dynod.model``'s frozen dataclasses as JSON objects and
back, driven by their type hints (datetimes as ISO 8601, mappings as objects, tuples as
lists, enums by value), so a record is stored whole and read back equal."""

from __future__ import annotations

import dataclasses
import enum
import json
import types
import typing
from collections.abc import Mapping
from datetime import datetime
from functools import cache
from typing import Any, TypeVar

T = TypeVar("T")


def _plain(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def encode(record: object) -> str:
    """The JSON text of a model dataclass."""
    return json.dumps(_plain(record), sort_keys=True, separators=(",", ":"))


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _typed(hint: Any, value: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        return _typed(inner[0], value)
    if origin is tuple:
        item = typing.get_args(hint)[0]
        return tuple(_typed(item, v) for v in value)
    if origin in (Mapping, dict) or hint is MappingProxyType:
        args = typing.get_args(hint)
        item = args[1] if len(args) == 2 else Any
        return MappingProxyType({k: _typed(item, v) for k, v in value.items()})
    if hint is datetime:
        return datetime.fromisoformat(value)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return hint(value)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _record(hint, value)
    if hint is int:
        return int(value)
    return value


MappingProxyType = types.MappingProxyType


def _record(cls: type[T], doc: Mapping[str, Any]) -> T:
    hints = _hints(cls)  # type: ignore[arg-type]
    kwargs = {f.name: _typed(hints[f.name], doc[f.name])
              for f in dataclasses.fields(cls) if f.name in doc}  # type: ignore[arg-type]
    return cls(**kwargs)


def decode(cls: type[T], text: str) -> T:
    """The ``cls`` record of JSON ``text`` written by :func:`encode`."""
    return _record(cls, json.loads(text))
