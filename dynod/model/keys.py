"""dynod.model.keys"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import struct
from dataclasses import dataclass
from datetime import datetime

from dynod.errors import InvalidArgument

KEY_TYPES = frozenset({
    "ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521", "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
})


COMMENT_RE = re.compile(r"^[\x21-\x7e][\x20-\x7e]{0,199}$")


KEY_ID_RE = re.compile(r"^k[0-9a-f]{12}$")


OPTIONS = "no-port-forwarding,no-X11-forwarding,no-agent-forwarding,no-pty,no-user-rc"


@dataclass(frozen=True)
class Key:
    id: str
    owner: str
    type: str
    blob: str  # base64
    comment: str
    fingerprint: str
    created_at: datetime

    @property
    def public_key(self) -> str:
        return " ".join(p for p in (self.type, self.blob, self.comment) if p)


def parse_public_key(text: str) -> tuple[str, str, str, str]:
    """(type, base64 blob, comment, fingerprint) of one public key line.

    Raises InvalidArgument naming what is wrong (a private key, options, junk)."""
    line = text.strip()
    if "PRIVATE KEY" in line:
        raise InvalidArgument("that is a private key; give the public one (the .pub file)")
    if "\n" in line:
        raise InvalidArgument("give exactly one public key (one line of a .pub file)")
    parts = line.split(None, 2)
    if len(parts) < 2 or parts[0] not in KEY_TYPES:
        raise InvalidArgument(
            "not an ssh public key; give a line like 'ssh-ed25519 AAAA... you@host' "
            "(the content of ~/.ssh/id_ed25519.pub)")
    kind, blob = parts[0], parts[1]
    comment = parts[2].strip() if len(parts) > 2 else ""
    try:
        raw = base64.b64decode(blob, validate=True)
        (length,) = struct.unpack(">I", raw[:4])
        inner = raw[4:4 + length].decode()
    except (binascii.Error, struct.error, UnicodeDecodeError) as exc:
        raise InvalidArgument(f"the {kind} key's data is not valid base64 ({exc})") from exc
    if inner != kind:
        raise InvalidArgument(f"the key says it is {kind} but its data is {inner!r}")
    if comment and not COMMENT_RE.match(comment):
        raise InvalidArgument("the key's comment has characters that are not allowed; "
                              "use printable ASCII")
    digest = base64.b64encode(hashlib.sha256(raw).digest()).decode().rstrip("=")
    return kind, blob, comment, f"SHA256:{digest}"


def render_authorized_keys(keys: list[Key], shell: list[str]) -> str:
    """authorized_keys for the git user: each key may only run ``shell KEY_ID``."""
    lines = ["# Written by dynod from its state; changes here are overwritten.",
             "# Manage keys with `dynoctl keys`, `keys:add`, `keys:remove`."]
    for key in keys:
        if not KEY_ID_RE.match(key.id) or key.type not in KEY_TYPES:
            continue
        command = " ".join([*shell, key.id]).replace("\\", "\\\\").replace('"', '\\"')
        lines.append(f'command="{command}",{OPTIONS} {key.type} {key.blob}')
    return "\n".join(lines) + "\n"


