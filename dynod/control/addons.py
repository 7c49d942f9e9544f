"""Add-ons: create, destroy, attach, detach, promote, and look them up.

Heroku's model (add-ons article, heroku/cli ``addons:*``): an add-on has a globally
unique name (``postgresql-curved-12345``) and is owned by one app; each attachment of
it to an app is a config var (``DATABASE_URL``) set through a release, like
``config:set``. Such releases are described ``Attach DATABASE (@ref:NAME)`` / ``Detach
DATABASE (@ref:NAME)`` and skip the release phase (release-phase article: "add-on
config var changes"). The servers behind add-ons are an :class:`AddonServices` the
composition root gives; provisioning runs outside any store transaction (it takes
seconds), and a failure on either side leaves no record and no server behind.

Every use case commits, then publishes one :class:`AddonsChanged` per app whose
attachments changed (its ``app[api]`` lines, its rollout, its dynos' access).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from dynod.control import releases
from dynod.errors import AlreadyExists, DynodError, FailedPrecondition, InvalidArgument, NotFound
from dynod.model.addons import (
    ADDON_NAME_RE,
    POSTGRES,
    Addon,
    AddonServices,
    AddonState,
    Attachment,
    Credentials,
    default_attachment_name,
    parse_service_plan,
    random_addon_name,
    validate_attachment_name,
)
from dynod.model.events import AddonsChanged, EventBus
from dynod.model.releases import Release
from dynod.store import reads
from dynod.store.protocol import Store, Tx

log = logging.getLogger(__name__)

PRIMARY = "DATABASE"  # the attachment pg:promote makes: DATABASE_URL


@dataclass(frozen=True)
class AddonView:
    """An add-on and every attachment of it (to any app), as ``addons`` lists them."""

    addon: Addon
    attachments: tuple[Attachment, ...]


@dataclass(frozen=True)
class Change:
    """What a verb did: the add-on, the attachment it made or changed (if one), and the
    release it made in each app (app -> release)."""

    addon: Addon
    attachment: Attachment | None
    releases: Mapping[str, Release]


def require_addon(tx: Tx, name: str) -> Addon:
    """The add-on ``name``. Raises NotFound naming the listing command."""
    addon = tx.get_addon(name)
    if addon is None:
        raise NotFound(f'add-on "{name}" not found; list add-ons with `dynoctl addons --all`')
    return addon


def resolve(tx: Tx, ref: str, app: str | None = None) -> Addon:
    """An add-on by its name, or (with ``app``) by one of that app's attachment names
    (``DATABASE``, ``DATABASE_URL``, ``HEROKU_POSTGRESQL_PINK``), as heroku/cli's
    resolver does. Raises NotFound."""
    addon = tx.get_addon(ref)
    if addon is not None:
        return addon
    if app is not None:
        reads.require_app(tx, app)
        wanted = ref.strip().upper().removesuffix("_URL")
        for att in tx.list_attachments(app=app):
            if att.name == wanted:
                return require_addon(tx, att.addon)
        raise NotFound(
            f'app "{app}" has no add-on or attachment named "{ref}"; list them with '
            f"`dynoctl addons -a {app}`")
    return require_addon(tx, ref)


def _append(tx: Tx, app: str, description: str, user: str, *,
            set_vars: Mapping[str, str] | None = None, unset: tuple[str, ...] = ()) -> Release:
    latest = reads.latest_release(tx, app)
    config = {k: v for k, v in latest.config.items() if k not in unset}
    config.update(set_vars or {})
    return releases.append_release(tx, app, description=description, user=user,
                                   slug_id=latest.slug_id, config=config,
                                   release_phase=False)


def _check_free(tx: Tx, app: str, name: str, addon: str) -> None:
    """``name`` may become an attachment of ``app``. Raises AlreadyExists (an attachment
    already has it) or FailedPrecondition (the user set its config var themselves)."""
    for att in tx.list_attachments(app=app):
        if att.name == name:
            raise AlreadyExists(
                f'app "{app}" already has an add-on attached as {name} ({att.addon}); '
                f"choose another name with --as, or detach it first "
                f"(dynoctl addons:detach {name} -a {app})")
    var = f"{name}_URL"
    if var in reads.latest_release(tx, app).config:
        raise FailedPrecondition(
            f'app "{app}" already has a config var {var} not set by an add-on; attach '
            f"{addon} under another name with --as, or unset it first "
            f"(dynoctl config:unset {var} -a {app})")


def create_addon(store: Store, events: EventBus, services: AddonServices, app: str,
                 service_plan: str, *, user: str, as_name: str | None = None,
                 name: str | None = None) -> Change:
    """Provision ``service_plan`` (``heroku-postgresql:essential-0``, ``redis``...) for
    ``app``, attached as ``as_name`` (Heroku's default: DATABASE, then
    HEROKU_POSTGRESQL_<COLOR>; REDIS), in a release ``Attach NAME (@ref:ADDON)`` that
    sets its URL and skips the release phase.

    Raises InvalidArgument (service, plan, name), NotFound (app), AlreadyExists (the
    add-on name or the attachment name is taken), FailedPrecondition (the config var is
    the user's, or the server is not installed), Unavailable (the server is down). On
    any error nothing stays recorded or provisioned; while the server provisions, the
    add-on is listed as "creating".
    """
    plan = parse_service_plan(service_plan)
    wanted = None if as_name is None else validate_attachment_name(as_name)
    if name is not None and not ADDON_NAME_RE.match(name):
        raise InvalidArgument(
            f'add-on name "{name}" is not valid; use 3 to 63 lower case letters, digits '
            "and dashes starting with a letter, or omit --name for a generated one")
    now = datetime.now(UTC)
    # The name is taken in the store first (state "provisioning", shown as "creating"),
    # so two calls can never provision the same add-on; the record goes again if
    # anything fails.
    with store.write() as tx:
        reads.require_app(tx, app)
        if name is not None and tx.get_addon(name) is not None:
            raise AlreadyExists(f'an add-on named "{name}" already exists; choose another '
                                "--name, or omit it for a generated one")
        if name is None:
            name = random_addon_name(plan.service)
            while tx.get_addon(name) is not None:
                name = random_addon_name(plan.service)
        taken = {a.name for a in tx.list_attachments(app=app)}
        att_name = wanted or default_attachment_name(plan.service, taken)
        _check_free(tx, app, att_name, name)
        pending = Addon(name=name, service=plan.service, plan=plan.name, app=app,
                        state=AddonState.PROVISIONING, created_at=now,
                        credentials=Credentials("", 0, "", "", ""))
        tx.insert_addon(pending)
    try:
        # Outside any transaction: provisioning takes seconds and must not hold the store.
        credentials = services.provision(name, plan)
    except BaseException:
        _forget(store, name)
        raise
    addon = replace(pending, state=AddonState.CREATED, credentials=credentials)
    attachment = Attachment(addon=name, app=app, name=att_name, created_at=now)
    try:
        with store.write() as tx:
            # Checked again: another call may have taken the attachment name meanwhile,
            # or the app may be gone.
            reads.require_app(tx, app)
            _check_free(tx, app, att_name, name)
            tx.update_addon(addon)
            tx.insert_attachment(attachment)
            release = _append(tx, app, f"Attach {att_name} (@ref:{name})", user,
                              set_vars={attachment.config_var: addon.url})
    except BaseException:
        _deprovision_quietly(services, addon)
        _forget(store, name)
        raise
    events.publish(AddonsChanged(
        app, name, user, release,
        (f"@ref:{name} completed provisioning, setting {attachment.config_var}.",)))
    return Change(addon, attachment, {app: release})


def _forget(store: Store, name: str) -> None:
    """Drop the record of an add-on whose creation failed (best effort: the original
    error is the one to report; a record left says "creating" and addons:destroy
    removes it)."""
    try:
        with store.write() as tx:
            tx.delete_addon(name)
    except Exception:
        log.exception("add-on %s: its record stays after a failed create", name)


def recover(store: Store, services: AddonServices) -> list[str]:
    """At dynod's start, before the API: an add-on still ``provisioning`` was being
    created when dynod stopped (nothing was attached or released yet). Its server side
    is removed and its record dropped, so its name is free again; returns the names."""
    with store.read() as tx:
        stale = [a for a in tx.list_addons() if a.state is AddonState.PROVISIONING]
    for addon in stale:
        log.warning("add-on %s of app %s: its creation was interrupted by a stop of "
                    "dynod; removing it (create it again)", addon.name, addon.app)
        _deprovision_quietly(services, addon)
        _forget(store, addon.name)
    return [a.name for a in stale]


def _deprovision_quietly(services: AddonServices, addon: Addon) -> None:
    try:
        services.deprovision(addon.name, addon.service)
    except DynodError as exc:  # the original error matters more; say what is left over
        log.error("add-on %s: left provisioned after a failed create: %s", addon.name,
                  exc.message)


def destroy_addon(store: Store, events: EventBus, services: AddonServices, name: str,
                  *, confirm: str | None, user: str, app: str | None = None) -> Change:
    """Detach ``name`` from every app (each gets a ``Detach NAME (@ref:ADDON)``
    release), remove its server's data, and forget it. ``confirm`` must be the owning
    app's name (heroku addons:destroy --confirm APP); ``app`` (``-a``), when given, must
    own it (``name`` may then be one of its attachment names).

    Raises NotFound, InvalidArgument (no or wrong confirmation, owned by another app),
    Unavailable (the server could not remove it: nothing changed).
    """
    with store.read() as tx:
        addon = resolve(tx, name, app)
        # heroku/cli: with -a, the add-on must be that app's own, not just attached to it.
        if app is not None and addon.app != app:
            raise InvalidArgument(f"{addon.name} is on {addon.app} not {app}; destroy it "
                                  f"with -a {addon.app}")
    if confirm is None:
        raise InvalidArgument(
            f"destroying {addon.name} deletes its data; confirm with "
            f"`dynoctl addons:destroy {addon.name} --confirm {addon.app}`")
    if confirm != addon.app:
        raise InvalidArgument(
            f'--confirm {confirm} does not match {addon.name}\'s owning app "{addon.app}"; '
            f"re-run with --confirm {addon.app}")
    # The server first: if it cannot remove the data, the records (and the URLs) stay
    # and the user can retry.
    services.deprovision(addon.name, addon.service)
    made: dict[str, Release] = {}
    with store.write() as tx:
        addon = require_addon(tx, addon.name)
        made = _detach_everywhere(tx, addon, user)
        tx.delete_addon(addon.name)
    for each, release in made.items():
        events.publish(AddonsChanged(each, addon.name, user, release))
    return Change(addon, None, made)


def _detach_everywhere(tx: Tx, addon: Addon, user: str) -> dict[str, Release]:
    made: dict[str, Release] = {}
    for att in tx.list_attachments(addon=addon.name):
        tx.delete_attachment(addon.name, att.app)
        made[att.app] = _append(tx, att.app, f"Detach {att.name} (@ref:{addon.name})",
                                user, unset=(att.config_var,))
    return made


def attach_addon(store: Store, events: EventBus, name: str, app: str, *,
                 as_name: str | None, user: str) -> Change:
    """Attach add-on ``name`` (owned by any app) to ``app`` as ``as_name`` (Heroku's
    default name when None) in a release ``Attach NAME (@ref:ADDON)``.

    Raises NotFound (add-on, app), InvalidArgument (name), AlreadyExists (attached to
    ``app`` already, or the name is taken there), FailedPrecondition (the config var is
    the user's).
    """
    wanted = None if as_name is None else validate_attachment_name(as_name)
    with store.write() as tx:
        addon = require_addon(tx, name)
        if tx.app(app) is None:
            raise NotFound(f'app "{app}" not found; create it with `dynoctl apps:create '
                           f"{app}`, or list your apps with `dynoctl apps`")
        current = tx.list_attachments(app=app)
        for att in current:
            if att.addon == addon.name:
                raise AlreadyExists(
                    f'{addon.name} is already attached to app "{app}" as {att.name}; '
                    f"detach it first to rename it (dynoctl addons:detach {att.name} "
                    f"-a {app})")
        att_name = wanted or default_attachment_name(addon.service, {a.name for a in current})
        _check_free(tx, app, att_name, addon.name)
        attachment = Attachment(addon=addon.name, app=app, name=att_name,
                                created_at=datetime.now(UTC))
        tx.insert_attachment(attachment)
        release = _append(tx, app, f"Attach {att_name} (@ref:{addon.name})", user,
                          set_vars={attachment.config_var: addon.url})
    events.publish(AddonsChanged(app, addon.name, user, release))
    return Change(addon, attachment, {app: release})


def detach_addon(store: Store, events: EventBus, ref: str, app: str, user: str) -> Change:
    """Remove attachment ``ref`` (its name, e.g. ``DATABASE``, or the add-on's name) from
    ``app`` in a release ``Detach NAME (@ref:ADDON)`` that unsets its config var. The
    owning app's last attachment cannot go: destroy the add-on instead (Heroku: an
    add-on always stays attached to its billing app).

    Raises NotFound, FailedPrecondition.
    """
    with store.write() as tx:
        reads.require_app(tx, app)
        wanted = ref.strip().upper().removesuffix("_URL")
        match = [a for a in tx.list_attachments(app=app)
                 if a.name == wanted or a.addon == ref]
        if not match:
            raise NotFound(
                f'app "{app}" has no add-on attached as "{ref}"; list its attachments with '
                f"`dynoctl addons -a {app}`")
        attachment = match[0]
        addon = require_addon(tx, attachment.addon)
        if addon.app == app:
            raise FailedPrecondition(
                f'{addon.name} is owned by "{app}" and cannot be detached from it; destroy '
                f"it with `dynoctl addons:destroy {addon.name} --confirm {app}`")
        tx.delete_attachment(addon.name, app)
        release = _append(tx, app, f"Detach {attachment.name} (@ref:{addon.name})", user,
                          unset=(attachment.config_var,))
    events.publish(AddonsChanged(app, addon.name, user, release))
    return Change(addon, attachment, {app: release})


@dataclass(frozen=True)
class Promotion:
    """``pg:promote``: ``attachment`` is now DATABASE; ``demoted`` is the attachment the
    former DATABASE got (None if there was none); one release."""

    addon: Addon
    attachment: Attachment
    demoted: Attachment | None
    release: Release


def promote(store: Store, events: EventBus, ref: str, app: str, user: str) -> Promotion:
    """Make the app's Postgres attachment ``ref`` (add-on or attachment name) its
    ``DATABASE_URL``; the add-on that was DATABASE keeps the promoted one's former name
    (a HEROKU_POSTGRESQL_<COLOR> one if the promoted add-on was not attached yet: it is
    attached first). One release, ``Update DATABASE by pg:promote (@ref:ADDON)``, that
    skips the release phase.

    Raises NotFound, InvalidArgument (not Postgres), FailedPrecondition (already
    DATABASE).
    """
    with store.write() as tx:
        addon = resolve(tx, ref, app)
        if addon.service != POSTGRES:
            raise InvalidArgument(f"{addon.name} is {addon.service}; pg:promote promotes "
                                  "heroku-postgresql add-ons only")
        current = tx.list_attachments(app=app)
        mine = next((a for a in current if a.addon == addon.name), None)
        primary = next((a for a in current if a.name == PRIMARY), None)
        if mine is not None and mine.name == PRIMARY:
            raise FailedPrecondition(f'{addon.name} is already promoted on "{app}"')
        now = datetime.now(UTC)
        taken = {a.name for a in current}
        # What the former DATABASE becomes: the promoted one's old name, or a colour.
        spare = mine.name if mine is not None else default_attachment_name(
            POSTGRES, taken | {PRIMARY})
        demoted = None
        if primary is None and f"{PRIMARY}_URL" in reads.latest_release(tx, app).config:
            raise FailedPrecondition(
                f'app "{app}" has a config var {PRIMARY}_URL not set by an add-on; unset it '
                f"first (dynoctl config:unset {PRIMARY}_URL -a {app})")
        if primary is not None:
            tx.delete_attachment(primary.addon, app)
        if mine is not None:
            tx.delete_attachment(addon.name, app)
        promoted = Attachment(addon.name, app, PRIMARY, mine.created_at if mine else now)
        tx.insert_attachment(promoted)
        set_vars = {promoted.config_var: addon.url}
        unset: tuple[str, ...] = ()
        if primary is not None:
            demoted = replace(primary, name=spare)
            tx.insert_attachment(demoted)
            old = require_addon(tx, primary.addon)
            set_vars[demoted.config_var] = old.url
        elif mine is not None:
            unset = (mine.config_var,)
        release = _append(tx, app, f"Update {PRIMARY} by pg:promote (@ref:{addon.name})",
                          user, set_vars=set_vars, unset=unset)
    events.publish(AddonsChanged(app, addon.name, user, release))
    return Promotion(addon, promoted, demoted, release)


def get_addon(store: Store, ref: str, app: str | None = None) -> AddonView:
    """An add-on (by name, or attachment name of ``app``) with its attachments.
    Raises NotFound."""
    with store.read() as tx:
        addon = resolve(tx, ref, app)
        return AddonView(addon, tuple(tx.list_attachments(addon=addon.name)))


def list_addons(store: Store, app: str | None = None) -> list[AddonView]:
    """Every add-on (``app`` None), or those ``app`` owns or has attached, owned ones
    first (heroku addons). Raises NotFound (app)."""
    with store.read() as tx:
        if app is None:
            return [AddonView(a, tuple(tx.list_attachments(addon=a.name)))
                    for a in sorted(tx.list_addons(), key=lambda a: (a.app, a.plan, a.name))]
        reads.require_app(tx, app)
        names = {a.name for a in tx.list_addons(app)}
        names |= {a.addon for a in tx.list_attachments(app=app)}
        found = [tx.get_addon(n) for n in names]
        views = [AddonView(a, tuple(tx.list_attachments(addon=a.name)))
                 for a in found if a is not None]
    return sorted(views, key=lambda v: (v.addon.app != app, v.addon.plan, v.addon.name))


def addon_url_vars(store: Store, app: str) -> dict[str, str]:
    """The config vars the app's current attachments set (``DATABASE_URL`` -> URL)."""
    with store.read() as tx:
        reads.require_app(tx, app)
        return releases.attachment_vars(tx, app)


def destroy_app_addons(tx: Tx, app: str,
                       user: str) -> tuple[list[Addon], list[tuple[str, str, Release]]]:
    """Inside ``delete_app``'s transaction: forget the add-ons ``app`` owns, detaching
    each from the other apps (each gets a ``Detach`` release), and the app's own
    attachments of other apps' add-ons. Returns the owned add-ons (their servers are
    the caller's to remove) and (other app, add-on, release) for each detach."""
    owned = tx.list_addons(app)
    made: list[tuple[str, str, Release]] = []
    for addon in owned:
        for att in tx.list_attachments(addon=addon.name):
            tx.delete_attachment(addon.name, att.app)
            if att.app != app:
                made.append((att.app, addon.name, _append(
                    tx, att.app, f"Detach {att.name} (@ref:{addon.name})", user,
                    unset=(att.config_var,))))
        tx.delete_addon(addon.name)
    for att in tx.list_attachments(app=app):
        tx.delete_attachment(att.addon, app)
    return owned, made
