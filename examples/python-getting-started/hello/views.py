import platform
from pathlib import Path

import django
from django.http import HttpRequest, HttpResponse


def index(request: HttpRequest) -> HttpResponse:
    """What the dyno runs: its Python, its Django and the Debian release under it."""
    debian = Path("/etc/debian_version").read_text().strip()
    return HttpResponse(
        f"Getting started with Python {platform.python_version()} and Django "
        f"{django.get_version()} on Debian {debian}\n",
        content_type="text/plain",
    )
