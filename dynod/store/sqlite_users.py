"""The users aggregate of the SQLite store (users, tokens, app collaborators), kept
beside ``sqlite.py`` so that module stays one screen per aggregate."""

from __future__ import annotations

import sqlite3
from datetime import datetime

from dynod.model.users import Collaborator, Role, Token, User


def _time(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


class SqliteUsersTx:
    """:class:`~dynod.store.protocol.UsersTx` for :class:`SqliteTx`."""

    db: sqlite3.Connection

    def _app_id(self, name: str) -> int | None:
        row = self.db.execute("SELECT id FROM apps WHERE name = ?", (name,)).fetchone()
        return None if row is None else int(row[0])

    def user(self, email: str) -> User | None:
        row = self.db.execute("SELECT email, password_hash, created_at FROM users"
                              " WHERE email = ?", (email,)).fetchone()
        return None if row is None else User(row[0], row[1], datetime.fromisoformat(row[2]))

    def users(self) -> list[User]:
        rows = self.db.execute("SELECT email, password_hash, created_at FROM users"
                               " ORDER BY email")
        return [User(r[0], r[1], datetime.fromisoformat(r[2])) for r in rows]

    def put_user(self, user: User) -> None:
        self.db.execute(
            "INSERT INTO users (email, password_hash, created_at) VALUES (?, ?, ?)"
            " ON CONFLICT (email) DO UPDATE SET password_hash = excluded.password_hash",
            (user.email, user.password_hash, user.created_at.isoformat()))

    def _token(self, r: tuple[str, ...]) -> Token:
        created = _time(r[4])
        assert created is not None
        return Token(id=r[0], email=r[1], hash=r[2], description=r[3], created_at=created,
                     expires_at=_time(r[5]))

    _TOKEN_COLUMNS = "id, email, hash, description, created_at, expires_at"  # noqa: S105

    def token_by_hash(self, digest: str) -> Token | None:
        row = self.db.execute(f"SELECT {self._TOKEN_COLUMNS} FROM tokens"  # noqa: S608
                              " WHERE hash = ?", (digest,)).fetchone()
        return None if row is None else self._token(row)

    def tokens(self, email: str) -> list[Token]:
        rows = self.db.execute(f"SELECT {self._TOKEN_COLUMNS} FROM tokens"  # noqa: S608
                               " WHERE email = ? ORDER BY created_at", (email,))
        return [self._token(r) for r in rows]

    def add_token(self, token: Token) -> None:
        self.db.execute(
            f"INSERT INTO tokens ({self._TOKEN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",  # noqa: S608
            (token.id, token.email, token.hash, token.description,
             token.created_at.isoformat(),
             None if token.expires_at is None else token.expires_at.isoformat()))

    def remove_token(self, token_id: str) -> bool:
        return self.db.execute("DELETE FROM tokens WHERE id = ?", (token_id,)).rowcount > 0

    def collaborators(self, app: str) -> list[Collaborator]:
        rows = self.db.execute(
            "SELECT a.name, c.email, c.created_at FROM collaborators c"
            " JOIN apps a ON a.id = c.app_id WHERE a.name = ? ORDER BY c.email", (app,))
        return [Collaborator(r[0], r[1], Role.COLLABORATOR, datetime.fromisoformat(r[2]))
                for r in rows]

    def collaborated_apps(self, email: str) -> list[str]:
        rows = self.db.execute(
            "SELECT a.name FROM collaborators c JOIN apps a ON a.id = c.app_id"
            " WHERE c.email = ? ORDER BY a.name", (email,))
        return [r[0] for r in rows]

    def add_collaborator(self, collaborator: Collaborator) -> None:
        app_id = self._app_id(collaborator.app)
        if app_id is None:
            return
        self.db.execute("INSERT OR IGNORE INTO collaborators (app_id, email, created_at)"
                        " VALUES (?, ?, ?)",
                        (app_id, collaborator.email, collaborator.created_at.isoformat()))

    def remove_collaborator(self, app: str, email: str) -> bool:
        app_id = self._app_id(app)
        return app_id is not None and self.db.execute(
            "DELETE FROM collaborators WHERE app_id = ? AND email = ?",
            (app_id, email)).rowcount > 0

    def set_app_owner(self, app: str, owner: str) -> None:
        self.db.execute("UPDATE apps SET owner = ? WHERE name = ?", (owner, app))
