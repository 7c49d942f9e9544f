# heroku/python-getting-started's gunicorn.conf.py, shortened: bind $PORT, log to stdout.
import os

bind = ["0.0.0.0:" + os.environ.get("PORT", "5006")]
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
accesslog = "-"
# The router is the only client; it sets X-Forwarded-* (Django reads X-Forwarded-Proto).
forwarded_allow_ips = "*"
