"""The users aggregate of the etcd store (users, tokens, app collaborators), beside
``etcd.py`` as ``sqlite_users.py`` is beside ``sqlite.py``."""

from __future__ import annotations

import json
from dataclasses import replace

from dynod.model.users import Collaborator, Role, Token, User
from dynod.store.etcd_codec import decode, encode
from dynod.store.etcd_kv import KvTx


class EtcdUsersTx:
    """:class:`~dynod.store.protocol.UsersTx` for :class:`~dynod.store.etcd.EtcdTx`."""

    kv: KvTx

    def user(self, email: str) -> User | None:
        text = self.kv.get(f"users/{email}")
        return None if text is None else decode(User, text)

    def users(self) -> list[User]:
        return [decode(User, v) for _, v in self.kv.scan("users/")]

    def put_user(self, user: User) -> None:
        old = self.user(user.email)
        if old is not None:
            user = replace(old, password_hash=user.password_hash)
        self.kv.put(f"users/{user.email}", encode(user))

    def _tokens(self) -> list[Token]:
        return [decode(Token, v) for _, v in self.kv.scan("tokens/")]

    def token_by_hash(self, digest: str) -> Token | None:
        return next((t for t in self._tokens() if t.hash == digest), None)

    def tokens(self, email: str) -> list[Token]:
        return sorted((t for t in self._tokens() if t.email == email),
                      key=lambda t: t.created_at)

    def add_token(self, token: Token) -> None:
        self.kv.put(f"tokens/{token.id}", encode(token))

    def remove_token(self, token_id: str) -> bool:
        found = self.kv.get(f"tokens/{token_id}") is not None
        self.kv.delete(f"tokens/{token_id}")
        return found

    def collaborators(self, app: str) -> list[Collaborator]:
        return [replace(decode(Collaborator, v), role=Role.COLLABORATOR)
                for _, v in self.kv.scan(f"collaborators/{app}/")]

    def collaborated_apps(self, email: str) -> list[str]:
        return sorted(k.split("/")[1] for k, _ in self.kv.scan("collaborators/")
                      if k.split("/", 2)[2] == email)

    def add_collaborator(self, collaborator: Collaborator) -> None:
        key = f"collaborators/{collaborator.app}/{collaborator.email}"
        if self.kv.get(f"apps/{collaborator.app}") is not None and self.kv.get(key) is None:
            self.kv.put(key, encode(collaborator))

    def remove_collaborator(self, app: str, email: str) -> bool:
        found = self.kv.get(f"collaborators/{app}/{email}") is not None
        self.kv.delete(f"collaborators/{app}/{email}")
        return found

    def set_app_owner(self, app: str, owner: str) -> None:
        text = self.kv.get(f"apps/{app}")
        if text is not None:

            doc = json.loads(text)
            doc["owner"] = owner
            self.kv.put(f"apps/{app}", json.dumps(doc, sort_keys=True))
