"""dynoctl cluster:init, cluster:join, cluster, cluster:remove (kubeadm's init and join
for a dynod cluster on etcd)."""

from __future__ import annotations

import argparse
import socket
import time

import grpc

from dynod.cli import client, output
from dynod.cli.client import CliError, call
from dynod.errors import DynodError
from dynod.model.membership import API_PORT, check_ca_hash, trusted_ca
from dynod.system.tls import presented_chain
from dynod.v1 import cluster_pb2, cluster_pb2_grpc


def stub() -> cluster_pb2_grpc.ClusterStub:
    return cluster_pb2_grpc.ClusterStub(client.channel())


def _source_address(towards: str) -> str:
    """This machine's address on the way to ``towards`` (no packet is sent)."""
    with socket.socket(socket.AF_INET6 if ":" in towards else socket.AF_INET,
                       socket.SOCK_DGRAM) as s:
        s.connect((towards, API_PORT))
        return str(s.getsockname()[0])


def _default_address() -> str:
    try:
        return _source_address("192.0.2.1")  # TEST-NET-1: the default route's way
    except OSError as exc:
        raise CliError("cannot tell this machine's address (no default route); give it "
                       "with --address, the machine's IP on the cluster's network") from exc


def _wait_restarted(what: str, timeout: float = 180.0) -> None:
    """Until dynod answers again, restarted on the etcd store."""
    print(f"Waiting for dynod to restart on etcd ({what})...", end="", flush=True)
    deadline = time.monotonic() + timeout
    time.sleep(2.0)
    while True:
        try:
            stub().Status(cluster_pb2.ClusterStatusRequest(), timeout=10)
            print(" done")
            return
        except (grpc.RpcError, CliError) as exc:
            if time.monotonic() > deadline:
                print()
                raise CliError("dynod did not come back on etcd; see `journalctl -u "
                               "dynod -u dynod-etcd`") from exc
        time.sleep(1.0)


def cmd_init(args: argparse.Namespace) -> int:
    name = args.name or socket.gethostname().split(".")[0].lower()
    address = args.address or _default_address()
    output.action(f"Making a cluster of {name} ({address}): etcd, and the state moved "
                  "into it", "")
    reply = call(stub().Init, cluster_pb2.InitClusterRequest(name=name, address=address),
                 timeout=600)
    print(f"  {reply.apps} apps and {reply.releases} releases are in etcd now; the SQLite "
          f"state is kept in {reply.backup}")
    print(f"  node {reply.member.name}: {reply.member.address}, API {reply.member.api}, "
          f"dyno pool {reply.member.pool}")
    _wait_restarted(name)
    print()
    print("Your dynod cluster has been initialized successfully!")
    print()
    print("You can now join any number of machines by running the following on each as "
          "root\n(the dynod package installed, no apps yet):")
    print()
    print(f"  {reply.join_command}")
    return 0


def cmd_join(args: argparse.Namespace) -> int:
    ca_hash = check_ca_hash(args.ca_hash)
    target = args.target
    default_name = call(stub().CheckJoin, cluster_pb2.CheckJoinRequest()).default_name
    name = args.name or default_name
    try:
        address = args.address or _source_address(target)
    except OSError as exc:
        raise CliError(f"{target}: no route to it ({exc.strerror}); check the address") \
            from exc
    try:
        ca = trusted_ca(presented_chain(target, args.port), ca_hash)
    except DynodError as exc:
        raise CliError(exc.message) from exc
    host = f"{target}:{args.port}"
    print(f"Joining the cluster of {host} as {name} ({address})...")
    try:
        admission = cluster_pb2_grpc.ClusterStub(client.tls_channel(host, ca, None)).Admit(
            cluster_pb2.AdmitRequest(token=args.token, name=name, address=address),
            timeout=120)
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.UNAVAILABLE and not client.from_dynod(exc):
            raise client.transport_error(host, str(exc.details())) from exc
        raise CliError(f"{host}: {exc.details()}") from exc
    reply = call(stub().Join, cluster_pb2.JoinClusterRequest(
        name=name, address=address, admission=admission), timeout=600)
    print(f"  etcd member started and promoted; dyno pool {reply.member.pool}")
    _wait_restarted(name)
    print()
    print("This node has joined the cluster. Run `dynoctl cluster` on any member to see it.")
    return 0


def cmd_cluster(args: argparse.Namespace) -> int:
    reply = call(stub().Status, cluster_pb2.ClusterStatusRequest())
    if args.json:
        output.print_json(output.to_dict(reply))
        return 0
    output.header(f"Cluster: {len(reply.nodes)} members, etcd leader "
                  f"{reply.etcd_leader or 'none'}, dynod leader {reply.leader or 'none'}")
    rows = [["Node", "Address", "State", "etcd", "Memory", "Dyno pool"]]
    for n in reply.nodes:
        m = n.member
        etcd = ("learner" if n.etcd_learner else "healthy") if n.etcd_healthy else \
            f"unhealthy: {n.etcd_error}"
        rows.append([m.name + (" (this machine)" if m.name == reply.me else ""), m.address,
                     "alive" if n.alive else "down",
                     etcd, f"{n.memory_mb} MB" if n.alive else "", m.pool])
    output.table(rows)
    for s in reply.strangers:
        output.warn(f"etcd member {s.name} ({s.address}) is no dynod member")
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    call(stub().Remove, cluster_pb2.RemoveNodeRequest(name=args.node, force=args.force),
         timeout=60)
    output.action(f"Removing {args.node} from the cluster", "done")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser],
             common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("cluster:init", help="make a cluster of this machine (etcd), "
                       "moving its state into it")
    p.add_argument("--name", help="this node's name (default: the host name)")
    p.add_argument("--address", help="this machine's IP on the cluster's network "
                   "(default: the default route's)")
    p.set_defaults(func=cmd_init)
    p = sub.add_parser("cluster:join", help="join this (empty) machine to a cluster")
    p.add_argument("target", metavar="ADDRESS", help="a member's address")
    p.add_argument("--token", required=True, help="the join token cluster:init printed")
    p.add_argument("--ca-hash", required=True,
                   help="sha256:... of the member's CA, as cluster:init printed it")
    p.add_argument("--port", type=int, default=API_PORT,
                   help=f"the member's API port (default {API_PORT})")
    p.add_argument("--name", help="this node's name (default: the host name)")
    p.add_argument("--address", help="this machine's IP on the cluster's network "
                   "(default: its address on the way to ADDRESS)")
    p.set_defaults(func=cmd_join)
    p = sub.add_parser("cluster", parents=[common],
                       help="the cluster's members, alive or not, etcd's health")
    p.set_defaults(func=cmd_cluster)
    p = sub.add_parser("cluster:remove", help="remove a member from the cluster")
    p.add_argument("node", metavar="NODE")
    p.add_argument("--force", action="store_true",
                   help="even though it still runs dynos")
    p.set_defaults(func=cmd_remove)
