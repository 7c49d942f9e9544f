"""dynod.system.users"""

from __future__ import annotations

import json
from pathlib import Path

# nss-systemd reads JSON user records here (systemd >= 249): the app's uid resolves
# without a passwd entry, which systemd 252 needs for User= (it fails with ESRCH).
USERDB = Path("/run/userdb")


def user_name(uid: int) -> str:
    return f"dynod-{uid}"


def ensure_user(uid: int, userdb: Path = USERDB) -> None:
    """Volatile user and group records for an app's uid (nss-systemd drop-ins)."""
    name = user_name(uid)
    records = {
        f"{name}.user": {"userName": name, "uid": uid, "gid": uid, "homeDirectory": "/app",
                         "shell": "/usr/sbin/nologin", "disposition": "regular",
                         "locked": True},
        f"{name}.group": {"groupName": name, "gid": uid, "disposition": "regular"},
    }
    if all((userdb / f).exists() for f in records):
        return
    userdb.mkdir(mode=0o755, parents=True, exist_ok=True)
    for filename, record in records.items():
        tmp = userdb / f".{filename}.tmp"
        tmp.write_text(json.dumps(record))
        tmp.chmod(0o644)
        tmp.replace(userdb / filename)
    for number, kind in ((uid, "user"), (uid, "group")):
        link = userdb / f"{number}.{kind}"
        if not link.is_symlink():
            link.symlink_to(f"{name}.{kind}")


