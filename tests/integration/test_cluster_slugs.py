"""Slugs, builds and git across the machines of a cluster: three sandbox machines, one
etcd cluster over TLS (formed here, as test_cluster.py does), each dynod on it with its
peer API. Without placement each machine runs the whole formation, so a release built
on one makes the others fetch its slug: checksum verified, a copy altered on disk
refused and fetched from another machine. A key added through one machine's API lets
the user push to another, which builds there. Nobody without a member certificate
downloads a slug."""

from __future__ import annotations

import base64
import json
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from dynod.model.cluster import PEER_PORT, Member, to_json
from dynod.router import local_ca
from tests.integration.conftest import cluster, stack_bind
from tests.integration.test_builds import EXAMPLES, SSH, commit, push, setup_push, sh
from tests.integration.test_cluster import CURL, TLS, start_members
from tests.integration.test_dynos import ps, wait_for
from tests.sandbox.machine import PROJECT, Machine

# make test runs each module on one worker (--dist loadfile): its tests share its cluster.
pytestmark = pytest.mark.integration


def journal(m: Machine, unit: str = "") -> str:
    return sh(m, f"journalctl {unit} -o cat --no-pager", ok=False)[1]


def put(m: Machine, key: str, value: str) -> None:
    """Write ``key`` in the cluster's etcd (its v3 JSON gateway, a member's certificate)."""
    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    body = json.dumps({"key": b64(key), "value": b64(value)})
    m.exec([*CURL, "-X", "POST", "-d", body, f"https://{m.test_address}:2379/v3/kv/put"])


def form_cluster(machines: list[Machine]) -> None:
    """Three etcd members over TLS, each machine's dynod on them with its peer API, and
    the members' records (what cluster:join will write)."""
    start_members(machines, local_ca.make_ca(datetime.now(UTC), "test-cluster"))
    for i, m in enumerate(machines):
        # The peer API at the member's address, PEER_PORT: the record need not say so.
        put(m, f"/dynod-cluster/members/{m.name}", to_json(Member(
            m.name, m.test_address, f"{m.test_address}:5443", f"10.217.{i}.0/24")))
        settings = [
            'store = "etcd"', f'etcd_endpoints = "{m.test_address}:2379"',
            f'etcd_ca_file = "{TLS}/ca.crt"', f'etcd_cert_file = "{TLS}/member.crt"',
            f'etcd_key_file = "{TLS}/member.key"', f'node_name = "{m.name}"',
            f'node_address = "{m.test_address}"',
            f'peer_listen = "{m.test_address}:{PEER_PORT}"']
        m.exec(["sh", "-c", "mkdir -p /etc/dynod && cat > /etc/dynod/dynod.toml && "
                "systemctl stop dynod && rm -f /var/lib/dynod/state.db*"],
               input="\n".join(settings) + "\n")


@pytest.fixture(scope="module")
def machines(stack: Path) -> Iterator[list[Machine]]:
    """A, B and C in the order of their names: the order a machine asks the others."""
    with cluster(3, [stack_bind(stack)]) as found:
        ordered = sorted(found, key=lambda m: m.name)
        form_cluster(ordered)
        yield ordered


def start_dynod(m: Machine) -> None:
    m.exec(["systemctl", "start", "dynod"], timeout=300)
    wait_for(f"the API on {m.name}", lambda: sh(m, "dynoctl apps", ok=False)[0] == 0,
             timeout=120)


def up_on(m: Machine, node: Machine, release: int | None = None) -> dict[str, object]:
    """The web dyno placed on ``node``, up (on ``release`` if given), seen from ``m``."""
    def check() -> dict[str, object] | None:
        found = [d for d in ps(m, "shop") if d["type"] == "web" and d["state"] == "up"
                 and d.get("node") == node.name
                 and (release is None or d["release"] == release)]
        return found[0] if found else None

    got = wait_for(f"a web dyno up on {node.name}", check, timeout=180)
    assert isinstance(got, dict)
    return got


def stored_slugs(m: Machine) -> list[str]:
    """The checksums of the slugs ``m`` stores."""
    out = sh(m, "ls /var/lib/dynod/slugs/ | grep '[.]tgz$'", ok=False)[1]
    return ["sha256:" + name.removesuffix(".tgz") for name in out.split()]


def test_slugs_travel_keys_follow_and_a_push_to_any_machine_builds_there(
        machines: list[Machine]) -> None:
    a, b, c = machines
    start_dynod(a)
    start_dynod(c)
    # A builds; placement puts the second web dyno on C, which fetches the slug from A.
    setup_push(a, "shop", str(EXAMPLES / "shell"))
    out = push(a, "shop")
    assert "remote:        Released v2" in out, out
    sh(a, "dynoctl ps:scale -a shop web=2")
    up_on(a, a)
    up_on(a, c)
    # C never built: the one slug it stores is the one it fetched.
    assert len(stored_slugs(c)) == 1, stored_slugs(c)
    checksum = stored_slugs(c)[0]
    assert checksum in stored_slugs(a)
    assert (f"Slug {checksum} fetched from {a.name}" in journal(c)), journal(c)[-3000:]
    assert sh(c, f"sha256sum /var/lib/dynod/slugs/{checksum[7:]}.tgz")[1].startswith(
        checksum[7:])

    # A's copy altered on disk (same size): B asks A first, refuses it, gets C's.
    sh(a, f"printf 'X' | dd of=/var/lib/dynod/slugs/{checksum[7:]}.tgz bs=1 seek=100 "
          "conv=notrunc status=none")
    start_dynod(b)
    sh(a, "dynoctl ps:scale -a shop web=3")
    up_on(a, b)
    lines = journal(b)
    assert f"Slug {checksum} from {a.name} refused: slug tarball's checksum is" in lines, \
        lines[-3000:]
    assert f"Slug {checksum} fetched from {c.name}" in lines, lines[-3000:]
    assert sh(b, f"sha256sum /var/lib/dynod/slugs/{checksum[7:]}.tgz")[1].startswith(
        checksum[7:])

    # A key added through A's API reaches B's git user; a push to B builds on B.
    sh(a, "ssh-keygen -q -t ed25519 -N '' -f /root/.ssh/second && "
          "dynoctl keys:add /root/.ssh/second.pub")
    key = sh(a, "cut -d' ' -f2 /root/.ssh/second.pub")[1].strip()
    wait_for(f"the key in {b.name}'s authorized_keys", lambda: key in sh(
        b, "cat ~dynod/.ssh/authorized_keys", ok=False)[1], timeout=30)
    commit(a, "shop", "NOTE", "second")
    sh(a, f"cd /tmp/shop && git remote add b dynod@{b.test_address}:shop.git")
    code, out = sh(a, f"cd /tmp/shop && GIT_SSH_COMMAND='{SSH} -i /root/.ssh/second "
                      "-o IdentitiesOnly=yes' git push b main 2>&1", ok=False)
    assert code == 0 and "remote:        Released v3" in out, out
    # B made the app's repository on this first push, and has a build cache of its own.
    last = sh(b, "git -c safe.directory='*' -C /var/lib/dynod/repos/shop.git log -1 "
                 "--format=%s")[1]
    assert last.strip() == "change"
    assert sh(b, "test -d /var/lib/dynod/cache/shop", ok=False)[0] == 0
    # A runs v3 too, on the slug B built, fetched from B.
    up_on(a, a, release=3)
    assert f"fetched from {b.name}" in journal(a), journal(a)[-3000:]


# Run inside a machine: fetch a slug from a peer with the credentials given.
FETCH = textwrap.dedent("""
    import sys, grpc
    from dynod.v1 import peers_pb2, peers_pb2_grpc
    address, checksum, how = sys.argv[1:4]
    tls = "/var/lib/dynod/cluster/tls/"
    ca = open(tls + "ca.crt", "rb").read()
    if how == "member":
        creds = grpc.ssl_channel_credentials(ca, open(tls + "member.key", "rb").read(),
                                             open(tls + "member.crt", "rb").read())
    else:
        creds = grpc.ssl_channel_credentials(ca)
    with grpc.secure_channel(address, creds) as channel:
        stream = peers_pb2_grpc.PeersStub(channel).FetchSlug(
            peers_pb2.FetchSlugRequest(checksum=checksum), timeout=20,
            metadata=[("authorization", "Bearer dynod_a-user-token")])
        try:
            got = sum(len(m.data) for m in stream)
            print("GOT", got)
        except grpc.RpcError as exc:
            print("REFUSED", exc.code().name)
""")


def test_only_members_download_slugs(machines: list[Machine]) -> None:
    _, b, c = machines
    checksum = stored_slugs(c)[0]

    def fetch(how: str) -> str:
        return b.exec([str(PROJECT / ".venv/bin/python"), "-c", FETCH,
                       f"{c.test_address}:{PEER_PORT}", checksum, how]).stdout

    # No client certificate (a token means nothing here): the handshake refuses it.
    assert fetch("token").strip() == "REFUSED UNAVAILABLE"
    plain = b.exec(["curl", "-sS", "-m", "5", f"http://{c.test_address}:{PEER_PORT}/"],
                   check=False)
    assert plain.returncode != 0
    # A member's certificate gets the whole tarball.
    size = int(sh(c, f"stat -c %s /var/lib/dynod/slugs/{checksum[7:]}.tgz")[1])
    assert fetch("member").strip() == f"GOT {size}"


def test_a_slug_no_machine_has_fails_the_dyno_saying_what_to_do(
        machines: list[Machine]) -> None:
    a, b, c = machines
    newest = sh(b, "ls -t /var/lib/dynod/slugs/ | grep '[.]tgz$' | head -1")[1].strip()
    checksum = "sha256:" + newest.removesuffix(".tgz")
    for m in machines:
        sh(m, f"rm -f /var/lib/dynod/slugs/{newest}")
    # C's unpacked tree gone too (set aside, as a damaged one is): a start must fetch.
    sh(c, f"cd /var/lib/dynod/slugs/trees && for t in {checksum[7:]}-*; do "
          f"mv $t .$t.damaged-1; rm -f .$t.manifest; done")
    name = up_on(c, c)["name"]
    sh(c, f"dynoctl ps:restart -a shop {name}")
    wait_for(f"{name} crashed on C", lambda: any(
        d["name"] == name and d["state"] == "crashed" for d in ps(c, "shop")), timeout=90)
    lines = journal(c)
    assert (f"Error starting process: slug {checksum} is stored on no machine of the "
            f"cluster that answered ({a.name}: slug {checksum} is not stored on {a.name}; "
            f"{b.name}: slug {checksum} is not stored on {b.name}); deploy the app again "
            "(git push, or dynoctl releases:rollback to a release whose slug a machine "
            "has)") in lines, lines[-3000:]
    # The machines that have its tree keep serving.
    up_on(a, a)
    up_on(a, b)
