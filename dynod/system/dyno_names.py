"""What a dyno's resolver reads: its hosts file (every app's ``<app>.<domain>`` at the
router, the bridge's gateway) and its resolv.conf (the host's upstream resolvers).
``netns.ensure_bridge`` writes both; the router appends to the hosts file.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable
from ipaddress import IPv4Address
from pathlib import Path

# The start of the dynos' hosts file; lines for apps are appended after it.
HOSTS_HEAD = ("# dynod: apps resolve to the router (the bridge's gateway)\n"
              "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")


def dyno_hosts(names: Iterable[str], gateway: IPv4Address, have: str = "") -> str:
    """What to append to the dynos' hosts file ``have`` so that each of ``names``
    resolves to the router (``gateway``): only the missing names, so the file only
    grows (it is bound into running dynos and rewritten in place; a name that is no
    longer an app still reaches the router, which answers 404)."""
    known = {f for line in have.splitlines() if not line.startswith("#")
             for f in line.split()[1:]}
    missing = sorted(set(names) - known)
    return "".join(f"{gateway}\t{n}\n" for n in missing)


def add_dyno_hosts(path: Path, names: Iterable[str], gateway: IPv4Address) -> None:
    """Append the missing ``names`` to the hosts file at ``path`` in place (its inode is
    bound into running dynos, so it is never replaced), made with HOSTS_HEAD first."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    with os.fdopen(fd, "r+") as f:
        have = f.read()
        if not have:
            have = HOSTS_HEAD
            f.write(have)
        f.write(dyno_hosts(names, gateway, have))

# What a dyno's resolver does when an answer does not come: ask again after 1 s, up to
# 5 times (glibc's most; Go's resolver and musl read the same line). glibc's default,
# 5 s twice, turns two lost UDP datagrams into EAI_AGAIN ("Temporary failure in name
# resolution") after a 10 s stall. An upstream resolver that drops queries past a rate
# (this project's machines do: 7 of 300 lookups run 8 at a time failed on the host
# itself, and with these options 0 of 300) then failed a build's pip, npm or apt now
# and then, although the host resolved a name at a time fine. Retries a second apart
# land in the next second's budget.
RESOLVER_OPTIONS = ("timeout:1", "attempts:5")


def dyno_resolv_conf(candidates: Iterable[str]) -> str:
    """resolv.conf for dynos and builds from the host's files, in order of preference.

    A dyno cannot reach the host's loopback (its own netns), so loopback stubs
    (127.0.0.53 of systemd-resolved) are skipped; the first candidate with a
    non-loopback nameserver wins (pass /etc/resolv.conf, then
    /run/systemd/resolve/resolv.conf), with that file's own options (``edns0``,
    ``ndots:N``...) but dynod's ``timeout``/``attempts`` (RESOLVER_OPTIONS). No usable
    server gives a file with no nameserver: lookups fail fast instead of hanging.
    """
    for text in candidates:
        servers = []
        options: list[str] = []
        for line in text.splitlines():
            fields = line.split()
            if len(fields) >= 2 and fields[0] == "nameserver":
                try:
                    addr = ipaddress.ip_address(fields[1].split("%")[0])
                except ValueError:
                    continue
                if not addr.is_loopback and addr.version == 4:
                    servers.append(str(addr))
            elif fields[:1] == ["options"]:
                options += [o for o in fields[1:] if o.partition(":")[0] not in
                            {"timeout", "attempts"} and o not in options]
        if servers:
            body = "".join(f"nameserver {s}\n" for s in servers[:3])
            return ("# dynod: the host's upstream resolvers\n"
                    f"options {' '.join([*options, *RESOLVER_OPTIONS])}\n" + body)
    return "# dynod: the host has no resolver a dyno can reach\n"
