"""The closed set of errors the daemon may raise.

Every error the API returns is one of these; `dynod.api.errors` maps each to exactly one
gRPC status code. A message names the thing and says what to do, e.g.
``app "shop": no web process in the Procfile; add one, or scale another type``.
"""

from __future__ import annotations


class DynodError(Exception):
    """Base of every error dynod reports to a client. Never raised itself."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(DynodError):
    """The named thing does not exist."""


class AlreadyExists(DynodError):
    """A thing with that name exists already."""


class InvalidArgument(DynodError):
    """The request is malformed whatever the state is."""


class FailedPrecondition(DynodError):
    """The request is well formed but the current state does not allow it."""


class PermissionDenied(DynodError):
    """The caller may not do this."""


class Unavailable(DynodError):
    """A dependency (systemd, the router, the disk) cannot be reached now; retry."""


class ResourceExhausted(DynodError):
    """A limit was reached (config size, one-off dynos, disk)."""


class Aborted(DynodError):
    """A concurrent change won; retry the request."""


class Unauthenticated(DynodError):
    """The caller did not prove who it is (no token, a wrong, expired or revoked one)."""
