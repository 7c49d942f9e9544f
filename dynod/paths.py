"""Where dynod's own files are: in this source tree, or where the Debian package put them.

Run from a checkout (``.venv``, the sandbox machines), dynod uses the tree's files, so a
change is live at once; installed from the package, the Python code lives in a private
venv and its data under /usr/share/dynod. ``DYNOD_BUILDPACKS_DIR`` overrides both.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

SOURCE_TREE = Path(__file__).resolve().parents[1]
INSTALLED_BUILDPACKS = Path("/usr/share/dynod/buildpacks")
BUILDPACKS_ENV = "DYNOD_BUILDPACKS_DIR"


def in_source_tree(tree: Path = SOURCE_TREE) -> bool:
    """True when this dynod runs from a checkout (an editable install), not the package."""
    return (tree / "pyproject.toml").is_file() and (tree / "dynod").is_dir()


def buildpacks_dir(env: Mapping[str, str] | None = None, tree: Path = SOURCE_TREE) -> Path:
    """The built-in buildpacks: $DYNOD_BUILDPACKS_DIR, else the checkout's buildpacks/,
    else the package's /usr/share/dynod/buildpacks."""
    value = (os.environ if env is None else env).get(BUILDPACKS_ENV, "")
    if value:
        return Path(value)
    if in_source_tree(tree) and (tree / "buildpacks").is_dir():
        return tree / "buildpacks"
    return INSTALLED_BUILDPACKS


def stacks_dir(state_dir: Path) -> Path:
    return state_dir / "stacks"


def stack_root(state_dir: Path, name: str) -> Path:
    """Where stack ``name`` lives once built (it may not be built yet)."""
    return stacks_dir(state_dir) / name




def tls_dir(state_dir: Path) -> Path:
    """dynod's local CA (``ca.key`` 0600, ``ca.crt``), made at install or first start."""
    return state_dir / "tls"


def ca_certificate(state_dir: Path) -> Path:
    return tls_dir(state_dir) / "ca.crt"
