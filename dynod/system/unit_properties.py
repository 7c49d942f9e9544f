"""A dyno's transient unit as data: a ``DynoSpec`` in, unit properties out. Pure.

``units.start_dyno`` sends these properties to systemd (``StartTransientUnit``); unit
tests check them without systemd.

Process model. systemd >= 257 has ``PrivatePIDs=``: the unit gets its own PID
namespace and dyno-init only reaps and forwards (``--no-pidns``); that allows the
tightest sandbox (no capability at all, ``PrivateUsers=``). On older systemd (Debian
12 has 252) dyno-init makes the PID namespace itself, which costs an ambient
CAP_SYS_ADMIN (dropped before the command runs), ``@mount`` and
``RestrictNamespaces=pid mnt cgroup``: ``systemd-analyze security`` exposure 1.6
(1.5 before the cgroup namespace) against 0.5. Either way the dyno has its own cgroup
namespace and sees only its own cgroup under /sys/fs/cgroup (dyno-init makes it on
systemd < 257, systemd itself from 257).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

from dynod.errors import InvalidArgument
from dynod.system import libc
from dynod.system.mounts import INIT_PATH, Bind
from dynod.system.unit_names import slice_name

APP_DIR = "/app"
# Heroku (hsup, `heroku run env`): PATH before buildpack .profile.d additions.
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
# Heroku: SIGTERM, then SIGKILL after 30 s (dyno-shutdown-behavior).
STOP_TIMEOUT_USEC = 30_000_000
# The first systemd with PrivatePIDs=.
PRIVATE_PIDS_SINCE = 257
# <linux/capability.h>, <sys/socket.h>, <errno.h>
CAP_SYS_ADMIN = 21
AF_INET = 2
AF_INET6 = 10
EPERM = 1

# Heroku: config vars, then .profile.d/*.sh, then .profile, then `bash -c COMMAND`
# (dyno-startup-behavior). $1 is the command; the second bash execs a simple one.
LAUNCHER = (
    'for f in /app/.profile.d/*.sh; do if [ -r "$f" ]; then . "$f"; fi; done; unset f; '
    'if [ -r /app/.profile ]; then . /app/.profile; fi; exec bash -c "$1"'
)


class PidMode(StrEnum):
    """How a dyno gets its own PID namespace."""

    WRAPPER = "wrapper"  # dyno-init unshares it (systemd < 257)
    PRIVATE_PIDS = "private-pids"  # systemd's PrivatePIDs= (systemd >= 257)


@dataclass(frozen=True)
class Limits:
    """cgroup limits of one dyno. Bytes for memory; None leaves systemd's default."""

    memory_high: int | None = None  # quota: throttled and reclaimed above (R14)
    memory_max: int | None = None  # killed above (R15)
    cpu_weight: int | None = None
    tasks_max: int | None = None


@dataclass(frozen=True)
class DynoSpec:
    """Everything systemd needs to run one dyno. Paths are host paths.

    ``env`` holds the release's config vars; the platform adds ``PORT`` (when set),
    ``DYNO``, ``HOME`` and ``PATH`` (a config var ``PATH`` wins over the default).
    ``root`` is the mounted overlay (``RootfsPlan.root``), ``binds`` its ``Bind``
    entries (dyno-init among them). ``user`` None means ``DynamicUser=yes``.
    """

    app: str
    process_type: str
    number: int
    release: int
    command: str
    root: Path
    env: tuple[tuple[str, str], ...] = ()
    binds: tuple[Bind, ...] = ()
    netns_path: Path | None = None
    ip_allow: tuple[IPv4Network, ...] = ()
    limits: Limits = field(default_factory=Limits)
    user: str | None = None
    group: str | None = None
    port: int | None = None
    generation: int = 1
    # One-off dynos: stdin, stdout, stderr of the command (a pty's slave, or pipes),
    # passed to systemd as file descriptors; None leaves systemd's (journal).
    stdio: tuple[int, int, int] | None = None

    @property
    def dyno(self) -> str:
        """Heroku's dyno name, ``web.1``."""
        return f"{self.process_type}.{self.number}"


def make_env(config: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """Config vars as DynoSpec.env, sorted so equal configs give equal specs."""
    return tuple(sorted(config.items()))


Property = tuple[str, Any]


def pid_mode_for(systemd_version: int) -> PidMode:
    """The PID mode a systemd of this major version allows (``hostinfo.systemd_version``)."""
    return PidMode.PRIVATE_PIDS if systemd_version >= PRIVATE_PIDS_SINCE else PidMode.WRAPPER


def literal(arg: str) -> str:
    """systemd expands ``$VAR`` in ExecStart= arguments at exec time; ``$$`` is a
    literal ``$``. Commands are expanded by bash in the dyno, never by systemd."""
    return arg.replace("$", "$$")


def exec_argv(spec: DynoSpec, mode: PidMode) -> list[str]:
    """dyno-init, then bash running the launcher with the command as ``$1``. Output to
    the journal goes through dyno-init (``--journal``, named as SyslogIdentifier=), which
    keeps it flowing across a stop of journald; a one-off's terminal or pipes do not."""
    # systemd >= 257 makes both namespaces itself (PrivatePIDs=, ProtectControlGroups=).
    init = [str(INIT_PATH)] + (
        ["--no-pidns", "--no-cgroupns"] if mode is PidMode.PRIVATE_PIDS else [])
    if spec.stdio is None:
        init += ["--journal", spec.dyno]
    return [*init, "--", "/bin/bash", "-c", LAUNCHER, "dyno", spec.command]


def environment(spec: DynoSpec) -> list[str]:
    """``KEY=value`` strings: config vars, then the platform's (which win)."""
    env: dict[str, str] = {"PATH": DEFAULT_PATH}
    env.update(spec.env)
    env.update({"DYNO": spec.dyno, "HOME": APP_DIR})
    if spec.port is not None:
        env["PORT"] = str(spec.port)
    for key in env:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise InvalidArgument(
                f"app {spec.app!r}: config var name {key!r} is not a valid environment "
                "variable name; rename it"
            )
    return [f"{k}={v}" for k, v in env.items()]


def _mask(bits: Iterable[int]) -> int:
    mask = 0
    for bit in bits:
        mask |= bit
    return mask


def unit_properties(spec: DynoSpec, mode: PidMode) -> list[Property]:
    """The transient unit's properties, in order; a name may repeat (SystemCallFilter
    allow-list then deny-list), which is why this is a list and not a dict.

    Values are the Python shapes of the properties' D-Bus signatures (see units.py).
    Raises InvalidArgument for a bad config var name.
    """
    pidns = mode is PidMode.WRAPPER
    props: list[Property] = [
        ("Description", f"dynod {spec.app} {spec.dyno} (v{spec.release})"),
        ("Slice", slice_name(spec.app)),
        # Type=exec: active once the command is exec'd; "up" is judged by dynod.
        ("Type", "exec"),
        ("ExecStart", [(str(INIT_PATH), [literal(a) for a in exec_argv(spec, mode)], False)]),
        ("Environment", environment(spec)),
        (
            "LogExtraFields",
            [
                f"DYNOD_APP={spec.app}",
                f"DYNOD_DYNO={spec.dyno}",
                f"DYNOD_RELEASE={spec.release}",
                "DYNOD_SOURCE=app",
            ],
        ),
        ("SyslogIdentifier", spec.dyno),
        ("RootDirectory", str(spec.root)),
        ("MountAPIVFS", True),
        ("WorkingDirectory", APP_DIR),
    ]
    if spec.stdio is not None:
        props += [("StandardInputFileDescriptor", spec.stdio[0]),
                  ("StandardOutputFileDescriptor", spec.stdio[1]),
                  ("StandardErrorFileDescriptor", spec.stdio[2])]
    # Both go to one list in systemd, and an empty array *resets* that list: send
    # only non-empty ones, or an empty BindPaths= drops the read-only binds. Binds are
    # recursive (MS_REC), as BindPaths= in a unit file is by default (rbind).
    for prop, read_only in (("BindReadOnlyPaths", True), ("BindPaths", False)):
        binds = [
            (str(b.source), str(b.target), False, libc.MS_REC)
            for b in spec.binds
            if b.read_only is read_only
        ]
        if binds:
            props.append((prop, binds))
    if spec.netns_path is not None:
        # The path wins over PrivateNetwork=; PrivateNetwork= alone would mean "no
        # network", so a missing path can never leave the dyno on the host's network.
        props += [("NetworkNamespacePath", str(spec.netns_path)), ("PrivateNetwork", True)]
    else:
        props.append(("PrivateNetwork", True))
    props.append(("User", spec.user) if spec.user else ("DynamicUser", True))
    if spec.group:
        props.append(("Group", spec.group))
    lim = spec.limits
    props += [("MemoryAccounting", True), ("TasksAccounting", True), ("CPUAccounting", True)]
    if lim.memory_high is not None:
        props.append(("MemoryHigh", lim.memory_high))
    if lim.memory_max is not None:
        props.append(("MemoryMax", lim.memory_max))
    if lim.cpu_weight is not None:
        props.append(("CPUWeight", lim.cpu_weight))
    if lim.tasks_max is not None:
        props.append(("TasksMax", lim.tasks_max))
    props += [
        # Lifecycle: dynod restarts crashed dynos itself (Heroku's back-off). The unit
        # stays loaded after its command exits (active/exited, or failed), so dynod can
        # read the exit status and log it; dynod then stops it (and resets it).
        ("Restart", "no"),
        ("RemainAfterExit", True),
        ("KillMode", "control-group"),
        ("TimeoutStopUSec", STOP_TIMEOUT_USEC),
        ("SendSIGKILL", True),
        # Heroku: "Process exited with status 143" after SIGTERM is a clean stop.
        ("SuccessExitStatus", ([143], [15])),
        # Sandboxing (harness.md 2.3). No MemoryDenyWriteExecute=: it breaks every JIT
        # (V8, the JVM, PyPy, YJIT), i.e. most Heroku apps.
        ("NoNewPrivileges", True),
        ("PrivateTmp", True),
        ("ProtectSystem", "strict"),
        # Relative to the host's root, not RootDirectory= (systemd 252, verified).
        ("ReadWritePaths", [f"-{spec.root}{APP_DIR}"]),
        ("ProtectHome", "yes"),
        ("PrivateDevices", True),
        ("DevicePolicy", "closed"),
        ("PrivateIPC", True),
        ("ProtectKernelTunables", True),
        ("ProtectKernelModules", True),
        ("ProtectKernelLogs", True),
        # A cgroup namespace rooted at the dyno's own cgroup and /sys/fs/cgroup mounted
        # from it, read-only: other apps' slices and figures stay out of sight, the
        # dyno's own limits (memory.max, memory.limit_in_bytes) in sight. systemd 257
        # does it (strict: read-only); before, dyno-init does (below).
        (("ProtectControlGroups", True) if pidns else ("ProtectControlGroupsEx", "strict")),
        ("ProtectClock", True),
        ("ProtectHostname", True),
        ("ProtectProc", "invisible"),
        ("ProcSubset", "pid"),
        ("RestrictAddressFamilies", (True, ["AF_INET", "AF_INET6", "AF_UNIX"])),
        ("LockPersonality", True),
        ("RestrictRealtime", True),
        ("RestrictSUIDSGID", True),
        ("RemoveIPC", True),
        ("SystemCallArchitectures", ["native"]),
        ("UMask", 0o077),
        ("KeyringMode", "private"),
        ("SystemCallErrorNumber", EPERM),
        ("SystemCallFilter", (True, ["@system-service", *(["@mount"] if pidns else [])])),
        ("SystemCallFilter", (False, ["@resources", *([] if pidns else ["@privileged"])])),
    ]
    if spec.ip_allow:
        props += [
            # "any" is both families; dynos have no IPv6 address, so v6 stays denied.
            ("IPAddressDeny", [(AF_INET, bytes(4), 0), (AF_INET6, bytes(16), 0)]),
            (
                "IPAddressAllow",
                [(AF_INET, n.network_address.packed, n.prefixlen) for n in spec.ip_allow],
            ),
        ]
    if pidns:
        cap = 1 << CAP_SYS_ADMIN
        props += [
            ("CapabilityBoundingSet", cap),
            ("AmbientCapabilities", cap),
            ("RestrictNamespaces",
             _mask((libc.CLONE_NEWPID, libc.CLONE_NEWNS, libc.CLONE_NEWCGROUP))),
        ]
    else:
        props += [
            ("PrivatePIDs", "yes"),  # a string on D-Bus ("yes"), checked with busctl on 257
            ("CapabilityBoundingSet", 0),
            ("AmbientCapabilities", 0),
            ("RestrictNamespaces", 0),
            ("PrivateUsers", True),
        ]
    return props
