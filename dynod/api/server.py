"""Build the gRPC server: every servicer, health, reflection, one error interceptor."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from dynod.api import addons as addons_api
from dynod.api import apps, auth, config, dynos, formation, oneoff, peer, releases, slugs, system
from dynod.api import builds as builds_api
from dynod.api import cluster as cluster_api
from dynod.api import domains as domains_api
from dynod.api import drains as drains_api
from dynod.api import features as features_api
from dynod.api import keys as keys_api
from dynod.api import logs as logs_api
from dynod.api import postgres as postgres_api
from dynod.api import stacks as stacks_api
from dynod.api.daemon import Daemon
from dynod.api.errors import ErrorInterceptor
from dynod.api.gate import Gate
from dynod.build.pipeline import Builder
from dynod.errors import Unavailable

# Each resource module exposes register(server, daemon) -> full service name; builds and
# stacks also take the builder (register(server, daemon, builder)).
Registrar = Callable[[grpc.Server, Daemon], str]
REGISTRARS: list[Registrar] = [
    system.register, apps.register, config.register, releases.register, formation.register,
    slugs.register, dynos.register, keys_api.register,
    logs_api.register, domains_api.register, oneoff.register, addons_api.register,
    postgres_api.register, features_api.register, auth.register, drains_api.register,
    cluster_api.register,
]


@dataclass
class ApiServer:
    grpc_server: grpc.Server
    front: peer.FrontSocket
    health: health.HealthServicer
    # The TCP port bound (api_listen's, or the one the kernel chose for port 0).
    tcp_port: int | None = None

    def stop(self, grace: float = 5.0) -> None:
        self.health.enter_graceful_shutdown()
        self.front.close()
        self.grpc_server.stop(grace).wait()


def make_server(
    daemon: Daemon, max_workers: int = 32, *, builder: Builder | None = None
) -> tuple[grpc.Server, health.HealthServicer]:
    """Every servicer, health and reflection on a server with no port yet. ``builder``
    is the daemon's (its composition root makes it); without one (servicer tests, no
    dynos) the server gets a builder of its own that reports on no rollout."""
    if builder is None:
        builder = Builder(daemon.store, daemon.settings, daemon.events)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="api"),
        interceptors=[ErrorInterceptor(Gate(daemon.store))],
    )
    names = [register(server, daemon) for register in REGISTRARS]
    names += [auth.ACCESS_SERVICE, builds_api.register(server, daemon, builder),
              stacks_api.register(server, daemon, builder)]
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in [*names, ""]:
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        [*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
         reflection.SERVICE_NAME],
        server,
    )
    return server, health_servicer


@dataclass(frozen=True)
class TcpListen:
    """The API over TCP: ``address`` (host:port) with this certificate chain and key."""

    address: str
    cert_chain_pem: str
    key_pem: str


def start_api(
    public_socket: Path, group: str, daemon: Daemon, max_workers: int = 32, *,
    builder: Builder | None = None, tcp: TcpListen | None = None,
) -> ApiServer:
    """Listen on ``public_socket`` (0660 root:group), and on ``tcp`` with TLS only (the
    same server: the same services, every call but health and Login needing a token),
    and return once it accepts calls. Raises Unavailable if the TCP address is taken."""
    private_dir = public_socket.parent / "private"
    private_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    private_dir.chmod(0o700)
    backend = private_dir / "grpc.sock"
    with contextlib.suppress(FileNotFoundError):
        backend.unlink()
    server, health_servicer = make_server(daemon, max_workers, builder=builder)
    server.add_insecure_port(f"unix:{backend}")
    tcp_port: int | None = None
    if tcp is not None:
        credentials = grpc.ssl_server_credentials(
            [(tcp.key_pem.encode(), tcp.cert_chain_pem.encode())])
        try:
            tcp_port = server.add_secure_port(tcp.address, credentials)
        except RuntimeError as exc:
            raise Unavailable(f"api_listen {tcp.address}: cannot listen ({exc}); free the "
                              "port or choose another in dynod.toml") from exc
    server.start()
    backend.chmod(0o600)
    front = peer.FrontSocket(public_socket, backend, group)
    front.serve_forever()
    return ApiServer(grpc_server=server, front=front, health=health_servicer,
                     tcp_port=tcp_port)
