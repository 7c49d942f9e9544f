from __future__ import annotations

import shutil
import socket
import threading
import time
from ipaddress import IPv4Network
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from dynod.errors import InvalidArgument, Unavailable
from dynod.model.sizes import parse_size
from dynod.runtime.limits import limits_for_size
from dynod.system import hostinfo, processes, unit_names, unit_properties, units
from dynod.system.mounts import Bind
from dynod.system.unit_names import DynoName
from dynod.system.unit_properties import DynoSpec, Limits, PidMode

ESCAPE_CASES = [
    "shop",
    "my-shop",
    "web",
    "web_2",
    "a.b",
    ".hidden",
    "with space",
    "slash/inside",
    "ünïcode",
    "x:y",
    "back\\slash",
    "$dollar",
]


@pytest.mark.skipif(shutil.which("systemd-escape") is None, reason="needs systemd-escape")
@pytest.mark.parametrize("text", ESCAPE_CASES)
def test_escape_matches_systemd_escape(text: str) -> None:
    expected = processes.output(["systemd-escape", "--", text]).rstrip("\n")
    assert unit_names.escape(text) == expected
    assert unit_names.unescape(expected) == text


def test_escape_without_systemd() -> None:
    assert unit_names.escape("my-shop") == "my\\x2dshop"
    assert unit_names.escape(".a.b") == "\\x2ea.b"
    assert unit_names.escape("a/b") == "a-b"
    assert unit_names.unescape("my\\x2dshop") == "my-shop"


def test_names_follow_the_design() -> None:
    assert unit_names.unit_name("shop", "web", 1) == "dynod-shop-web.1-1.service"
    assert unit_names.unit_name("shop", "web", 1, 7) == "dynod-shop-web.1-7.service"
    assert unit_names.slice_name("shop") == "dynod-shop.slice"
    # A dash in the app name must not move the dyno into another app's slice.
    assert unit_names.slice_name("my-shop") == "dynod-my\\x2dshop.slice"
    assert unit_names.unit_name("my-shop", "long-worker", 12) == (
        "dynod-my\\x2dshop-long\\x2dworker.12-1.service"
    )
    with pytest.raises(InvalidArgument):
        unit_names.unit_name("shop", "web", 0)
    with pytest.raises(InvalidArgument):
        unit_names.unit_name("", "web", 1)


@pytest.mark.parametrize(
    ("app", "ptype", "n"), [("shop", "web", 1), ("my-shop", "long-worker", 12), ("a", "run", 4520)]
)
def test_parse_unit_name_round_trips(app: str, ptype: str, n: int) -> None:
    name = unit_names.unit_name(app, ptype, n, 3)
    assert unit_names.parse_unit_name(name) == DynoName(app, ptype, n, 3)


@pytest.mark.parametrize(
    "name",
    [
        "dynod.service",
        "dynod-shop.slice",
        "dynod-shop-web.service",
        "dynod-shop-web.0.service",
        "dynod-a-b-c.1-1.service",
        "dynod-shop-web.1.service",
        "other-shop-web.1.service",
    ],
)
def test_parse_unit_name_ignores_other_units(name: str) -> None:
    assert unit_names.parse_unit_name(name) is None


def test_pid_mode_by_systemd_version() -> None:
    assert unit_properties.pid_mode_for(252) is PidMode.WRAPPER
    assert unit_properties.pid_mode_for(256) is PidMode.WRAPPER
    assert unit_properties.pid_mode_for(257) is PidMode.PRIVATE_PIDS


def _spec(**kw: Any) -> DynoSpec:
    base: dict[str, Any] = {
        "app": "shop",
        "process_type": "web",
        "number": 2,
        "release": 7,
        "command": "python3 -m http.server $PORT",
        "root": Path("/run/dynod/dynos/shop-web.2/root"),
        "env": unit_properties.make_env({"DATABASE_URL": "postgres://x", "PORT": "1"}),
        "binds": (Bind(Path("/usr/lib/dynod/dyno-init"), PurePosixPath("/dyno-init")),),
        "netns_path": Path("/run/netns/dynod-shop-web.2"),
        "ip_allow": (IPv4Network("127.0.0.0/8"), IPv4Network("10.213.0.2/32")),
        "limits": Limits(memory_high=512 << 20, memory_max=1 << 30, cpu_weight=100, tasks_max=256),
        "port": 5000,
    }
    base.update(kw)
    return DynoSpec(**base)


def _props(spec: DynoSpec, mode: PidMode) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for name, value in unit_properties.unit_properties(spec, mode):
        out.setdefault(name, []).append(value)
    return out


def test_environment_platform_wins_and_path_default() -> None:
    env = unit_properties.environment(_spec())
    assert "PORT=5000" in env and "PORT=1" not in env
    assert "DYNO=web.2" in env and "HOME=/app" in env
    assert "PATH=/usr/local/bin:/usr/bin:/bin" in env
    assert "DATABASE_URL=postgres://x" in env
    custom = unit_properties.environment(_spec(env=(("PATH", "/app/bin:/usr/bin"),), port=None))
    assert "PATH=/app/bin:/usr/bin" in custom
    assert not any(e.startswith("PORT=") for e in custom)
    with pytest.raises(InvalidArgument, match="not a valid environment variable name"):
        unit_properties.environment(_spec(env=(("BAD-NAME", "x"),)))


def test_properties_wrapper_mode() -> None:
    spec = _spec()
    props = _props(spec, PidMode.WRAPPER)
    assert props["Slice"] == ["dynod-shop.slice"]
    assert props["Type"] == ["exec"]
    [[(path, argv, ignore)]] = props["ExecStart"]
    assert (path, ignore) == ("/dyno-init", False)
    # Output to the journal goes through dyno-init, named as SyslogIdentifier=.
    assert argv[:6] == ["/dyno-init", "--journal", "web.2", "--", "/bin/bash", "-c"]
    assert props["SyslogIdentifier"] == ["web.2"]
    # systemd must not expand the command's variables: bash in the dyno does.
    assert argv[-1] == "python3 -m http.server $$PORT"
    assert '"$$f"' in argv[6]
    assert props["LogExtraFields"] == [["DYNOD_APP=shop", "DYNOD_DYNO=web.2", "DYNOD_RELEASE=7",
                                        "DYNOD_SOURCE=app"]]
    assert props["RootDirectory"] == [str(spec.root)]
    assert props["ReadWritePaths"] == [[f"-{spec.root}/app"]]
    assert props["BindReadOnlyPaths"] == [
        [("/usr/lib/dynod/dyno-init", "/dyno-init", False, 16384)]
    ]
    assert props["NetworkNamespacePath"] == ["/run/netns/dynod-shop-web.2"]
    assert props["PrivateNetwork"] == [True]
    assert props["DynamicUser"] == [True]
    assert props["MemoryHigh"] == [512 << 20] and props["MemoryMax"] == [1 << 30]
    assert props["CPUWeight"] == [100] and props["TasksMax"] == [256]
    assert props["SuccessExitStatus"] == [([143], [15])]
    assert props["TimeoutStopUSec"] == [30_000_000]
    # Allow-list, then deny-list: the order matters and both must be there.
    assert props["SystemCallFilter"] == [
        (True, ["@system-service", "@mount"]),
        (False, ["@resources"]),
    ]
    assert props["CapabilityBoundingSet"] == [1 << 21]
    assert props["AmbientCapabilities"] == [1 << 21]
    # pid, mnt and cgroup: dyno-init's namespaces.
    assert props["RestrictNamespaces"] == [0x20000000 | 0x00020000 | 0x02000000]
    assert props["ProtectControlGroups"] == [True] and "ProtectControlGroupsEx" not in props
    assert "PrivatePIDs" not in props and "PrivateUsers" not in props
    assert props["IPAddressDeny"] == [[(2, bytes(4), 0), (10, bytes(16), 0)]]
    assert props["IPAddressAllow"] == [[(2, b"\x7f\0\0\0", 8), (2, b"\x0a\xd5\0\x02", 32)]]
    assert "MemoryDenyWriteExecute" not in props  # JITs need it off


@pytest.mark.parametrize("mode", list(PidMode))
def test_no_empty_list_property(mode: PidMode) -> None:
    """systemd treats an empty array as "reset the setting": an empty BindPaths= once
    dropped dyno-init's BindReadOnlyPaths= and the unit failed with 203/EXEC."""
    for name, value in unit_properties.unit_properties(_spec(), mode):
        assert value != [], name
    props = _props(_spec(binds=(Bind(Path("/a"), PurePosixPath("/b"), read_only=False),)), mode)
    assert "BindReadOnlyPaths" not in props
    assert props["BindPaths"] == [[("/a", "/b", False, 16384)]]


def test_properties_private_pids_mode() -> None:
    props = _props(_spec(user="shop"), PidMode.PRIVATE_PIDS)
    [[(_, argv, _)]] = props["ExecStart"]
    assert argv[:6] == ["/dyno-init", "--no-pidns", "--no-cgroupns", "--journal", "web.2", "--"]
    # systemd makes the cgroup namespace (read-only /sys/fs/cgroup); dyno-init has no
    # capability to.
    assert props["ProtectControlGroupsEx"] == ["strict"] and "ProtectControlGroups" not in props
    assert props["PrivatePIDs"] == ["yes"] and props["PrivateUsers"] == [True]
    assert props["CapabilityBoundingSet"] == [0] and props["AmbientCapabilities"] == [0]
    assert props["RestrictNamespaces"] == [0]
    assert props["SystemCallFilter"] == [
        (True, ["@system-service"]),
        (False, ["@resources", "@privileged"]),
    ]
    assert props["User"] == ["shop"] and "DynamicUser" not in props


def test_no_netns_means_no_network_at_all() -> None:
    props = _props(_spec(netns_path=None, ip_allow=()), PidMode.WRAPPER)
    assert "NetworkNamespacePath" not in props
    assert props["PrivateNetwork"] == [True]
    assert "IPAddressAllow" not in props


def test_limits_for_size_heroku_memory_model() -> None:
    lim = limits_for_size(parse_size("standard-2x"))
    assert lim.memory_high == 1024 << 20
    assert lim.memory_max == 2048 << 20
    assert (lim.cpu_weight, lim.tasks_max) == (200, 512)


@pytest.mark.parametrize("mode", list(PidMode))
def test_every_property_encodes_with_pystemd(mode: PidMode) -> None:
    """Every property has a D-Bus signature pystemd knows (an unknown one is a KeyError
    only at start time otherwise), and pystemd can encode the values, without a bus."""
    sd = units._pystemd()
    from pystemd.systemd1.unit_signatures import signature_array  # noqa: PLC0415

    props = [(k.encode(), units._dbus_value(v))
             for k, v in unit_properties.unit_properties(_spec(), mode)]
    args = signature_array(units._Props(props))
    assert sd is not None
    names = [a[1] for a in args if a[0] == ord("s")]
    assert names.count(b"SystemCallFilter") == 2


def test_systemd_version_is_the_major_number_systemctl_prints(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hostinfo, "systemctl", lambda argv, timeout=60.0: (
        "systemd 252 (252.39-1~deb12u2)\n+PAM +AUDIT +SELINUX\n"))
    assert hostinfo.systemd_version() == 252

    def missing(argv: list[str], timeout: float = 60.0) -> str:
        raise processes.CommandFailed(["systemctl", *argv], None, "No such file")

    monkeypatch.setattr(hostinfo, "systemctl", missing)
    with pytest.raises(Unavailable, match="systemd version"):
        hostinfo.systemd_version()


def _bus(tmp_path: Path, answer: bytes | None, name: str = "bus"
         ) -> tuple[str, threading.Thread]:
    """A Unix socket standing in for the system bus: it answers the handshake with
    ``answer``, or never (a SIGSTOP'd dbus-daemon accepts nothing either)."""
    path = str(tmp_path / name)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(4)

    def serve() -> None:
        with server:
            if answer is None:
                time.sleep(1.5)
                return
            conn, _ = server.accept()
            with conn:
                assert conn.recv(512).startswith(b"\0AUTH EXTERNAL ")
                conn.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return path, thread


def test_a_stalled_bus_is_reported_in_time_not_waited_for(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, thread = _bus(tmp_path, None)
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={path}")
    began = time.monotonic()
    with pytest.raises(Unavailable, match=r"did not answer in time \(no answer in 0.3 s\).*retry"):
        units.check_bus(timeout=0.3)
    assert time.monotonic() - began < 1.0
    thread.join()


def test_a_live_bus_passes_the_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, thread = _bus(tmp_path, b"OK 0123456789abcdef\r\n")
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={path}")
    units.check_bus(timeout=5.0)
    thread.join()
    path, thread = _bus(tmp_path, b"REJECTED EXTERNAL\r\n", "bus2")
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={path}")
    with pytest.raises(Unavailable, match="REJECTED"):
        units.check_bus(timeout=5.0)
    thread.join()
