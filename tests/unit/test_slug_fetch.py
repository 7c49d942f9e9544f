"""Slugs fetched on demand from the cluster's other machines: the first good copy is
kept, a copy cut short or altered is refused and the next machine asked, and when none
has it the error names the slug, each machine's answer and what to do. Then the real
peer API on loopback: mutual TLS with certificates of the cluster's CA, and nobody
without one (no certificate, a user's token, another CA's certificate) gets a byte."""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest

from dynod.api.peers import PeerSlugs, PeerTls, start_peer_api
from dynod.errors import NotFound, Unavailable
from dynod.model.cluster import Located, Member, Node, Placement, from_json, peer_address
from dynod.model.slugs import path_of
from dynod.router import local_ca
from dynod.settings import Settings
from dynod.slug import fetch, trees
from dynod.v1 import peers_pb2, peers_pb2_grpc
from tests.unit.test_slug_trees import stored_slug

UID = os.getuid()


class FakePeers:
    """Machines answering with the given bytes (and size, when it is given apart: a
    transfer cut short), or raising the given error."""

    def __init__(self, answers: dict[str, bytes | tuple[int, bytes] | Exception]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    def peers(self) -> list[str]:
        return list(self.answers)

    def download(self, peer: str, checksum: str) -> tuple[int, Iterator[bytes]]:
        self.asked.append(peer)
        answer = self.answers[peer]
        if isinstance(answer, Exception):
            raise answer
        size, data = answer if isinstance(answer, tuple) else (len(answer), answer)
        return size, iter([data[:10], data[10:]])


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(state_dir=tmp_path / "state", runtime_dir=tmp_path / "run")


def slug_bytes(tmp_path: Path) -> tuple[str, bytes]:
    source = Settings(state_dir=tmp_path / "source", runtime_dir=tmp_path / "srun")
    checksum = stored_slug(source, {"./app/server.sh": b"echo hi\n"})
    return checksum, path_of(source.state_dir / "slugs", checksum).read_bytes()


def test_an_altered_copy_is_refused_and_the_next_machine_gives_a_good_one(
        settings: Settings, tmp_path: Path) -> None:
    checksum, good = slug_bytes(tmp_path)
    altered = good[:-1] + bytes([good[-1] ^ 0xFF])
    peers = FakePeers({"node-a": altered, "node-b": (len(good), good[:-5]),
                       "node-c": good})
    said: list[str] = []
    tree = trees.slug_tree(settings, checksum, UID, said.append, peers=peers)
    assert (tree / "app" / "server.sh").read_bytes() == b"echo hi\n"
    assert peers.asked == ["node-a", "node-b", "node-c"]
    assert said[0].startswith(f"Slug {checksum} from node-a refused: slug tarball's checksum")
    assert "cut short" in said[1] and "node-b" in said[1]
    assert said[2] == (f"Slug {checksum} fetched from node-c ({len(good)} bytes, "
                       "checksum verified)")
    # Only the good copy is kept; nothing half-written is left beside it.
    slugs = settings.state_dir / "slugs"
    assert sorted(p.name for p in slugs.iterdir() if p.is_file()) == [
        path_of(slugs, checksum).name]
    assert path_of(slugs, checksum).read_bytes() == good


def test_no_machine_has_it_names_the_slug_each_answer_and_what_to_do(
        settings: Settings, tmp_path: Path) -> None:
    checksum, good = slug_bytes(tmp_path)
    peers = FakePeers({"node-a": NotFound(f"slug {checksum} is not stored on node-a"),
                       "node-b": Unavailable("not reachable at 10.0.0.3:5480"),
                       "node-c": bytes([good[0] ^ 0xFF]) + good[1:]})
    with pytest.raises(NotFound) as caught:
        trees.slug_tree(settings, checksum, UID, peers=peers)
    assert caught.value.message == (
        f"slug {checksum} is stored on no machine of the cluster that answered "
        f"(node-a: slug {checksum} is not stored on node-a; node-b: not reachable at "
        "10.0.0.3:5480; node-c: a bad copy); deploy the app again (git push, or dynoctl "
        "releases:rollback to a release whose slug a machine has)")
    assert not path_of(settings.state_dir / "slugs", checksum).exists()


def test_alone_it_says_so(settings: Settings, tmp_path: Path) -> None:
    checksum, _ = slug_bytes(tmp_path)
    with pytest.raises(NotFound, match="no other machine is in the cluster"):
        fetch.fetch_slug(settings.state_dir / "slugs", checksum, FakePeers({}))


# ---- the peer API for real, on loopback


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class View:
    def __init__(self, me: str, machines: dict[str, str]) -> None:
        self._me = me
        self.machines = machines

    @property
    def me(self) -> str:
        return self._me

    def members(self) -> list[Member]:
        return [Member(n, "127.0.0.1", "127.0.0.1:5443", "10.1.0.0/16", peer=peer)
                for n, peer in self.machines.items()]

    def nodes(self) -> list[Node]:
        return [Node(n, "127.0.0.1", "127.0.0.1:5443", "10.1.0.0/16", 1024, peer=peer)
                for n, peer in self.machines.items()]

    def leader(self) -> None:
        return None

    def placements(self, app: str | None = None) -> list[Placement]:
        return []

    def located(self, app: str | None = None) -> list[Located]:
        return []


def member_tls(ca: local_ca.LocalCA, name: str) -> PeerTls:
    cert, key = local_ca.issue(ca, (name, "127.0.0.1"), datetime.now(UTC), client_auth=True)
    return PeerTls(ca.cert_pem, cert, key)


@pytest.fixture
def serving(tmp_path: Path) -> Iterator[tuple[local_ca.LocalCA, str, str, Path]]:
    """node-a serving its slugs on loopback: (the CA, its address, a slug's checksum,
    its slugs directory)."""
    ca = local_ca.make_ca(datetime.now(UTC), "test-cluster")
    source = Settings(state_dir=tmp_path / "a", runtime_dir=tmp_path / "arun")
    checksum = stored_slug(source, {"./app/server.sh": b"echo hi\n" * 1000})
    address = f"127.0.0.1:{free_port()}"
    server = start_peer_api(address, member_tls(ca, "node-a"), source.state_dir / "slugs",
                            "node-a")
    try:
        yield ca, address, checksum, source.state_dir / "slugs"
    finally:
        server.stop(None).wait()


def test_a_member_fetches_a_slug_over_mutual_tls(
        serving: tuple[local_ca.LocalCA, str, str, Path], settings: Settings) -> None:
    ca, address, checksum, slugs = serving
    tls = member_tls(ca, "node-b")
    peers = PeerSlugs(View("node-b", {"node-a": address, "node-b": "127.0.0.1:1"}),
                      lambda: tls)
    assert peers.peers() == ["node-a"]
    said: list[str] = []
    path = fetch.fetch_slug(settings.state_dir / "slugs", checksum, peers, said.append)
    assert path.read_bytes() == path_of(slugs, checksum).read_bytes()
    assert said == [f"Slug {checksum} fetched from node-a ({path.stat().st_size} bytes, "
                    "checksum verified)"]
    # One it does not store: NOT_FOUND, said as such.
    missing = "sha256:" + hashlib.sha256(b"other").hexdigest()
    with pytest.raises(NotFound, match=f"node-a: slug {missing} is not stored on node-a"):
        fetch.fetch_slug(settings.state_dir / "slugs", missing, peers)


def test_a_blob_altered_on_the_serving_machine_is_refused(
        serving: tuple[local_ca.LocalCA, str, str, Path], settings: Settings) -> None:
    ca, address, checksum, slugs = serving
    blob = path_of(slugs, checksum)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    tls = member_tls(ca, "node-b")
    peers = PeerSlugs(View("node-b", {"node-a": address}), lambda: tls)
    said: list[str] = []
    with pytest.raises(NotFound, match="node-a: a bad copy"):
        fetch.fetch_slug(settings.state_dir / "slugs", checksum, peers, said.append)
    assert "refused: slug tarball's checksum is" in said[0]
    assert not path_of(settings.state_dir / "slugs", checksum).exists()


def _fetch_with(address: str, credentials: grpc.ChannelCredentials, checksum: str,
                metadata: tuple[tuple[str, str], ...] = ()) -> grpc.RpcError:
    with grpc.secure_channel(address, credentials) as channel:
        stream = peers_pb2_grpc.PeersStub(channel).FetchSlug(
            peers_pb2.FetchSlugRequest(checksum=checksum), timeout=10, metadata=metadata)
        with pytest.raises(grpc.RpcError) as caught:
            next(stream)
    return caught.value


def test_nobody_without_a_member_certificate_gets_a_byte(
        serving: tuple[local_ca.LocalCA, str, str, Path]) -> None:
    ca, address, checksum, _ = serving
    # TLS trusting the cluster's CA but no certificate, with a user's token.
    anonymous = grpc.ssl_channel_credentials(root_certificates=ca.cert_pem.encode())
    refused = _fetch_with(address, anonymous, checksum,
                          (("authorization", "Bearer dynod_user_token"),))
    assert refused.code() is grpc.StatusCode.UNAVAILABLE  # the handshake failed
    # A certificate of another CA (say, a machine's own local CA's).
    other = local_ca.make_ca(datetime.now(UTC), "elsewhere")
    cert, key = local_ca.issue(other, ("node-x", "127.0.0.1"), datetime.now(UTC),
                               client_auth=True)
    stranger = grpc.ssl_channel_credentials(root_certificates=ca.cert_pem.encode(),
                                            private_key=key.encode(),
                                            certificate_chain=cert.encode())
    assert _fetch_with(address, stranger, checksum).code() is grpc.StatusCode.UNAVAILABLE
    # Plain text.
    with grpc.insecure_channel(address) as channel:
        stream = peers_pb2_grpc.PeersStub(channel).FetchSlug(
            peers_pb2.FetchSlugRequest(checksum=checksum), timeout=10)
        with pytest.raises(grpc.RpcError) as caught:
            next(stream)
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    # A member's certificate does get it (the refusals above were not the server's
    # being down).
    tls = member_tls(ca, "node-b")
    member = grpc.ssl_channel_credentials(root_certificates=ca.cert_pem.encode(),
                                          private_key=tls.key_pem.encode(),
                                          certificate_chain=tls.cert_pem.encode())
    with grpc.secure_channel(address, member) as channel:
        first = next(peers_pb2_grpc.PeersStub(channel).FetchSlug(
            peers_pb2.FetchSlugRequest(checksum=checksum), timeout=10))
    assert first.size > 0 and first.data[:2] == b"\x1f\x8b"


def test_without_its_certificates_a_machine_asks_nobody_and_says_why(
        settings: Settings, tmp_path: Path) -> None:
    def missing() -> PeerTls:
        return PeerTls.read(tmp_path / "no-tls", "ca.crt", "member.crt", "member.key")

    peers = PeerSlugs(View("node-b", {"node-a": "127.0.0.1:1"}), missing)
    checksum = "sha256:" + hashlib.sha256(b"x").hexdigest()
    with pytest.raises(NotFound, match="node-a: this machine's cluster certificates: "
                                       r".*No such file.*; join the cluster again"):
        fetch.fetch_slug(settings.state_dir / "slugs", checksum, peers)


def test_a_machines_peer_api_is_at_its_address_unless_its_record_says_otherwise() -> None:
    assert peer_address(Member("node-a", "10.0.0.1", "10.0.0.1:5443", "10.1.0.0/16")) \
        == "10.0.0.1:5480"
    assert peer_address(Node("node-a", "fd00::1", "[fd00::1]:5443", "10.1.0.0/16", 1)) \
        == "[fd00::1]:5480"
    assert peer_address(Member("node-a", "10.0.0.1", "", "10.1.0.0/16",
                               peer="10.0.0.9:7000")) == "10.0.0.9:7000"
    # A record without the field (an older dynod's) reads as at the default port.
    old = '{"name": "node-a", "address": "10.0.0.1", "api": "x", "pool": "10.1.0.0/16"}'
    assert peer_address(from_json(Member, old)) == "10.0.0.1:5480"
