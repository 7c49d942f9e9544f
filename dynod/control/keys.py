"""SSH keys that may push: stored in the state, rendered into the git user's
``authorized_keys`` with a forced command per key (sshd runs nothing else for them).

An entry is ``command="<git shell> <key id>",no-port-forwarding,... <type> <base64>``:
the key can only reach ``dynod-git-shell``, which knows which key pushed, so the build
is by that key's owner.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
import struct
import tempfile
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from dynod.errors import AlreadyExists, InvalidArgument, NotFound

if TYPE_CHECKING:
    from dynod.store.sqlite import Store

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


def _to_doc(key: Key) -> str:
    doc = asdict(key)
    doc["created_at"] = key.created_at.isoformat()
    return json.dumps(doc, sort_keys=True)


def _from_doc(text: str) -> Key:
    doc = json.loads(text)
    doc["created_at"] = datetime.fromisoformat(doc["created_at"])
    return Key(**doc)


def list_keys(store: Store) -> list[Key]:
    with store.read() as tx:
        return [_from_doc(d) for d in tx.key_docs()]


def get_key(store: Store, key_id: str) -> Key:
    """Raises NotFound."""
    for key in list_keys(store):
        if key.id == key_id:
            return key
    raise NotFound(f"key {key_id!r} is not known; add it with `dynoctl keys:add`")


def add_key(store: Store, text: str, owner: str) -> Key:
    """Raises InvalidArgument, AlreadyExists."""
    kind, blob, comment, fingerprint = parse_public_key(text)
    key_id = "k" + hashlib.sha256(fingerprint.encode()).hexdigest()[:12]
    key = Key(id=key_id, owner=owner, type=kind, blob=blob, comment=comment,
              fingerprint=fingerprint, created_at=datetime.now(UTC))
    with store.write() as tx:
        for other in map(_from_doc, tx.key_docs()):
            if other.fingerprint == fingerprint:
                raise AlreadyExists(f"key {fingerprint} is already added (by {other.owner})")
        tx.put_key_doc(key.id, owner, fingerprint, _to_doc(key))
    return key


def remove_key(store: Store, which: str) -> Key:
    """Remove the key whose id, fingerprint or comment is ``which``. Raises NotFound,
    InvalidArgument when a comment matches several keys."""
    with store.write() as tx:
        found = [k for k in map(_from_doc, tx.key_docs())
                 if which in (k.id, k.fingerprint, k.comment)]
        if not found:
            raise NotFound(f"no key matches {which!r}; list them with `dynoctl keys`")
        if len(found) > 1:
            raise InvalidArgument(f"{len(found)} keys match {which!r}; give the key's id")
        tx.remove_key_doc(found[0].id)
        return found[0]


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


def write_authorized_keys(home: Path, content: str) -> Path:
    """Atomically replace ``home/.ssh/authorized_keys`` (root-owned, 0644, so the git
    user can neither change its forced commands nor add keys)."""
    ssh = home / ".ssh"
    ssh.mkdir(mode=0o755, parents=True, exist_ok=True)
    ssh.chmod(0o755)
    fd, tmp = tempfile.mkstemp(dir=ssh, prefix=".authorized_keys.")
    with os.fdopen(fd, "w") as f:
        f.write(content)
    Path(tmp).chmod(0o644)
    target = ssh / "authorized_keys"
    Path(tmp).replace(target)
    return target
