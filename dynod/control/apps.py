"""Apps: create, look up, list and destroy. Creating an app makes its release v1."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from dynod.errors import AlreadyExists, InvalidArgument, NotFound

if TYPE_CHECKING:
    from dynod.store.sqlite import Store, Tx

# Heroku: at most 30 characters; lower-case letters, digits and dashes; starts with a
# letter, ends with a letter or digit (limits page; regex as used by third-party clients).
NAME_RE = re.compile(r"^[a-z][a-z0-9-]{1,28}[a-z0-9]$")

_ADJECTIVES = (
    "ancient", "autumn", "billowing", "bitter", "blue", "bold", "brave", "calm", "cool",
    "crimson", "damp", "dawn", "desolate", "divine", "dry", "evening", "falling",
    "floating", "fragrant", "frosty", "gentle", "glacial", "hidden", "holy", "icy",
    "late", "lingering", "little", "lively", "misty", "morning", "muddy", "nameless",
    "polished", "proud", "quiet", "rapid", "red", "restless", "rough", "shy", "silent",
    "small", "snowy", "solitary", "sparkling", "spring", "still", "summer", "sweet",
    "twilight", "wandering", "weathered", "white", "wild", "winter", "young",
)
_NOUNS = (
    "bird", "breeze", "brook", "bush", "butterfly", "cloud", "darkness", "dawn", "dew",
    "dream", "dust", "field", "fire", "firefly", "flower", "fog", "forest", "frog",
    "frost", "glade", "glitter", "grass", "harbor", "haze", "hill", "lake", "leaf",
    "meadow", "moon", "morning", "mountain", "night", "paper", "pine", "pond", "rain",
    "resonance", "river", "sea", "shadow", "shape", "silence", "sky", "smoke", "snow",
    "sound", "star", "sun", "sunset", "surf", "thunder", "tree", "violet", "water",
    "waterfall", "wave", "wildflower", "wind", "wood",
)


@dataclass(frozen=True)
class App:
    """An app. ``owner`` is the Unix user who created it."""

    name: str
    owner: str
    created_at: datetime


def validate_name(name: str) -> None:
    """Raises InvalidArgument unless ``name`` is a valid app name."""
    if not NAME_RE.match(name):
        raise InvalidArgument(
            f"app name {name!r} is invalid: use 3 to 30 lower-case letters, digits and "
            "dashes, starting with a letter and ending with a letter or digit"
        )


def random_name(rng: random.Random | None = None) -> str:
    """A readable random name in Heroku's style, e.g. ``floating-dragon-42817``."""
    r = rng or random.SystemRandom()
    return f"{r.choice(_ADJECTIVES)}-{r.choice(_NOUNS)}-{r.randrange(10000, 100000)}"


def require(tx: Tx, name: str) -> App:
    """The app ``name`` in this transaction. Raises NotFound."""
    app = tx.app(name)
    if app is None:
        raise NotFound(f'app "{name}" not found; list your apps with `dynoctl apps`')
    return app


def create_app(store: Store, name: str | None, user: str) -> App:
    """Create an app named ``name`` (a random one if None) with release v1.

    Raises InvalidArgument for a bad name, AlreadyExists if it is taken.
    """
    from dynod.control import releases  # noqa: PLC0415 - releases imports apps for require()

    if name is not None:
        validate_name(name)
    with store.write() as tx:
        if name is None:
            name = random_name()
            while tx.app(name) is not None:
                name = random_name()
        elif tx.app(name) is not None:
            raise AlreadyExists(
                f'app "{name}" already exists; choose another name, or omit it for a random one'
            )
        app = App(name=name, owner=user, created_at=datetime.now(UTC))
        tx.add_app(app)
        # Heroku: every app starts with v1 "Initial release" (releases article).
        releases.append_release(tx, app.name, description="Initial release", user=user,
                                slug_id=None, config={})
        return app


def get_app(store: Store, name: str) -> App:
    """Raises NotFound."""
    with store.read() as tx:
        return require(tx, name)


def list_apps(store: Store) -> list[App]:
    """Every app, sorted by name."""
    with store.read() as tx:
        return tx.apps()


def delete_app(store: Store, name: str) -> list[str]:
    """Delete the app and everything it owns (releases, formation, slugs).

    Returns the checksums of slug tarballs no app uses any more, for the caller to
    remove from disk after the transaction. Raises NotFound.
    """
    with store.write() as tx:
        require(tx, name)
        return tx.remove_app(name)
