"""Users and their API tokens: add a user (root), sign in with a password for a token,
authenticate a call's token, list and revoke tokens.

A small surface a web dashboard reuses as it is: :func:`sign_in` checks a password
(slowed by :class:`Throttle`) and hands out a token; :func:`authenticate` turns a
token back into its user.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from dynod.errors import (
    AlreadyExists,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unauthenticated,
)
from dynod.model.users import (
    TOKEN_ID_RE,
    Token,
    User,
    check_password,
    hash_password,
    new_password,
    new_token,
    token_hash,
    validate_email,
)
from dynod.store.protocol import Store

# Heroku: a CLI login's token lasts a year (heroku/cli auth:login --expires-in).
DEFAULT_TOKEN_LIFETIME = timedelta(days=365)
# The longest lifetime a token may ask for; past it a date overflows (year 9999).
MAX_TOKEN_LIFETIME = timedelta(days=100 * 365)


def token_lifetime(seconds: int) -> timedelta:
    """A token's lifetime from a request's seconds (0 or less: the default, a year).
    Raises InvalidArgument past MAX_TOKEN_LIFETIME."""
    if seconds <= 0:
        return DEFAULT_TOKEN_LIFETIME
    if seconds > MAX_TOKEN_LIFETIME.total_seconds():
        raise InvalidArgument(
            f"token lifetime {seconds} s is longer than {MAX_TOKEN_LIFETIME.days} days; "
            "ask for a shorter one (or 0 for a year)")
    return timedelta(seconds=seconds)
LOGIN_FIX = "run `dynoctl login --host HOST` to sign in again"


def _now() -> datetime:
    return datetime.now(UTC)


def add_user(store: Store, email: str, *, reset: bool = False) -> tuple[User, str]:
    """A user with a new one-time password (returned once, stored only hashed).
    ``reset`` gives an existing user a new password and revokes their tokens. Raises
    InvalidArgument for a malformed address, AlreadyExists (without ``reset``)."""
    email = validate_email(email)
    password = new_password()
    user = User(email=email, password_hash=hash_password(password), created_at=_now())
    with store.write() as tx:
        old = tx.user(email)
        if old is not None and not reset:
            raise AlreadyExists(f"user {email} already exists; give them a new password "
                                f"with `dynoctl users:add {email} --reset`")
        if old is not None:
            user = User(email, user.password_hash, old.created_at)
            for token in tx.tokens(email):
                tx.remove_token(token.id)
        tx.put_user(user)
    return user, password


def list_users(store: Store) -> list[User]:
    with store.read() as tx:
        return tx.users()


@dataclass
class Throttle:
    """Failed sign-ins per (email, address): after ``free`` failures each further
    attempt must wait twice as long as the last (1 s, 2 s, 4 s ... ``cap``), so a
    guesser gets a few tries a minute while the user who mistyped waits a second.
    Memory only: a restart forgets it, which costs a guesser a restart of dynod."""

    free: int = 3
    cap: float = 300.0
    clock: Callable[[], float] = field(default=lambda: datetime.now(UTC).timestamp())
    _failures: dict[tuple[str, str], tuple[int, float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def wait_left(self, email: str, address: str) -> float:
        with self._lock:
            count, last = self._failures.get((email, address), (0, 0.0))
        if count < self.free:
            return 0.0
        delay = min(self.cap, 2.0 ** (count - self.free))
        return max(0.0, last + delay - self.clock())

    def failed(self, email: str, address: str) -> None:
        with self._lock:
            count, _ = self._failures.get((email, address), (0, 0.0))
            self._failures[(email, address)] = (count + 1, self.clock())

    def succeeded(self, email: str, address: str) -> None:
        with self._lock:
            self._failures.pop((email, address), None)


def sign_in(store: Store, throttle: Throttle, email: str, password: str, address: str, *,
            description: str, expires_in: timedelta | None = DEFAULT_TOKEN_LIFETIME,
            ) -> tuple[Token, str]:
    """A new token for the user whose password this is: (its record, the token, shown
    once). Raises InvalidArgument (malformed address), ResourceExhausted (too many
    failures, with the wait), Unauthenticated (wrong email or password)."""
    email = validate_email(email)
    wait = throttle.wait_left(email, address)
    if wait > 0:
        raise ResourceExhausted(
            f"too many failed sign-ins for {email} from {address}; wait {wait:.0f} s and "
            "try again (or ask your dynod administrator for a new password)")
    with store.read() as tx:
        user = tx.user(email)
    # The hash is computed for an unknown user too, so timing does not tell who exists.
    ok = check_password(password, user.password_hash if user else hash_password(""))
    if user is None or not ok:
        throttle.failed(email, address)
        raise Unauthenticated(
            f"wrong email or password for {email}; check both, or ask your dynod "
            f"administrator for a new password (`dynoctl users:add {email} --reset`)")
    throttle.succeeded(email, address)
    secret = new_token()
    now = _now()
    token = Token(id=str(uuid.uuid4()), email=email, hash=token_hash(secret),
                  description=description, created_at=now,
                  expires_at=None if expires_in is None else now + expires_in)
    with store.write() as tx:
        tx.add_token(token)
    return token, secret


def authenticate(store: Store, secret: str, now: datetime | None = None) -> Token:
    """The token's record. Raises Unauthenticated for an unknown (revoked) or expired
    token, with the fix."""
    if not secret:
        raise Unauthenticated(f"not logged in; {LOGIN_FIX}")
    with store.read() as tx:
        token = tx.token_by_hash(token_hash(secret))
    if token is None:
        raise Unauthenticated(f"your token is not valid (revoked, or its user was "
                              f"removed); {LOGIN_FIX}")
    if token.expires_at is not None and token.expires_at <= (now or _now()):
        raise Unauthenticated(f"your token expired at {token.expires_at:%Y-%m-%d %H:%M} "
                              f"UTC; {LOGIN_FIX}")
    return token


def list_tokens(store: Store, email: str) -> list[Token]:
    with store.read() as tx:
        return tx.tokens(email)


def revoke_token(store: Store, email: str | None, token_id: str) -> Token:
    """Revoke one of ``email``'s tokens (any user's when None: the admin). Raises
    NotFound naming the fix."""
    with store.write() as tx:
        tokens = tx.tokens(email) if email else [
            t for u in tx.users() for t in tx.tokens(u.email)]
        found = [t for t in tokens if t.id == token_id] if TOKEN_ID_RE.match(token_id) else []
        if not found:
            raise NotFound(f"no authorization {token_id!r}; list yours with "
                           "`dynoctl authorizations`")
        tx.remove_token(token_id)
    return found[0]
