"""dynod: Heroku for one Debian machine."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("dynod")
except PackageNotFoundError:  # running from a tree that was never installed
    __version__ = "0.0.0+unknown"
