"""dynod.model.apps"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from datetime import datetime

from dynod.errors import InvalidArgument

# Heroku: at most 30 characters; lower-case letters, digits and dashes; starts with a
# letter, ends with a letter or digit (limits page; regex as used by third-party clients).
NAME_RE = re.compile(r"^[a-z][a-z0-9-]{1,28}[a-z0-9]$")
# Names whose slice dynod-<name>.slice is dynod's own: the add-on servers' and the builds'.
RESERVED_NAMES = frozenset({"addons", "builds"})


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
    if name in RESERVED_NAMES:
        raise InvalidArgument(
            f"app name {name!r} is reserved (dynod's own dynod-{name}.slice); choose another"
        )


def random_name(rng: random.Random | None = None) -> str:
    """A readable random name in Heroku's style, e.g. ``floating-dragon-42817``."""
    r = rng or random.SystemRandom()
    return f"{r.choice(_ADJECTIVES)}-{r.choice(_NOUNS)}-{r.randrange(10000, 100000)}"


