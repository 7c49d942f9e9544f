"""Add-ons: managed PostgreSQL and Redis attached to apps by config vars.

Heroku's model (add-ons article; ``../shared/reference/addons.md``): an add-on is a
resource with a globally unique name (``postgresql-curved-12345``), a service
(``heroku-postgresql``) and a plan (``essential-0``). It is owned by one app, and
attached to that app and to any number of others; each attachment has a name
(``DATABASE``) that gives the config var holding its URL (``DATABASE_URL``). The first
Postgres attachment of an app is ``DATABASE``, further ones ``HEROKU_POSTGRESQL_<COLOR>``;
Redis is ``REDIS``.

This module is the boundary between the control plane (``dynod.control.addons``: the
records, releases, verbs) and the servers (``dynod.addons``: a PostgreSQL cluster and
Redis instances run by systemd). The control plane holds an :class:`AddonServices` given
by the composition root and never imports the servers.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Set
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol
from urllib.parse import quote

from dynod.errors import InvalidArgument, NotFound

POSTGRES = "heroku-postgresql"
REDIS = "heroku-redis"

# What a user may type for each service (Heroku's names and the plain ones).
SERVICE_ALIASES: Mapping[str, str] = {
    "heroku-postgresql": POSTGRES,
    "postgresql": POSTGRES,
    "postgres": POSTGRES,
    "heroku-redis": REDIS,
    "redis": REDIS,
}

# The name prefix of each service's add-ons: ``postgresql-curved-12345``.
NAME_PREFIX: Mapping[str, str] = {POSTGRES: "postgresql", REDIS: "redis"}

# Heroku's Postgres attachment colours, in the order it hands them out.
COLORS: tuple[str, ...] = (
    "AMBER", "AQUA", "BLACK", "BLUE", "BRONZE", "BROWN", "CHARCOAL", "COBALT", "COPPER",
    "CRIMSON", "CYAN", "GOLD", "GRAY", "GREEN", "IVORY", "JADE", "LIME", "MAGENTA",
    "MAROON", "MAUVE", "NAVY", "OLIVE", "ONYX", "ORANGE", "PINK", "PUCE", "PURPLE",
    "RED", "ROSE", "SILVER", "TEAL", "VIOLET", "WHITE", "YELLOW",
)

# Heroku's add-on names read like postgresql-curved-12345: service, adjective, number.
_ADJECTIVES: tuple[str, ...] = (
    "angular", "animated", "asymmetrical", "clean", "closed", "colorful", "concave",
    "convex", "crystalline", "cubed", "curly", "curved", "deep", "defined", "dimensional",
    "elliptical", "encircled", "flat", "flexible", "fluffy", "graceful", "horizontal",
    "octagonal", "opaque", "parallel", "perpendicular", "polished", "reticulated",
    "rigid", "round", "shallow", "shaped", "sinuous", "slippery", "solid", "spherical",
    "symmetrical", "tetrahedral", "transparent", "triangular", "vertical",
)


def random_addon_name(service: str, rng: random.Random | None = None) -> str:
    """``postgresql-curved-12345``, ``redis-flat-48213``."""
    r = rng or random.SystemRandom()
    return f"{NAME_PREFIX[service]}-{r.choice(_ADJECTIVES)}-{r.randrange(10000, 100000)}"


ATTACHMENT_RE = re.compile(r"^[A-Z][A-Z0-9_]{0,62}$")
ADDON_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{2,62}$")


@dataclass(frozen=True)
class Plan:
    """A plan and the limits it is enforced with.

    ``connections``: Postgres ``CONNECTION LIMIT`` of the role, Redis ``maxclients``.
    ``memory_mb``: Redis ``maxmemory``; for Postgres None (the cluster is shared).
    ``storage_gb``: the row limit a user sees; ``storage_enforced`` says whether dynod
    enforces it (Postgres has no per-database quota, so it is checked, not enforced).
    """

    service: str
    name: str
    connections: int
    memory_mb: int | None
    storage_gb: float | None
    storage_enforced: bool
    price: str = "free"

    @property
    def full_name(self) -> str:
        return f"{self.service}:{self.name}"


PLANS: Mapping[str, Mapping[str, Plan]] = {
    POSTGRES: {
        p.name: p
        for p in (
            Plan(POSTGRES, "essential-0", 20, None, 1, False),
            Plan(POSTGRES, "essential-1", 20, None, 10, False),
            Plan(POSTGRES, "essential-2", 40, None, 32, False),
            Plan(POSTGRES, "standard-0", 120, None, 64, False),
        )
    },
    REDIS: {
        p.name: p
        for p in (
            Plan(REDIS, "mini", 20, 25, None, False),
            Plan(REDIS, "premium-0", 40, 50, None, False),
            Plan(REDIS, "premium-1", 80, 100, None, False),
            Plan(REDIS, "premium-2", 200, 250, None, False),
        )
    },
}
DEFAULT_PLAN: Mapping[str, str] = {POSTGRES: "essential-0", REDIS: "mini"}


def parse_service_plan(text: str) -> Plan:
    """``heroku-postgresql[:PLAN]``, ``postgresql``, ``redis:premium-0``... -> Plan.

    Raises InvalidArgument naming the services or the service's plans.
    """
    service_text, _, plan_text = text.strip().partition(":")
    service = SERVICE_ALIASES.get(service_text.lower())
    if service is None:
        known = ", ".join(sorted(SERVICE_ALIASES))
        raise InvalidArgument(
            f'unknown add-on service "{service_text}"; available: {known} '
            "(e.g. dynoctl addons:create heroku-postgresql)"
        )
    plans = PLANS[service]
    name = plan_text or DEFAULT_PLAN[service]
    if name not in plans:
        raise InvalidArgument(
            f'{service} has no plan "{name}"; plans: {", ".join(plans)}'
            f" (e.g. {service}:{DEFAULT_PLAN[service]})"
        )
    return plans[name]


class AddonState(StrEnum):
    # Heroku's add-on states as `heroku addons` prints them.
    PROVISIONING = "provisioning"
    CREATED = "created"
    DEPROVISIONED = "deprovisioned"


@dataclass(frozen=True)
class Credentials:
    """How a dyno reaches an add-on: the server's address on the dynos' bridge."""

    host: str
    port: int
    user: str
    password: str
    database: str  # Postgres: the database name; Redis: "0"

    def url(self, service: str) -> str:
        user = quote(self.user, safe="")
        password = quote(self.password, safe="")
        if service == POSTGRES:
            return f"postgres://{user}:{password}@{self.host}:{self.port}/{self.database}"
        return f"redis://{user}:{password}@{self.host}:{self.port}/{self.database}"


@dataclass(frozen=True)
class Addon:
    name: str
    service: str
    plan: str
    app: str  # the billing (owning) app
    state: AddonState
    created_at: datetime
    credentials: Credentials

    @property
    def plan_info(self) -> Plan:
        return PLANS[self.service][self.plan]

    @property
    def url(self) -> str:
        """What the config var of each attachment holds."""
        return self.credentials.url(self.service)


@dataclass(frozen=True)
class Attachment:
    """Add-on ``addon`` attached to ``app`` as ``name``: config var ``<name>_URL``."""

    addon: str
    app: str
    name: str
    created_at: datetime

    @property
    def config_var(self) -> str:
        return f"{self.name}_URL"


def validate_attachment_name(name: str) -> str:
    """``--as`` values: upper case letters, digits and underscores (``DATABASE``).
    Lower case is upper-cased, as Heroku does. Raises InvalidArgument."""
    upper = name.strip().upper()
    if upper.endswith("_URL"):
        upper = upper[: -len("_URL")]
    if not ATTACHMENT_RE.match(upper):
        raise InvalidArgument(
            f'attachment name "{name}" is not valid; use letters, digits and '
            "underscores starting with a letter, e.g. --as DATABASE"
        )
    return upper


def default_attachment_name(service: str, taken: Set[str]) -> str:
    """The name Heroku gives the next attachment of ``service`` to an app that already
    has attachments named ``taken``."""
    if service == REDIS:
        if "REDIS" not in taken:
            return "REDIS"
        base = "HEROKU_REDIS"
    else:
        if "DATABASE" not in taken:
            return "DATABASE"
        base = "HEROKU_POSTGRESQL"
    for color in COLORS:
        if f"{base}_{color}" not in taken:
            return f"{base}_{color}"
    raise InvalidArgument(f"no attachment name left for {service}; name one with --as")


class BackupStatus(StrEnum):
    RUNNING = "Running"
    VERIFYING = "Verifying"
    VERIFIED = "Verified"
    FAILED_VERIFICATION = "Failed verification"
    FAILED = "Failed"


@dataclass(frozen=True)
class Backup:
    """``b001``...: a ``pg_dump -Fc`` file of add-on ``addon`` and how it verified."""

    id: str  # b001, a001 for scheduled ones as Heroku names them
    addon: str
    app: str
    created_at: datetime
    finished_at: datetime | None
    size: int
    sha256: str
    status: BackupStatus
    reason: str  # why verification or capture failed; "" otherwise
    tables: Mapping[str, int]  # table -> row count at capture time (the snapshot's)
    scheduled: bool = False


@dataclass(frozen=True)
class BackupScheduleRecord:
    """A daily backup of add-on ``addon`` for ``app`` at ``at`` (``02:00 Europe/Paris``),
    asked for by its attachment name ``attachment``. The store holds these; the timers
    that fire them are derived (``dynod.addons.schedule``)."""

    app: str
    addon: str
    attachment: str
    at: str


class AddonServices(Protocol):
    """The servers behind add-ons. Implemented by ``dynod.addons.manager``; the control
    plane and the runtime are given one by the composition root.

    Each method acts on real servers and is idempotent where the name says so. Errors:
    FailedPrecondition when the service's server is not installed (the message names the
    Debian package), Unavailable when it cannot be reached.
    """

    def provision(self, addon: str, plan: Plan) -> Credentials:
        """Create the database and role (Postgres) or the instance (Redis) for ``addon``
        with the plan's limits, start what must run, and return how to reach it."""
        ...

    def deprovision(self, addon: str, service: str) -> None:
        """Remove the add-on's data and processes. Idempotent."""
        ...

    def rotate_credentials(self, addon: str, service: str) -> Credentials:
        """A new password; open sessions with the old one are ended."""
        ...

    def reset(self, addon: str, service: str) -> None:
        """Empty the add-on (drop and recreate the database / FLUSHALL)."""
        ...

    def info(self, addon: str, service: str) -> Mapping[str, str]:
        """What ``pg:info`` / ``redis:info`` show (version, size, connections...)."""
        ...

    def admit(self, addresses: Mapping[str, Set[str]]) -> None:
        """Let exactly these dyno addresses reach each add-on: ``addon name -> IPv4
        addresses``. Everything else is turned away; sessions from an address that
        lost access are ended."""
        ...

    def ensure_running(self) -> None:
        """Start the servers of every provisioned add-on (at dynod's start)."""
        ...


def require_plan(service: str, plan: str) -> Plan:
    try:
        return PLANS[service][plan]
    except KeyError:
        raise NotFound(f"{service} has no plan {plan}") from None
