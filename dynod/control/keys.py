"""SSH keys that may push: stored in the state, rendered into the git user's
``authorized_keys`` with a forced command per key (sshd runs nothing else for them).

An entry is ``command="<git shell> <key id>",no-port-forwarding,... <type> <base64>``:
the key can only reach ``dynod-git-shell``, which knows which key pushed, so the build
is by that key's owner.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from dynod.control import access
from dynod.errors import AlreadyExists, InvalidArgument, NotFound
from dynod.model.events import EventBus, KeysChanged
from dynod.model.keys import Key, parse_public_key, render_authorized_keys
from dynod.store.protocol import Store


def list_keys(store: Store) -> list[Key]:
    """By id."""
    with store.read() as tx:
        return tx.ssh_keys()


def get_key(store: Store, key_id: str) -> Key:
    """Raises NotFound."""
    for key in list_keys(store):
        if key.id == key_id:
            return key
    raise NotFound(f"key {key_id!r} is not known; add it with `dynoctl keys:add`")


def add_key(store: Store, events: EventBus, text: str, owner: str) -> Key:
    """Publishes KeysChanged. Raises InvalidArgument, AlreadyExists."""
    kind, blob, comment, fingerprint = parse_public_key(text)
    key_id = "k" + hashlib.sha256(fingerprint.encode()).hexdigest()[:12]
    key = Key(id=key_id, owner=owner, type=kind, blob=blob, comment=comment,
              fingerprint=fingerprint, created_at=datetime.now(UTC))
    with store.write() as tx:
        for other in tx.ssh_keys():
            if other.fingerprint == fingerprint:
                raise AlreadyExists(f"key {fingerprint} is already added (by {other.owner})")
        tx.add_key(key)
    events.publish(KeysChanged(key.id))
    return key


def require_push(store: Store, key: Key, app: str) -> None:
    """Raises PermissionDenied (Heroku's words) unless the key's owner may push to
    ``app``: a key added on the server (by a Unix user, the administrator) may push to
    every app, a user's key to the apps that user owns or collaborates on."""
    if "@" in key.owner:
        access.require(store, key.owner, app)


def remove_key(store: Store, events: EventBus, which: str, owner: str | None = None) -> Key:
    """Remove the key whose id, fingerprint or comment is ``which`` (among ``owner``'s
    keys, if given); publishes KeysChanged. Raises NotFound, InvalidArgument when a
    comment matches several keys."""
    with store.write() as tx:
        found = [k for k in tx.ssh_keys() if which in (k.id, k.fingerprint, k.comment)
                 and owner in (None, k.owner)]
        if not found:
            raise NotFound(f"no key matches {which!r}; list them with `dynoctl keys`")
        if len(found) > 1:
            raise InvalidArgument(f"{len(found)} keys match {which!r}; give the key's id")
        tx.remove_key(found[0].id)
    events.publish(KeysChanged(found[0].id))
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


@dataclass(frozen=True)
class AuthorizedKeys:
    """The git user's authorized_keys, following the stored keys: the composition root
    syncs it at start (a restore, a reinstall) and after every KeysChanged.

    ``shell`` is the forced command without the key id (``dynod.cli.gitpush``'s).
    """

    store: Store
    home: Path
    shell: Sequence[str]

    def sync(self, _event: KeysChanged | None = None) -> None:
        """Write the file if what the store holds differs from it. In a cluster the
        composition root also calls this every few seconds: keys added through another
        machine's API raise no event here."""
        content = render_authorized_keys(list_keys(self.store), list(self.shell))
        try:
            if (self.home / ".ssh" / "authorized_keys").read_text() == content:
                return
        except OSError:
            pass
        write_authorized_keys(self.home, content)
