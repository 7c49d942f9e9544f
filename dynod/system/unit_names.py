"""The names of dynod's systemd units: systemd's escaping and dynod's naming scheme.

A dyno unit is ``dynod-<app>-<type>.<n>-<gen>.service`` in ``dynod-<app>.slice`` (a child of
``dynod.slice`` by systemd's dash rule), app and type escaped the way ``systemd-escape``
does, so an app called ``my-shop`` cannot land in the slice of an app called ``my``.
``gen`` is the app's rollout generation: old and new dynos of a rollout run side by side
under distinct names, while the user-facing dyno name stays ``web.1`` (``DYNOD_DYNO``).
A build step is ``dynod-build-<app>-<id8>-<step>.service``, never a dyno's name. Pure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from dynod.errors import InvalidArgument

ROOT_SLICE = "dynod.slice"
UNIT_PREFIX = "dynod-"

_VALID = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:_.")


def escape(text: str) -> str:
    """systemd's string escaping (``systemd-escape TEXT``, not ``--path``): ``/``
    becomes ``-``, a leading ``.`` and every byte outside ``[A-Za-z0-9:_.]`` becomes
    ``\\xNN``."""
    out: list[str] = []
    for i, ch in enumerate(text):
        if ch == "/":
            out.append("-")
        elif ch in _VALID and not (i == 0 and ch == "."):
            out.append(ch)
        else:
            out.extend(f"\\x{b:02x}" for b in ch.encode())
    return "".join(out)


_ESCAPED = re.compile(rb"\\x([0-9a-fA-F]{2})")


def unescape(text: str) -> str:
    """The inverse of ``escape`` (``systemd-escape --unescape``)."""
    raw = text.replace("-", "/").encode()
    return _ESCAPED.sub(lambda m: bytes([int(m.group(1), 16)]), raw).decode()


def _check_name(what: str, value: str) -> None:
    if not value:
        raise InvalidArgument(f"{what} must not be empty")


def slice_name(app: str) -> str:
    _check_name("app name", app)
    return f"{UNIT_PREFIX}{escape(app)}.slice"


def unit_name(app: str, process_type: str, number: int, generation: int = 1) -> str:
    """``dynod-<app>-<type>.<n>-<gen>.service``, app and type escaped."""
    _check_name("app name", app)
    _check_name("process type", process_type)
    if number < 1:
        raise InvalidArgument(f"dyno number {number} must be 1 or more")
    if generation < 1:
        raise InvalidArgument(f"generation {generation} must be 1 or more")
    return f"{UNIT_PREFIX}{escape(app)}-{escape(process_type)}.{number}-{generation}.service"


@dataclass(frozen=True)
class DynoName:
    """What a dyno unit's name says."""

    app: str
    process_type: str
    number: int
    generation: int = 1

    @property
    def dyno(self) -> str:
        return f"{self.process_type}.{self.number}"


_UNIT = re.compile(r"^dynod-([^-]+)-([^-]+)\.([1-9][0-9]*)-([1-9][0-9]*)\.service$")


def parse_unit_name(name: str) -> DynoName | None:
    """App, type, number and generation of a dyno unit; None for any other unit."""
    m = _UNIT.match(name)
    if m is None:
        return None
    return DynoName(unescape(m.group(1)), unescape(m.group(2)), int(m.group(3)),
                    int(m.group(4)))


def build_unit_name(app: str, build_id: str, step: int) -> str:
    """``dynod-build-<app>-<id8>-<step>.service``: never a dyno unit's name (that has
    exactly two unescaped dashes after the prefix and ends in ``.<n>``)."""
    _check_name("app name", app)
    return f"{UNIT_PREFIX}build-{escape(app)}-{escape(build_id[:8])}-{step}.service"

