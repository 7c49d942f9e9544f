"""The durable desired state as two protocols: :class:`Store` hands out transactions,
:class:`Tx` reads and writes whole records as the frozen dataclasses of ``dynod.model``.

:class:`Tx` is the union of one protocol per aggregate, so a reader finds what the
store keeps about releases in :class:`ReleasesTx` and a backend implements them one by
one. Nothing outside ``dynod.store`` writes SQL or imports a backend but the
composition root: SQLite (``sqlite.py``) is the embedded default, an etcd backend (when
dynod spans machines) implements these protocols and nothing else changes.

Records are keyed by app name; reads see the transaction's own writes. Methods never
check domain rules (``dynod.control`` does), and a write for an app that does not exist
changes nothing.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Protocol

from dynod.model.acm import AcmChallenge, AcmDomain
from dynod.model.addons import Addon, Attachment, Backup, BackupScheduleRecord
from dynod.model.apps import App
from dynod.model.builds import Build, BuildSettings
from dynod.model.domains import Domain
from dynod.model.drains import Drain
from dynod.model.formation import Process
from dynod.model.keys import Key
from dynod.model.releases import Release, ReleaseStatus
from dynod.model.slugs import Slug
from dynod.model.users import Collaborator, Token, User


class AppsTx(Protocol):
    """Apps, each with its own unprivileged uid (= gid), never reused after a delete."""

    def app(self, name: str) -> App | None: ...
    def apps(self) -> list[App]:
        """By name."""
        ...

    def add_app(self, app: App) -> None:
        """Add the app with the next uid and the default build settings."""
        ...

    def remove_app(self, name: str) -> list[str]:
        """Delete the app and all it owns; return checksums no slug uses any more."""
        ...

    def app_uid(self, name: str) -> int | None: ...


class AppSettingsTx(Protocol):
    """What an app's owner or its dynos set on it beside its records."""

    # The rollout generation: unit names carry it, so old and new dynos of one app run
    # side by side during a rollout.
    def generation(self, name: str) -> int | None: ...
    def set_generation(self, name: str, generation: int) -> None: ...
    # Maintenance mode: the router answers H80 (503).
    def maintenance(self, name: str) -> bool | None: ...
    def set_maintenance(self, name: str, on: bool) -> None: ...
    # The app features it has on (features:enable), by name.
    def features(self, name: str) -> set[str]: ...
    def set_feature(self, name: str, feature: str, on: bool) -> None: ...
    # Stack and buildpacks of the app's builds.
    def app_build_settings(self, name: str) -> BuildSettings | None: ...
    def set_app_build_settings(self, name: str, settings: BuildSettings) -> None: ...


class ReleasesTx(Protocol):
    """The append-only ledger of (slug, config) pairs; only the status ever changes."""

    def release(self, app: str, version: int) -> Release | None: ...
    def latest_release(self, app: str) -> Release | None: ...
    def latest_succeeded_release(self, app: str) -> Release | None: ...
    def releases(self, app: str, limit: int | None) -> list[Release]:
        """Newest first."""
        ...

    def add_release(self, release: Release) -> None: ...
    def set_release_status(self, app: str, version: int, status: ReleaseStatus,
                           failure: str = "") -> None:
        """``failure``: why, for a release whose web dynos never came up."""
        ...


class FormationTx(Protocol):
    """How many dynos of each process type, at which size (``command`` is not stored)."""

    def processes(self, app: str) -> list[Process]:
        """By type."""
        ...

    def put_process(self, app: str, process: Process) -> None: ...


class SlugsTx(Protocol):
    def slug(self, app: str, slug_id: str) -> Slug | None: ...
    def slug_layers(self, checksum: str) -> tuple[str, ...] | None:
        """The layers of the newest uploaded slug with ``checksum``; None if none."""
        ...

    def put_slug(self, slug: Slug) -> None:
        """Add it, or mark it uploaded."""
        ...


class DomainsTx(Protocol):
    """Custom host names; a host name belongs to at most one app."""

    def domain(self, hostname: str) -> Domain | None: ...
    def domains(self, app: str | None) -> list[Domain]:
        """By host name; every app's if ``app`` is None."""
        ...

    def add_domain(self, domain: Domain) -> None: ...
    def remove_domain(self, hostname: str) -> None: ...


class AcmTx(Protocol):
    """Automated Certificate Management: on or off per app, and ACME's last word per
    custom domain (a record goes with its domain)."""

    def acm(self, app: str) -> bool | None: ...
    def set_acm(self, app: str, on: bool) -> None: ...
    def acm_domain(self, hostname: str) -> AcmDomain | None: ...
    def acm_domains(self, app: str | None) -> list[AcmDomain]:
        """By host name; every app's when ``app`` is None."""
        ...

    def put_acm_domain(self, domain: AcmDomain) -> None: ...
    def remove_acm_domains(self, app: str) -> None: ...
    # The certificate ACM issued per host name (chain then key, PEM: what every
    # machine's router serves), beside the record; it goes with its domain.
    def acm_certs(self) -> dict[str, str]: ...
    def put_acm_cert(self, hostname: str, bundle: str) -> None:
        """Only for a domain that exists."""
        ...

    def remove_acm_cert(self, hostname: str) -> None: ...
    # The http-01 challenges of the orders in flight; they go with their domain.
    def acm_challenges(self) -> list[AcmChallenge]:
        """By host name, then token."""
        ...

    def put_acm_challenge(self, challenge: AcmChallenge) -> None:
        """Only for a domain that exists."""
        ...

    def remove_acm_challenge(self, hostname: str, token: str) -> None: ...


class BuildsTx(Protocol):
    def build(self, app: str, build_id: str) -> Build | None: ...
    def builds(self, app: str, limit: int | None) -> list[Build]:
        """Newest first."""
        ...

    def put_build(self, build: Build) -> None:
        """Add it, or replace it (a build's record changes once, when it finishes)."""
        ...


class KeysTx(Protocol):
    """The ssh keys that may push (as dynod's git user); fingerprints are unique."""

    def ssh_keys(self) -> list[Key]:
        """By id."""
        ...

    def add_key(self, key: Key) -> None: ...
    def remove_key(self, key_id: str) -> bool:
        """False if there was no such key."""
        ...


class DrainsTx(Protocol):
    """Log drains: tokens are unique, and so is a URL within an app. Removing an app
    removes its drains."""

    def drains(self, app: str | None = None) -> list[Drain]:
        """By app, then creation; every app's when ``app`` is None."""
        ...

    def add_drain(self, drain: Drain) -> None: ...
    def remove_drain(self, app: str, token: str) -> bool:
        """False if the app had no such drain."""
        ...


class AddonsTx(Protocol):
    """Add-ons (globally unique names, each owned by one app), their attachments (an
    add-on attached to an app under a name unique in that app) and Postgres backups
    (ids unique per app). Removing an app removes its attachments, the add-ons it owns
    with every attachment of them, and its backups."""

    def insert_addon(self, addon: Addon) -> None: ...
    def update_addon(self, addon: Addon) -> None:
        """Replace the record of ``addon.name`` (state, plan, credentials)."""
        ...

    def delete_addon(self, name: str) -> None:
        """Delete it and every attachment of it."""
        ...

    def get_addon(self, name: str) -> Addon | None: ...
    def list_addons(self, app: str | None = None) -> list[Addon]:
        """By name; those ``app`` owns, every app's if None."""
        ...

    def insert_attachment(self, att: Attachment) -> None: ...
    def delete_attachment(self, addon: str, app: str) -> None: ...
    def list_attachments(self, app: str | None = None,
                         addon: str | None = None) -> list[Attachment]:
        """By app, then creation; filtered by attached app and/or add-on."""
        ...

    def insert_backup(self, backup: Backup) -> None: ...
    def update_backup(self, backup: Backup) -> None: ...
    def get_backup(self, app: str, backup_id: str) -> Backup | None: ...
    def list_backups(self, app: str) -> list[Backup]:
        """Oldest first."""
        ...

    def delete_backup(self, app: str, backup_id: str) -> None: ...

    def put_backup_schedule(self, schedule: BackupScheduleRecord) -> None:
        """Make or replace the add-on's daily backup for the app."""
        ...

    def delete_backup_schedule(self, app: str, addon: str) -> bool: ...
    def list_backup_schedules(self, app: str | None = None) -> list[BackupScheduleRecord]:
        """By app, then add-on; every app's when ``app`` is None."""
        ...


class UsersTx(Protocol):
    """People who sign in over TCP, their API tokens (by the token's SHA-256, never the
    token) and the apps they collaborate on; an app's owner is ``App.owner``. Removing
    an app removes its collaborators."""

    def user(self, email: str) -> User | None: ...
    def users(self) -> list[User]:
        """By email."""
        ...

    def put_user(self, user: User) -> None:
        """Add it, or replace its password hash."""
        ...

    def token_by_hash(self, digest: str) -> Token | None: ...
    def tokens(self, email: str) -> list[Token]:
        """Oldest first."""
        ...

    def add_token(self, token: Token) -> None: ...
    def remove_token(self, token_id: str) -> bool:
        """False if there was no such token."""
        ...

    def collaborators(self, app: str) -> list[Collaborator]:
        """By email; the owner is not among them."""
        ...

    def collaborated_apps(self, email: str) -> list[str]:
        """By name."""
        ...

    def add_collaborator(self, collaborator: Collaborator) -> None: ...
    def remove_collaborator(self, app: str, email: str) -> bool: ...
    def set_app_owner(self, app: str, owner: str) -> None: ...


class Tx(AppsTx, AppSettingsTx, ReleasesTx, FormationTx, SlugsTx, DomainsTx, AcmTx,
         BuildsTx, KeysTx, AddonsTx, UsersTx, DrainsTx, Protocol):
    """One transaction over every aggregate."""


class Store(Protocol):
    def read(self) -> AbstractContextManager[Tx]:
        """A consistent snapshot for reading."""
        ...

    def write(self) -> AbstractContextManager[Tx]:
        """Exclusive: committed if the block returns, rolled back if it raises."""
        ...

    def close(self) -> None: ...
