"""Pure logic of git push: public keys, the git user's authorized_keys, the forced
command's SSH_ORIGINAL_COMMAND, and a build step's systemd-run argv."""

from __future__ import annotations

import base64
import hashlib
import struct
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

import pytest

from dynod.cli import gitpush
from dynod.errors import InvalidArgument
from dynod.model.keys import OPTIONS, Key, parse_public_key, render_authorized_keys
from dynod.system import mounts, systemctl


def blob(kind: str, payload: bytes = b"\x00" * 32) -> str:
    raw = struct.pack(">I", len(kind)) + kind.encode() + struct.pack(">I", len(payload)) + payload
    return base64.b64encode(raw).decode()


ED = blob("ssh-ed25519")


def test_parse_public_key_gives_type_blob_comment_and_openssh_fingerprint() -> None:
    kind, data, comment, fingerprint = parse_public_key(f"  ssh-ed25519 {ED} me@laptop \n")
    assert (kind, data, comment) == ("ssh-ed25519", ED, "me@laptop")
    digest = base64.b64encode(hashlib.sha256(base64.b64decode(ED)).digest()).decode()
    assert fingerprint == "SHA256:" + digest.rstrip("=")
    assert parse_public_key(f"ssh-ed25519 {ED}")[2] == ""
    rsa = blob("ssh-rsa", b"\x01" * 64)
    assert parse_public_key(f"ssh-rsa {rsa} a b c")[2] == "a b c"


@pytest.mark.parametrize(("text", "says"), [
    ("-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----",
     "that is a private key"),
    (f"ssh-ed25519 {ED} a\nssh-ed25519 {ED} b", "exactly one public key"),
    ("", "not an ssh public key"),
    (f'command="sh" ssh-ed25519 {ED}', "not an ssh public key"),
    (f"ssh-dss {ED}", "not an ssh public key"),
    ("ssh-ed25519 not*base64", "not valid base64"),
    (f"ssh-rsa {ED}", "the key says it is ssh-rsa but its data is 'ssh-ed25519'"),
    (f"ssh-ed25519 {ED} \x01evil", "comment has characters that are not allowed"),
])
def test_parse_public_key_refuses_with_the_reason(text: str, says: str) -> None:
    with pytest.raises(InvalidArgument, match=says.replace("*", r"\*")):
        parse_public_key(text)


def key(key_id: str = "k0123456789ab", kind: str = "ssh-ed25519", data: str = ED) -> Key:
    return Key(id=key_id, owner="root", type=kind, blob=data, comment="c",
                    fingerprint="SHA256:x", created_at=datetime(2024, 1, 1, tzinfo=UTC))


def test_render_authorized_keys_forces_the_git_shell_per_key() -> None:
    text = render_authorized_keys(
        [key(), key("kffffffffffff", data=blob("ssh-ed25519", b"\x02" * 32))],
        ["/usr/lib/dynod/venv/bin/python3", "-m", "dynod.cli.gitpush", "shell"])
    lines = text.splitlines()
    assert lines[0].startswith("# Written by dynod")
    assert lines[2] == (
        'command="/usr/lib/dynod/venv/bin/python3 -m dynod.cli.gitpush shell k0123456789ab",'
        "no-port-forwarding,no-X11-forwarding,no-agent-forwarding,no-pty,no-user-rc "
        f"ssh-ed25519 {ED}")
    assert lines[3].startswith('command="/usr/lib/dynod/venv/bin/python3 -m dynod.cli.gitpush '
                               'shell kffffffffffff",')
    assert len(lines) == 4 and text.endswith("\n")
    # The comment never reaches the file (it is free text).
    assert " c\n" not in text


def test_render_authorized_keys_skips_broken_records_and_escapes_quotes() -> None:
    text = render_authorized_keys(
        [key("bad id"), key(kind="ssh-dss"), key()], ['/opt/we"ird\\py', "shell"])
    entries = [line for line in text.splitlines() if not line.startswith("#")]
    assert entries == [
        'command="/opt/we\\"ird\\\\py shell k0123456789ab",' + OPTIONS + f" ssh-ed25519 {ED}"]


@pytest.mark.parametrize(("command", "expected"), [
    ("git-receive-pack 'shop.git'", ("git-receive-pack", "shop")),
    ("git-receive-pack '/shop.git'", ("git-receive-pack", "shop")),
    ("git-receive-pack 'shop'", ("git-receive-pack", "shop")),
    ("git-upload-pack 'shop.git/'", ("git-upload-pack", "shop")),
    ("git receive-pack 'my-app.git'", ("git-receive-pack", "my-app")),
    ("git-receive-pack '~/repos/shop.git'", ("git-receive-pack", "shop")),
])
def test_parse_original_command(command: str, expected: tuple[str, str]) -> None:
    assert gitpush.parse_original_command(command) == expected


@pytest.mark.parametrize(("command", "says"), [
    ("", "only takes git pushes"),
    ("bash", "only takes git pushes"),
    ("git-receive-pack 'shop.git'; rm -rf /", "only takes git pushes"),
    ("git-upload-archive 'shop.git'", "only takes git pushes"),
    ("scp -t /etc", "only takes git pushes"),
    ("git-receive-pack 'unterminated", "only takes git pushes"),
    ("git-receive-pack 'Shop.git'", "is not an app's repository"),
    ("git-receive-pack '../x.git'", "is not an app's repository"),
    ("git-receive-pack '-x.git'", "is not an app's repository"),
])
def test_parse_original_command_refuses(command: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        gitpush.parse_original_command(command)


def test_build_step_argv() -> None:
    spec = systemctl.BuildStepSpec(
        app="shop", build_id="0123456789abcdef", step=2,
        argv=("/tmp/bp/bin/compile", "/tmp/build", "$HOME"), root=Path("/var/lib/dynod/r"),
        uid=70001, cwd="/tmp/build", init=Path("/usr/lib/dynod/dyno-init"),
        env=(("PATH", "/usr/bin"), ("STACK", "debian-13")),
        binds=(mounts.Bind(Path("/var/lib/dynod/cache/shop"), PurePosixPath("/tmp/cache"),
                           read_only=False),),
        netns_path=Path("/run/netns/build-01234567"), memory_max=512 << 20, tasks_max=4096,
        runtime_max_sec=900)
    argv = systemctl.build_step_argv(spec)
    assert argv[:6] == ["systemd-run", "--pipe", "--wait", "--quiet",
                        "--unit=dynod-build-shop-01234567-2.service",
                        f"--slice={systemctl.BUILDS_SLICE}"]
    props = [argv[i + 1] for i, a in enumerate(argv) if a == "-p"]
    for prop in ("RootDirectory=/var/lib/dynod/r", "WorkingDirectory=/tmp/build", "User=70001",
                 "Group=70001", "NoNewPrivileges=yes",
                 # Only for dyno-init's cgroup namespace; dropped before the command.
                 "CapabilityBoundingSet=CAP_SYS_ADMIN", "AmbientCapabilities=CAP_SYS_ADMIN",
                 "BindReadOnlyPaths=/usr/lib/dynod/dyno-init:/dyno-init",
                 "RestrictSUIDSGID=yes", "ProtectProc=invisible", "RuntimeMaxSec=900",
                 f"MemoryMax={512 << 20}",
                 "TasksMax=4096", "MemorySwapMax=0",
                 "BindPaths=/var/lib/dynod/cache/shop:/tmp/cache",
                 "NetworkNamespacePath=/run/netns/build-01234567", "LogExtraFields=DYNOD_APP=shop"):
        assert prop in props, prop
    assert "--setenv=PATH=/usr/bin" in argv and "--setenv=STACK=debian-13" in argv
    # The command after --, under dyno-init (its cgroup namespace, the host's PID
    # namespace), with $ kept literal (systemd would expand it).
    assert argv[argv.index("--") + 1:] == ["/dyno-init", "--no-pidns", "--",
                                           "/tmp/bp/bin/compile", "/tmp/build", "$$HOME"]


def test_build_step_argv_refuses_a_bad_variable_name() -> None:
    spec = systemctl.BuildStepSpec(app="shop", build_id="0123456789abcdef", step=0, argv=("true",),
                               root=Path("/r"), uid=70001, cwd="/", init=Path("/i"),
                               env=(("A=B", "x"),))
    with pytest.raises(InvalidArgument, match="not a valid name"):
        systemctl.build_step_argv(spec)
