"""The dashboard's session and CSRF tokens.

The session is an API token (:func:`dynod.control.users.sign_in`, kept hashed in the
store) in an HttpOnly, Secure, SameSite=Strict cookie: revoking it (sign out, or
``dynoctl authorizations:revoke``) ends the session, and no secret is ever in a URL.

CSRF: every form carries a token the page was rendered with. Signed in, it is an HMAC
of the session token (a page of another site can neither read the cookie nor compute
it); on the sign-in page, before any session, a random value also set in a cookie
(double submit). OWASP's CSRF cheat sheet describes both patterns.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

SESSION_COOKIE = "dynod_session"
SIGNIN_COOKIE = "dynod_signin"
CSRF_FIELD = "csrf_token"


def csrf_for(session_token: str) -> str:
    return hmac.new(session_token.encode(), b"dynod-dashboard-csrf", hashlib.sha256).hexdigest()


def new_signin_token() -> str:
    return secrets.token_urlsafe(32)


def csrf_ok(expected: str, given: str) -> bool:
    return bool(expected) and bool(given) and hmac.compare_digest(expected, given)
