"""heroku/python-getting-started's production settings, the HTTPS part kept as it is:
every plain-HTTP request is redirected to HTTPS, and the router's X-Forwarded-Proto says
which a request was."""
import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
IS_HEROKU_APP = "DYNO" in os.environ and "CI" not in os.environ
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "django-insecure-getting-started-example")
DEBUG = not IS_HEROKU_APP
ALLOWED_HOSTS = ["*"] if IS_HEROKU_APP else [".localhost", "127.0.0.1", "[::1]", "0.0.0.0"]
INSTALLED_APPS = ["hello"]
MIDDLEWARE = ["django.middleware.security.SecurityMiddleware",
              "django.middleware.common.CommonMiddleware"]
ROOT_URLCONF = "gettingstarted.urls"
WSGI_APPLICATION = "gettingstarted.wsgi.application"
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True
if IS_HEROKU_APP:
    # As the getting-started app has it: HTTPS only, behind Heroku's router.
    SECURE_SSL_REDIRECT = True
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
