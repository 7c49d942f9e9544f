"""Settings from the environment, as on Heroku: DATABASE_URL (heroku-postgresql) and
REDIS_URL (heroku-redis) are set by dynod when the add-ons are attached."""

import os
from urllib.parse import unquote, urlsplit

SECRET_KEY = os.environ.get("SECRET_KEY", "example-only-not-secret")
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = ["django.contrib.contenttypes", "notes"]
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"


def database_from_url(url: str) -> dict[str, object]:
    """postgres://USER:PASSWORD@HOST:PORT/NAME -> Django's DATABASES entry (what
    dj-database-url does, in a few lines)."""
    parts = urlsplit(url)
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(parts.path.lstrip("/")),
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "",
        "PORT": str(parts.port or 5432),
        "CONN_MAX_AGE": 0,
    }


# Without DATABASE_URL (a build): SQLite in /tmp, so `manage.py check` still works.
DATABASES = {
    "default": database_from_url(os.environ["DATABASE_URL"]) if "DATABASE_URL" in os.environ
    else {"ENGINE": "django.db.backends.sqlite3", "NAME": "/tmp/notes.sqlite3"}
}
REDIS_URL = os.environ.get("REDIS_URL", "")
LOGGING = {"version": 1, "handlers": {"console": {"class": "logging.StreamHandler"}},
           "root": {"handlers": ["console"], "level": "INFO"}}
