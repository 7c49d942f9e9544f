"""The Auth and Access services: sign-in for a token, tokens, users (the
administrator's), and who may use an app."""

from __future__ import annotations

import grpc

from dynod.api.daemon import Daemon, timestamp
from dynod.api.peer import caller_of
from dynod.control import access, users
from dynod.errors import PermissionDenied
from dynod.model.users import Token
from dynod.v1 import auth_pb2, auth_pb2_grpc


def token_to_proto(token: Token) -> auth_pb2.Token:
    msg = auth_pb2.Token(id=token.id, email=token.email, description=token.description,
                         created_at=timestamp(token.created_at))
    if token.expires_at is not None:
        msg.expires_at.CopyFrom(timestamp(token.expires_at))
    return msg


def address_of(peer: str) -> str:
    """``ipv4:10.0.0.2:5555`` -> ``10.0.0.2``; ``ipv6:[::1]:5555`` -> ``::1``."""
    rest = peer.split(":", 1)[-1]
    return rest.rsplit(":", 1)[0].strip("[]") if ":" in rest else rest


class AuthServicer(auth_pb2_grpc.AuthServicer):
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    def Login(
        self, request: auth_pb2.LoginRequest, context: grpc.ServicerContext
    ) -> auth_pb2.LoginResponse:
        token, secret = users.sign_in(
            self.daemon.store, self.daemon.sign_ins, request.email, request.password,
            address_of(context.peer()), description=request.description or "dynoctl",
            expires_in=users.token_lifetime(request.expires_in))
        return auth_pb2.LoginResponse(token=token_to_proto(token), secret=secret)

    def WhoAmI(
        self, request: auth_pb2.WhoAmIRequest, context: grpc.ServicerContext
    ) -> auth_pb2.WhoAmIResponse:
        caller = caller_of(context)
        return auth_pb2.WhoAmIResponse(name=caller.name, admin=caller.admin)

    def ListTokens(
        self, request: auth_pb2.ListTokensRequest, context: grpc.ServicerContext
    ) -> auth_pb2.ListTokensResponse:
        caller = caller_of(context)
        emails = ([caller.user] if caller.user is not None
                  else [u.email for u in users.list_users(self.daemon.store)])
        return auth_pb2.ListTokensResponse(tokens=[
            token_to_proto(t) for e in emails for t in users.list_tokens(self.daemon.store, e)])

    def RevokeToken(
        self, request: auth_pb2.RevokeTokenRequest, context: grpc.ServicerContext
    ) -> auth_pb2.RevokeTokenResponse:
        caller = caller_of(context)
        token = users.revoke_token(self.daemon.store, caller.user, request.id)
        return auth_pb2.RevokeTokenResponse(token=token_to_proto(token))

    def AddUser(
        self, request: auth_pb2.AddUserRequest, context: grpc.ServicerContext
    ) -> auth_pb2.AddUserResponse:
        if not caller_of(context).admin:
            raise PermissionDenied("only the administrator adds users (root on the server)")
        user, password = users.add_user(self.daemon.store, request.email, reset=request.reset)
        return auth_pb2.AddUserResponse(email=user.email, password=password)

    def ListUsers(
        self, request: auth_pb2.ListUsersRequest, context: grpc.ServicerContext
    ) -> auth_pb2.ListUsersResponse:
        caller_of(context)
        return auth_pb2.ListUsersResponse(
            emails=[u.email for u in users.list_users(self.daemon.store)])


class AccessServicer(auth_pb2_grpc.AccessServicer):
    """The gate has checked that the caller may use (or, to transfer, owns) the app."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    def List(
        self, request: auth_pb2.ListAccessRequest, context: grpc.ServicerContext
    ) -> auth_pb2.ListAccessResponse:
        caller_of(context)
        return auth_pb2.ListAccessResponse(collaborators=[
            auth_pb2.Collaborator(email=c.email, role=str(c.role))
            for c in access.list_access(self.daemon.store, request.app)])

    def Add(
        self, request: auth_pb2.AddAccessRequest, context: grpc.ServicerContext
    ) -> auth_pb2.AddAccessResponse:
        caller_of(context)
        access.add_collaborator(self.daemon.store, request.app, request.email)
        return auth_pb2.AddAccessResponse()

    def Remove(
        self, request: auth_pb2.RemoveAccessRequest, context: grpc.ServicerContext
    ) -> auth_pb2.RemoveAccessResponse:
        caller_of(context)
        access.remove_collaborator(self.daemon.store, request.app, request.email)
        return auth_pb2.RemoveAccessResponse()

    def Transfer(
        self, request: auth_pb2.TransferAppRequest, context: grpc.ServicerContext
    ) -> auth_pb2.TransferAppResponse:
        caller_of(context)
        previous = access.transfer(self.daemon.store, request.app, request.email)
        return auth_pb2.TransferAppResponse(previous_owner=previous)


def register(server: grpc.Server, daemon: Daemon) -> str:
    auth_pb2_grpc.add_AuthServicer_to_server(AuthServicer(daemon), server)
    auth_pb2_grpc.add_AccessServicer_to_server(AccessServicer(daemon), server)
    return str(auth_pb2.DESCRIPTOR.services_by_name["Auth"].full_name)


ACCESS_SERVICE = str(auth_pb2.DESCRIPTOR.services_by_name["Access"].full_name)
