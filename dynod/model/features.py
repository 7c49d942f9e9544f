"""App features: optional platform behaviours an app's owner turns on or off (Heroku's
``features`` and ``labs``). Only the names here exist; each is off until enabled."""

from __future__ import annotations

from dataclasses import dataclass

from dynod.errors import NotFound


@dataclass(frozen=True)
class FeatureInfo:
    name: str
    description: str
    doc_url: str = ""


# Heroku's Router 2.0 opt-out, same name and meaning: the router opens a new connection
# to the dyno for each request and closes it after the response.
HTTP_DISABLE_KEEPALIVE_TO_DYNO = "http-disable-keepalive-to-dyno"

# Heroku Labs: each dyno's memory and load in the app's log stream every 20 s
# (dynod.runtime.metrics).
LOG_RUNTIME_METRICS = "log-runtime-metrics"

CATALOG: dict[str, FeatureInfo] = {f.name: f for f in (
    FeatureInfo(HTTP_DISABLE_KEEPALIVE_TO_DYNO,
                "Disable keepalives to dynos in the router: a new connection per request",
                "https://devcenter.heroku.com/articles/http-routing#keepalives"),
    FeatureInfo(LOG_RUNTIME_METRICS,
                "Emit dyno resource usage information into app logs",
                "https://devcenter.heroku.com/articles/log-runtime-metrics"),
)}


def feature_info(name: str) -> FeatureInfo:
    """Raises NotFound for a name dynod does not know."""
    try:
        return CATALOG[name]
    except KeyError:
        raise NotFound(f'feature "{name}" not found; see `dynoctl features` for the '
                       f"features dynod has: {', '.join(sorted(CATALOG))}") from None
