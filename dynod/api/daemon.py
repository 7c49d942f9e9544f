"""What every servicer shares: the store and the settings of this daemon."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from google.protobuf.timestamp_pb2 import Timestamp

from dynod.settings import Settings
from dynod.state import Store


@dataclass(frozen=True)
class Daemon:
    store: Store
    settings: Settings

    @property
    def slugs_dir(self) -> Path:
        return self.settings.state_dir / "slugs"

    def web_url(self, app: str) -> str:
        return f"http://{app}.{self.settings.domain}/"


def timestamp(when: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(when)
    return ts
