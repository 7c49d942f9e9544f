"""The job queue: a Redis list at REDIS_URL (LPUSH by the web, BRPOP by the worker)."""

import redis
from django.conf import settings

QUEUE = "notes:jobs"


def connect() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=10)
