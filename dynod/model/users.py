"""dynod.model.users: people who sign in from their own machines, the tokens they hold
and who may use which app.

Secrets are never stored: a password as scrypt's output (hashlib, the stdlib's
memory-hard KDF), a token as its SHA-256 (a token is 256 random bits, so a fast hash
is enough: there is nothing to guess).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from dynod.errors import InvalidArgument

# Deliberately plain: one @, a dot in the domain, no spaces or quotes (what Heroku's
# sign-up form takes in practice). The address is a name here, never mailed.
EMAIL_RE = re.compile(r"^[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(\.[A-Za-z0-9-]{1,63})+$")

# scrypt as OWASP's cheat sheet recommends it (N=2^17, r=8, p=1: 128 MiB, ~0.3 s here).
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**17, 8, 1
SCRYPT_MAXMEM = 256 * 1024 * 1024
TOKEN_BYTES = 32  # 256 bits from the kernel's CSPRNG (secrets.token_urlsafe)
TOKEN_PREFIX = "dynod_"  # noqa: S105 (not a secret: marks a token in logs)
TOKEN_ID_RE = re.compile(r"^[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}$")


class Role(StrEnum):
    OWNER = "owner"
    COLLABORATOR = "collaborator"


@dataclass(frozen=True)
class User:
    email: str
    password_hash: str  # "scrypt$N$r$p$salt$hash", base64 parts
    created_at: datetime


@dataclass(frozen=True)
class Token:
    """A long-lived API token (Heroku's OAuth authorization). Only its hash is kept."""

    id: str  # a UUID, shown by `authorizations`, never a secret
    email: str
    hash: str  # sha256 hex of the token
    description: str
    created_at: datetime
    expires_at: datetime | None


@dataclass(frozen=True)
class Collaborator:
    app: str
    email: str
    role: Role
    created_at: datetime


def validate_email(email: str) -> str:
    """The address, lower-cased. Raises InvalidArgument naming the fix."""
    if not EMAIL_RE.match(email):
        raise InvalidArgument(
            f"{email!r} is not an email address; give one like alice@example.com")
    return email.lower()


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R,
                            p=SCRYPT_P, maxmem=SCRYPT_MAXMEM)
    b64 = base64.b64encode
    return (f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}$"
            f"{b64(salt).decode()}${b64(digest).decode()}")


def check_password(password: str, stored: str) -> bool:
    """Constant-time comparison; False for a record in a format this code does not know."""
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n),
                             r=int(r), p=int(p), maxmem=SCRYPT_MAXMEM)
    except ValueError:
        return False
    return hmac.compare_digest(got, base64.b64decode(digest))


def new_password() -> str:
    """A one-time password for the admin to hand over: 20 base32 characters, 100 bits."""
    return base64.b32encode(secrets.token_bytes(13)).decode()[:20].lower()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
