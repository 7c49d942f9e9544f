"""The Peers service and its client: what one machine of a cluster asks of another.

It listens on its own address (``peer_listen``), apart from the users' API, with mutual
TLS: both ends present a certificate the cluster's CA issued to a member (the etcd
member's own, ``<state>/cluster/tls``). The TLS handshake itself refuses a client
without one, so a user's token, a certificate of another CA or no certificate at all
never reaches a handler; the gate here checks once more that the call came over such a
connection. Only this service is served there.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from dynod.api.errors import ErrorInterceptor
from dynod.api.peer import Caller
from dynod.errors import NotFound, Unauthenticated, Unavailable
from dynod.model.cluster import ClusterView, peer_address
from dynod.model.slugs import parse_checksum, path_of
from dynod.v1 import peers_pb2, peers_pb2_grpc

CHUNK = 1 << 20
# A peer that does not answer within this long is skipped for the next one.
CONNECT_TIMEOUT = 10.0
# The longest one slug's transfer may take (Heroku's slug limit is 500 MB).
TRANSFER_TIMEOUT = 600.0


@dataclass(frozen=True)
class PeerTls:
    """This member's certificate chain and key, and the cluster CA's certificate that
    every peer's must be signed by (PEM)."""

    ca_pem: str
    cert_pem: str
    key_pem: str

    @classmethod
    def read(cls, tls_dir: Path, ca: str, cert: str, key: str) -> PeerTls:
        return cls(*((tls_dir / name).read_text() for name in (ca, cert, key)))


class PeerGate:
    """Admits a call that came over mutual TLS with a verified client certificate (the
    server demands one; this is the check that does not depend on that setting)."""

    def caller(self, method: str, context: grpc.ServicerContext) -> Caller | None:
        # grpc's stubs say bytes; each value is a list of bytes at run time.
        auth: Mapping[str, Any] = context.auth_context()
        if auth.get("transport_security_type") != [b"ssl"] or not auth.get(
                "x509_common_name"):
            raise Unauthenticated("the peer API is for the cluster's machines only: "
                                  "present a member certificate of the cluster's CA")
        return None

    def check(self, method: str, caller: Caller | None, request: Any) -> None:
        return None


class PeersServicer(peers_pb2_grpc.PeersServicer):
    def __init__(self, slugs_dir: Path, me: str) -> None:
        self.slugs_dir = slugs_dir
        self.me = me

    def FetchSlug(self, request: peers_pb2.FetchSlugRequest,
                  context: grpc.ServicerContext) -> Iterator[peers_pb2.FetchSlugResponse]:
        checksum = parse_checksum(request.checksum)
        try:
            f = path_of(self.slugs_dir, checksum).open("rb")
        except FileNotFoundError:
            raise NotFound(f"slug {checksum} is not stored on {self.me}") from None
        with f:
            size = Path(f.name).stat().st_size
            yield peers_pb2.FetchSlugResponse(size=size, data=f.read(CHUNK))
            while chunk := f.read(CHUNK):
                yield peers_pb2.FetchSlugResponse(data=chunk)


def start_peer_api(address: str, tls: PeerTls, slugs_dir: Path, me: str) -> grpc.Server:
    """Serve the Peers service on ``address`` (host:port) with mutual TLS. Raises
    Unavailable if the address cannot be bound."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4,
                                                    thread_name_prefix="peer-api"),
                         interceptors=[ErrorInterceptor(PeerGate())])
    peers_pb2_grpc.add_PeersServicer_to_server(PeersServicer(slugs_dir, me), server)
    credentials = grpc.ssl_server_credentials(
        [(tls.key_pem.encode(), tls.cert_pem.encode())],
        root_certificates=tls.ca_pem.encode(), require_client_auth=True)
    try:
        server.add_secure_port(address, credentials)
    except RuntimeError as exc:
        raise Unavailable(f"peer_listen {address}: cannot listen ({exc}); free the port "
                          "or choose another in dynod.toml") from exc
    server.start()
    return server


class PeerSlugs:
    """:class:`dynod.slug.fetch.SlugPeers` over the Peers service: the cluster's other
    machines (alive nodes first, then the other members), each at its peer API's
    address (:func:`dynod.model.cluster.peer_address`)."""

    def __init__(self, view: ClusterView, tls: Callable[[], PeerTls]) -> None:
        self.view = view
        self.tls = tls  # read at each fetch: a renewed certificate is used at once

    def _addresses(self) -> dict[str, str]:
        found: dict[str, str] = {}
        # (A node record without an address says nothing: its member record does.)
        pairs = [*sorted((n.name, peer_address(n)) for n in self.view.nodes()
                         if n.address or n.peer),
                 *sorted((m.name, peer_address(m)) for m in self.view.members())]
        for name, address in pairs:
            if name != self.view.me:
                found.setdefault(name, address)
        return found

    def peers(self) -> list[str]:
        return list(self._addresses())

    def download(self, peer: str, checksum: str) -> tuple[int, Iterator[bytes]]:
        address = self._addresses().get(peer)
        if address is None:
            raise Unavailable(f"{peer} is no longer in the cluster")
        try:
            tls = self.tls()
        except OSError as exc:
            raise Unavailable(f"this machine's cluster certificates: {exc}; join the "
                              "cluster again to get them") from exc
        channel = grpc.secure_channel(address, grpc.ssl_channel_credentials(
            root_certificates=tls.ca_pem.encode(), private_key=tls.key_pem.encode(),
            certificate_chain=tls.cert_pem.encode()))
        try:
            grpc.channel_ready_future(channel).result(timeout=CONNECT_TIMEOUT)
            stream = peers_pb2_grpc.PeersStub(channel).FetchSlug(
                peers_pb2.FetchSlugRequest(checksum=checksum), timeout=TRANSFER_TIMEOUT)
            first = next(stream)
        except grpc.FutureTimeoutError:
            channel.close()
            raise Unavailable(f"not reachable at {address}") from None
        except grpc.RpcError as exc:
            channel.close()
            raise _error(exc, address) from None
        except StopIteration:
            channel.close()
            raise Unavailable(f"{address} sent nothing") from None

        def chunks() -> Iterator[bytes]:
            try:
                yield first.data
                for message in stream:
                    yield message.data
            except grpc.RpcError as exc:
                raise _error(exc, address) from None
            finally:
                with contextlib.suppress(Exception):
                    stream.cancel()
                channel.close()

        return first.size, chunks()


def _error(exc: grpc.RpcError, address: str) -> NotFound | Unavailable:
    code = exc.code() if isinstance(exc, grpc.Call) else None
    details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
    if code is grpc.StatusCode.NOT_FOUND:
        return NotFound(details or "not stored")
    return Unavailable(f"{address}: {code.name if code else 'error'}: {details}")
