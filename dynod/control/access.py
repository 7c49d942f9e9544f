"""Who may use an app: its owner (who created it, or to whom it was transferred) and
its collaborators. A collaborator may deploy, scale, configure and run; only the owner
may destroy or transfer the app (Heroku's personal apps)."""

from __future__ import annotations

from datetime import UTC, datetime

from dynod.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from dynod.model.users import Collaborator, Role, validate_email
from dynod.store import reads
from dynod.store.protocol import Store, Tx


def no_access(app: str) -> PermissionDenied:
    # Heroku's words (git push and the API's 403 alike).
    return PermissionDenied(f"You do not have access to the app {app}.")


def may_use(tx: Tx, email: str, app: str) -> bool:
    found = tx.app(app)
    return found is not None and (
        found.owner == email or email in {c.email for c in tx.collaborators(app)})


def require(store: Store, email: str, app: str, *, owner: bool = False) -> None:
    """Raises PermissionDenied unless ``email`` may use ``app`` (own it, if ``owner``).
    An app the user may not see reads the same as one that does not exist."""
    with store.read() as tx:
        found = tx.app(app)
        if found is None or not may_use(tx, email, app):
            raise no_access(app)
        if owner and found.owner != email:
            raise PermissionDenied(
                f"only the owner of {app} ({found.owner}) may do this; ask them, or to "
                f"have it transferred to you (`dynoctl apps:transfer {email} -a {app}`)")


def visible_apps(store: Store, email: str) -> set[str]:
    with store.read() as tx:
        return {a.name for a in tx.apps() if a.owner == email} | set(
            tx.collaborated_apps(email))


def list_access(store: Store, app: str) -> list[Collaborator]:
    """The owner first, then collaborators by email. Raises NotFound."""
    with store.read() as tx:
        found = reads.require_app(tx, app)
        return [Collaborator(app, found.owner, Role.OWNER, found.created_at),
                *tx.collaborators(app)]


def _require_user(tx: Tx, email: str) -> None:
    if tx.user(email) is None:
        raise NotFound(f"there is no user {email}; ask your dynod administrator to add "
                       f"them (`dynoctl users:add {email}`)")


def add_collaborator(store: Store, app: str, email: str) -> Collaborator:
    """Raises InvalidArgument (malformed address), NotFound (no such user or app),
    FailedPrecondition (the owner, or already a collaborator)."""
    email = validate_email(email)
    with store.write() as tx:
        found = reads.require_app(tx, app)
        _require_user(tx, email)
        if found.owner == email:
            raise FailedPrecondition(f"{email} owns {app} already")
        if email in {c.email for c in tx.collaborators(app)}:
            raise FailedPrecondition(f"{email} is already a collaborator on {app}")
        collaborator = Collaborator(app, email, Role.COLLABORATOR, datetime.now(UTC))
        tx.add_collaborator(collaborator)
    return collaborator


def remove_collaborator(store: Store, app: str, email: str) -> None:
    """Raises InvalidArgument (malformed address, or the owner), NotFound."""
    email = validate_email(email)
    with store.write() as tx:
        found = reads.require_app(tx, app)
        if found.owner == email:
            raise InvalidArgument(
                f"{email} owns {app} and cannot be removed from it; the owner can "
                f"transfer it first (`dynoctl apps:transfer EMAIL -a {app}`)")
        if not tx.remove_collaborator(app, email):
            raise NotFound(f"{email} is not a collaborator on {app}; see `dynoctl access "
                           f"-a {app}`")


def transfer(store: Store, app: str, email: str) -> str:
    """Make ``email`` the owner; the previous owner stays on as a collaborator (as on
    Heroku). Returns the previous owner. Raises InvalidArgument, NotFound,
    FailedPrecondition."""
    email = validate_email(email)
    with store.write() as tx:
        found = reads.require_app(tx, app)
        _require_user(tx, email)
        if found.owner == email:
            raise FailedPrecondition(f"{email} owns {app} already")
        tx.remove_collaborator(app, email)
        tx.set_app_owner(app, email)
        if "@" in found.owner:  # not root's apps made on the server
            tx.add_collaborator(Collaborator(app, found.owner, Role.COLLABORATOR,
                                             datetime.now(UTC)))
    return found.owner
