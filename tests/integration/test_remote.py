"""dynoctl from a laptop: a network namespace inside the machine with a veth to it is
the laptop; everything it does goes over TLS to api_listen, and git over ssh to the
machine's address. Users, tokens, collaborators and strangers, as a user sees them."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.integration.test_builds import EXAMPLES, sh
from tests.sandbox.machine import Machine

pytestmark = [pytest.mark.integration, pytest.mark.network]

PYTHON = Path(__file__).resolve().parents[2] / ".venv/bin/python"
SERVER = "10.77.0.1"
SSH = ("ssh -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"
       " -o BatchMode=yes -o IdentitiesOnly=yes -i {home}/.ssh/id_ed25519")


def laptop(m: Machine, who: str, script: str, *, ok: bool = True) -> tuple[int, str]:
    """``script`` on the laptop as ``who`` (their own HOME; no socket in reach)."""
    home = f"/tmp/{who}"
    env = (f"env -u DYNOD_SOCKET HOME={home} GIT_SSH_COMMAND='{SSH.format(home=home)}' "
           "GIT_AUTHOR_NAME=l GIT_AUTHOR_EMAIL=l@example.com GIT_COMMITTER_NAME=l "
           "GIT_COMMITTER_EMAIL=l@example.com")
    quoted = script.replace("'", "'\\''")
    return sh(m, f"mkdir -p {home} && cd {home} && ip netns exec laptop {env} "
                 f"bash -c '{quoted}'", ok=ok)


def sign_up(m: Machine, who: str) -> None:
    """users:add on the server, then login and keys:add from the laptop."""
    email = f"{who}@example.com"
    out = sh(m, f"dynoctl users:add {email}")[1]
    password = re.search(r"One-time password: (\w+)", out)
    assert password, out
    out = laptop(m, who, f"printf '%s\\n' {email} {password.group(1)} | "
                         f"dynoctl login --host {SERVER} --ca /tmp/ca.pem")[1]
    assert f"Logged in as {email}" in out, out
    assert laptop(m, who, "stat -c %a .config/dynoctl/credentials.json")[1].strip() == "600"
    laptop(m, who, "mkdir -m 700 -p .ssh && ssh-keygen -q -t ed25519 -N '' -f .ssh/id_ed25519 && "
                   "dynoctl keys:add .ssh/id_ed25519.pub")


@contextmanager
def laptop_network(m: Machine, *settings: str) -> Iterator[None]:
    """The laptop netns (10.77.0.2, the machine at SERVER), dynod restarted with
    ``settings`` (dynod.toml lines) and its CA in /tmp/ca.pem; removed after."""
    sh(m, "ip netns add laptop && ip link add lap0 type veth peer name eth0 netns laptop"
          f" && ip addr add {SERVER}/24 dev lap0 && ip link set lap0 up"
          " && ip netns exec laptop sh -c 'ip addr add 10.77.0.2/24 dev eth0 && "
          "ip link set eth0 up && ip link set lo up'")
    try:
        lines = " ".join(f"'{line}'" for line in settings)
        sh(m, f"mkdir -p /etc/dynod && printf '%s\\n' {lines} > /etc/dynod/dynod.toml && "
              "systemctl restart dynod && dynoctl certs:ca > /tmp/ca.pem")
        yield
    finally:
        sh(m, "ip netns del laptop; ip link del lap0", ok=False)


def test_dynoctl_and_git_push_from_a_laptop(stack_machine: Machine) -> None:
    with laptop_network(stack_machine, f'api_listen = "{SERVER}:5443"',
                        f'api_names = "{SERVER}"'):
        run_laptop(stack_machine)


def run_laptop(m: Machine) -> None:
    # TLS only, and only to a CA the laptop was told to trust.
    code, out = laptop(m, "eve", f"{PYTHON} -c \"import grpc; from grpc_health.v1 import "
                       "health_pb2 as h, health_pb2_grpc as g; g.HealthStub(grpc."
                       f"insecure_channel('{SERVER}:5443')).Check(h.HealthCheckRequest(), "
                       "timeout=5)\"", ok=False)
    assert code != 0 and "StatusCode.UNAVAILABLE" in out, out
    sh(m, "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 "
          "-subj /CN=other -keyout /tmp/other.key -out /tmp/other.pem 2>/dev/null")
    code, out = laptop(m, "eve", f"printf 'e@example.com\\nx\\n' | dynoctl login --host "
                       f"{SERVER} --ca /tmp/other.pem", ok=False)
    assert code == 1 and "the server's certificate is not signed by a CA you trust" in out

    sign_up(m, "alice")
    assert laptop(m, "alice", "dynoctl auth:whoami")[1] == "alice@example.com\n"
    laptop(m, "alice", f"cp -r {EXAMPLES / 'shell'} shop && cd shop && git init -q -b main"
                       " && git add -A && git commit -qm init")
    out = laptop(m, "alice", "cd shop && dynoctl apps:create shop")[1]
    assert f"| dynod@{SERVER}:shop.git" in out, out
    out = laptop(m, "alice", "cd shop && git push dynod main 2>&1")[1]
    assert "remote: Verifying deploy... done." in out, out
    laptop(m, "alice", "dynoctl ps:scale web=2 -a shop")
    out = laptop(m, "alice", "for i in $(seq 60); do dynoctl ps -a shop | grep -q "
                             "\"web.2: up\" && break; sleep 1; done; dynoctl ps -a shop")[1]
    assert re.search(r"web\.1: up", out) and re.search(r"web\.2: up", out), out
    out = laptop(m, "alice", "dynoctl run -a shop -- echo hello-from-the-laptop")[1]
    assert "hello-from-the-laptop" in out, out
    out = laptop(m, "alice", "timeout 10 dynoctl logs --tail -a shop", ok=False)[1]
    assert re.search(r"app\[api\]: Deploy [0-9a-f]{8} by user alice@example\.com", out), out
    assert re.search(r"app\[api\]: Scaled to web@2:\S+ by user alice@example\.com", out), out

    # A stranger's key cannot push to the app: Heroku's refusal, nothing changes.
    sign_up(m, "mallory")
    laptop(m, "mallory", f"git clone -q /tmp/alice/shop shop && cd shop && git remote add "
                         f"dynod dynod@{SERVER}:shop.git && echo x > x && git add x && "
                         "git commit -qm evil")
    code, out = laptop(m, "mallory", "cd shop && git push dynod main 2>&1", ok=False)
    assert code != 0 and "You do not have access to the app shop." in out, out
    code, out = laptop(m, "mallory", "dynoctl releases -a shop", ok=False)
    assert code == 1 and "You do not have access to the app shop." in out, out
    releases = sh(m, "dynoctl releases -a shop")[1]
    assert releases.count("Deploy") == 1, releases

    # A collaborator deploys, but cannot destroy.
    sign_up(m, "bob")
    laptop(m, "alice", "dynoctl access:add bob@example.com -a shop")
    laptop(m, "bob", f"git clone -q /tmp/alice/shop shop && cd shop && git remote add "
                     f"dynod dynod@{SERVER}:shop.git && echo hi > hi.txt && git add hi.txt"
                     " && git commit -qm hi")
    out = laptop(m, "bob", "cd shop && git push dynod main 2>&1")[1]
    assert "remote: Verifying deploy... done." in out, out
    assert re.search(r"Deploy [0-9a-f]{8}\s+bob@example\.com",
                     sh(m, "dynoctl releases -a shop")[1])
    code, out = laptop(m, "bob", "dynoctl apps:destroy -a shop --confirm shop", ok=False)
    assert code == 1 and "only the owner of shop (alice@example.com)" in out, out
    assert "shop" in sh(m, "dynoctl apps")[1]

    # A revoked token: every call fails with the fix.
    token_id = laptop(m, "alice", "dynoctl authorizations")[1].split()[1]
    laptop(m, "alice", f"dynoctl authorizations:revoke {token_id}")
    for command in ("apps", "ps -a shop", "logs -a shop", "run -a shop -- true"):
        code, out = laptop(m, "alice", f"dynoctl {command}", ok=False)
        assert code == 1 and "your token is not valid (revoked" in out and (
            "dynoctl login --host HOST" in out), (command, out)
