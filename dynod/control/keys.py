"""SSH keys that may push: stored in the state, rendered into the git user's
``authorized_keys`` with a forced command per key (sshd runs nothing else for them).

An entry is ``command="<git shell> <key id>",no-port-forwarding,... <type> <base64>``:
the key can only reach ``dynod-git-shell``, which knows which key pushed, so the build
is by that key's owner.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from dynod.errors import AlreadyExists, InvalidArgument, NotFound
from dynod.model.keys import (
    Key,
    parse_public_key,
)

if TYPE_CHECKING:
    from dynod.store.sqlite import Store


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
