"""Who is calling: SO_PEERCRED on the public socket, carried to the servicers.

grpc-python does not expose a Unix socket peer's credentials, so dynod owns the public
socket itself. Each accepted connection is checked (root, or a member of the API group)
and spliced to gRPC's private socket from a client socket autobound to a unique abstract
name; gRPC reports that name as the call's peer (``unix-abstract:...``), and
:func:`caller_of` maps it back to the credentials read at accept time.
"""

from __future__ import annotations

import contextlib
import grp
import logging
import os
import pwd
import socket
import struct
import threading
from dataclasses import dataclass
from pathlib import Path

import grpc

from dynod.errors import PermissionDenied

log = logging.getLogger(__name__)

SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)


@dataclass(frozen=True)
class Caller:
    """Who calls: the Unix identity of a caller on the socket, or (``user``) the
    email of a user whose token a call over TCP carried (uid -1)."""

    uid: int
    gid: int
    pid: int
    groups: tuple[int, ...]
    user: str | None = None

    @property
    def admin(self) -> bool:
        """Root and the API group on the socket administer dynod; users over TCP do not."""
        return self.user is None

    @property
    def name(self) -> str:
        if self.user is not None:
            return self.user
        try:
            return pwd.getpwuid(self.uid).pw_name
        except KeyError:
            return f"uid {self.uid}"


ROOT = Caller(uid=0, gid=0, pid=0, groups=())


def peer_credentials(conn: socket.socket) -> Caller:
    pid, uid, gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    groups: tuple[int, ...] = ()
    with contextlib.suppress(OSError):
        raw = conn.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, 4 * 256)
        groups = struct.unpack(f"{len(raw) // 4}I", raw)
    return Caller(uid=uid, gid=gid, pid=pid, groups=groups)


def may_call(caller: Caller, api_gid: int | None) -> bool:
    """Root and members of the API group may call; nobody else."""
    if caller.uid == 0:
        return True
    return api_gid is not None and (caller.gid == api_gid or api_gid in caller.groups)


class PeerRegistry:
    """Abstract socket name -> Caller, for the connections currently open."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_name: dict[str, Caller] = {}
        self._refused: set[str] = set()

    def add(self, name: str, caller: Caller, *, refused: bool = False) -> None:
        with self._lock:
            self._by_name[name] = caller
            if refused:
                self._refused.add(name)

    def remove(self, name: str) -> None:
        with self._lock:
            self._by_name.pop(name, None)
            self._refused.discard(name)

    def _key(self, peer: str) -> str | None:
        prefix = "unix-abstract:"
        return peer[len(prefix):] if peer.startswith(prefix) else None

    def lookup(self, peer: str) -> Caller | None:
        key = self._key(peer)
        with self._lock:
            return None if key is None else self._by_name.get(key)

    def is_refused(self, peer: str) -> bool:
        key = self._key(peer)
        with self._lock:
            return key in self._refused


REGISTRY = PeerRegistry()


def user_caller(email: str) -> Caller:
    return Caller(uid=-1, gid=-1, pid=0, groups=(), user=email)


class CallRegistry:
    """The caller of each call in progress over TCP (its token's user), by the call's
    context object, set and cleared by the gate around the handler (grpc's context
    takes no attributes)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_call: dict[int, Caller] = {}

    def set(self, context: object, caller: Caller) -> None:
        with self._lock:
            self._by_call[id(context)] = caller

    def clear(self, context: object) -> None:
        with self._lock:
            self._by_call.pop(id(context), None)

    def get(self, context: object) -> Caller | None:
        with self._lock:
            return self._by_call.get(id(context))


CALLS = CallRegistry()


def is_network_peer(peer: str) -> bool:
    return peer.startswith(("ipv4:", "ipv6:"))


def caller_of(context: grpc.ServicerContext) -> Caller:
    """The caller of the current RPC.

    A call that reached gRPC's private socket directly came from root (the socket is
    mode 0600 in a root-only directory). Raises PermissionDenied for an unknown peer
    and for a caller who is neither root nor in the API group.
    """
    by_token = CALLS.get(context)
    if by_token is not None:
        return by_token
    peer = context.peer()
    caller = REGISTRY.lookup(peer)
    if caller is not None:
        if REGISTRY.is_refused(peer):
            raise PermissionDenied(
                f"user {caller.name} (uid {caller.uid}) may not use dynod: only root and "
                "members of the API group may; ask an administrator to add you to it "
                "(`adduser USER dynod`)"
            )
        return caller
    if peer.startswith("unix:"):
        return ROOT
    raise PermissionDenied(f"unknown peer {peer!r}; connect through the dynod socket")


class FrontSocket:
    """Accepts on the public socket, checks credentials, splices to the gRPC socket."""

    def __init__(self, public: Path, backend: Path, group: str) -> None:
        self.public = public
        self.backend = backend
        try:
            self.api_gid: int | None = grp.getgrnam(group).gr_gid
        except KeyError:
            log.warning("group %r does not exist; only root may call the API", group)
            self.api_gid = None
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with contextlib.suppress(FileNotFoundError):
            public.unlink()
        self._listener.bind(str(public))
        os.chown(public, 0, self.api_gid if self.api_gid is not None else 0)
        public.chmod(0o660)
        self._listener.listen(128)
        self._closed = threading.Event()

    def serve_forever(self) -> None:
        threading.Thread(target=self._accept_loop, name="api-accept", daemon=True).start()

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        # A socket file left behind would tell clients "running" when it is not.
        with contextlib.suppress(FileNotFoundError):
            self.public.unlink()

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                if self._closed.is_set():
                    return
                continue
            try:
                self._start_splice(conn)
            except OSError as exc:
                log.warning("API connection dropped: %s", exc)
                conn.close()

    def _start_splice(self, conn: socket.socket) -> None:
        caller = peer_credentials(conn)
        # A refused caller still reaches gRPC, so it gets PERMISSION_DENIED with a message
        # (every call is checked by caller_of in the interceptor) instead of a dropped
        # connection that reads as "dynod is down". The socket's 0660 mode stops most
        # such callers earlier; this is the check that does not depend on file modes.
        refused = not may_call(caller, self.api_gid)
        if refused:
            log.info("refusing API caller uid=%d pid=%d: not root nor in the API group",
                     caller.uid, caller.pid)
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        upstream.bind("")  # autobind: the kernel picks a unique abstract name
        name = upstream.getsockname()
        key = name[1:].decode() if isinstance(name, bytes) else name.lstrip("\0")
        REGISTRY.add(key, caller, refused=refused)
        upstream.connect(str(self.backend))
        done = threading.Barrier(2, action=lambda: self._finish(key, conn, upstream))
        for src, dst in ((conn, upstream), (upstream, conn)):
            threading.Thread(target=_pump, args=(src, dst, done), daemon=True).start()

    @staticmethod
    def _finish(key: str, a: socket.socket, b: socket.socket) -> None:
        REGISTRY.remove(key)
        a.close()
        b.close()


def _pump(src: socket.socket, dst: socket.socket, done: threading.Barrier) -> None:
    try:
        while data := src.recv(262144):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)
        with contextlib.suppress(threading.BrokenBarrierError):
            done.wait()
