"""The Keys service (every change rewrites the git user's authorized_keys: a subscriber
of KeysChanged, see dynod.control.keys.AuthorizedKeys)."""

from __future__ import annotations

import grpc

from dynod.api.daemon import Daemon, timestamp
from dynod.api.peer import caller_of
from dynod.control import keys
from dynod.model.keys import Key
from dynod.v1 import keys_pb2, keys_pb2_grpc


def key_to_proto(key: Key) -> keys_pb2.Key:
    return keys_pb2.Key(id=key.id, owner=key.owner, fingerprint=key.fingerprint,
                        type=key.type, comment=key.comment,
                        created_at=timestamp(key.created_at), public_key=key.public_key)


class KeysServicer(keys_pb2_grpc.KeysServicer):
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    def List(
        self, request: keys_pb2.ListKeysRequest, context: grpc.ServicerContext
    ) -> keys_pb2.ListKeysResponse:
        caller = caller_of(context)
        return keys_pb2.ListKeysResponse(
            keys=[key_to_proto(k) for k in keys.list_keys(self.daemon.store)
                  if caller.admin or k.owner == caller.name])

    def Add(
        self, request: keys_pb2.AddKeyRequest, context: grpc.ServicerContext
    ) -> keys_pb2.AddKeyResponse:
        owner = caller_of(context).name
        key = keys.add_key(self.daemon.store, self.daemon.events, request.public_key, owner)
        return keys_pb2.AddKeyResponse(key=key_to_proto(key))

    def Remove(
        self, request: keys_pb2.RemoveKeyRequest, context: grpc.ServicerContext
    ) -> keys_pb2.RemoveKeyResponse:
        caller = caller_of(context)
        key = keys.remove_key(self.daemon.store, self.daemon.events, request.key,
                              owner=None if caller.admin else caller.name)
        return keys_pb2.RemoveKeyResponse(key=key_to_proto(key))

    def Get(
        self, request: keys_pb2.GetKeyRequest, context: grpc.ServicerContext
    ) -> keys_pb2.GetKeyResponse:
        caller_of(context)
        key = keys.get_key(self.daemon.store, request.id)
        if request.app:
            keys.require_push(self.daemon.store, key, request.app)
        return keys_pb2.GetKeyResponse(key=key_to_proto(key))


def register(server: grpc.Server, daemon: Daemon) -> str:
    keys_pb2_grpc.add_KeysServicer_to_server(KeysServicer(daemon), server)
    return str(keys_pb2.DESCRIPTOR.services_by_name["Keys"].full_name)
