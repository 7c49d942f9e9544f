#!/usr/bin/env python
"""Django's command-line utility. This app has no Procfile: the python buildpack gives it
a default web process (Django's runserver on $PORT) and says to declare one."""
import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
