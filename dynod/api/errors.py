"""The one place where domain errors become gRPC status codes, and where every call's
caller is checked (root or the API group)."""

from __future__ import annotations

import errno
import functools
import itertools
import logging
import sqlite3
from collections.abc import Callable
from typing import Any, Protocol

import grpc
from google.protobuf import message

from dynod import errors
from dynod.api.peer import CALLS, Caller, caller_of

log = logging.getLogger(__name__)

class Admission(Protocol):
    """Who may call: :class:`dynod.api.gate.Gate` on the API, the peer API's own."""

    def caller(self, method: str, context: grpc.ServicerContext) -> Caller | None: ...

    def check(self, method: str, caller: Caller | None, request: Any) -> None: ...


CODES: dict[type[errors.DynodError], grpc.StatusCode] = {
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Aborted: grpc.StatusCode.ABORTED,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
}


# Trailing metadata on every error dynod itself raises: the client then knows that an
# UNAVAILABLE came from dynod (systemd, the router, a stack being built, with a message
# to show) and not from the transport (dynod down or gone mid-call).
DOMAIN_ERROR = "dynod-error"


def code_for(exc: errors.DynodError) -> grpc.StatusCode:
    for cls in type(exc).__mro__:
        if cls in CODES:
            return CODES[cls]
    return grpc.StatusCode.INTERNAL


class Undecodable:
    """A request whose bytes are not the method's message (invalid UTF-8 in a string,
    a corrupt wire format): grpc would answer INTERNAL; dynod says what is wrong."""

    def __init__(self, problem: str) -> None:
        self.problem = problem

    def error(self) -> errors.InvalidArgument:
        return errors.InvalidArgument(
            f"request not understood: {self.problem}; send a valid protobuf message with "
            "UTF-8 strings (dynoctl and grpcurl do)")


def _decoding(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def decode(raw: bytes) -> Any:
        try:
            return deserializer(raw)
        except message.DecodeError as exc:
            return Undecodable(str(exc))

    return decode


def _decoded(request: Any, streaming_request: bool) -> Any:
    """The request, or a stream of them, with an undecodable message raised as
    InvalidArgument (a stream's at the point it arrives)."""
    if not streaming_request:
        if isinstance(request, Undecodable):
            raise request.error()
        return request

    def each() -> Any:
        for item in request:
            if isinstance(item, Undecodable):
                raise item.error()
            yield item

    return each()


def _abort(context: grpc.ServicerContext, exc: errors.DynodError) -> None:
    context.set_trailing_metadata(((DOMAIN_ERROR, type(exc).__name__),))
    context.abort(code_for(exc), exc.message)


def disk_full(exc: BaseException) -> errors.ResourceExhausted | None:
    """A full disk (ENOSPC or EDQUOT from a write, SQLITE_FULL from the store) anywhere
    in ``exc``'s chain, as the error the user sees; else None. The write that failed
    was rolled back (SQLite) or its temporary file removed, so the caller may retry."""
    seen: BaseException | None = exc
    while seen is not None:
        full = (isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT)) or (
            isinstance(seen, sqlite3.Error)
            and getattr(seen, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL)
        if full:
            return errors.ResourceExhausted(
                f"No space left on device ({seen}); free space on the disk holding "
                "dynod's state (/var/lib/dynod) and retry: nothing was changed, the "
                "running release keeps serving")
        seen = seen.__cause__ or seen.__context__
    return None


def _internal(behavior: Callable[..., Any], context: grpc.ServicerContext,
              exc: Exception) -> None:
    full = disk_full(exc)
    if full is not None:
        log.error("%s: %s", getattr(behavior, "__qualname__", behavior), full.message)
        _abort(context, full)
    log.exception("internal error in %s", getattr(behavior, "__qualname__", behavior))
    context.abort(grpc.StatusCode.INTERNAL, "internal error; see journalctl -u dynod")


def _admit(gate: Admission | None, method: str, context: grpc.ServicerContext,
           request: Any, streaming_request: bool) -> tuple[Caller | None, Any]:
    """The caller (registered for caller_of while the call runs) and the request (a
    stream's first message put back in front)."""
    if gate is None:
        return caller_of(context), request  # servicer tests: the socket's rules only
    caller = gate.caller(method, context)
    if streaming_request:
        first = next(request, None)
        if first is not None:
            gate.check(method, caller, first)
            request = itertools.chain([first], request)
    else:
        gate.check(method, caller, request)
    if caller is not None and caller.user is not None:
        CALLS.set(context, caller)
    return caller, request


def _wrap(behavior: Callable[..., Any], streaming_response: bool, *, gate: Admission | None,
          method: str, streaming_request: bool) -> Callable[..., Any]:
    def unary(request: Any, context: grpc.ServicerContext) -> Any:
        try:
            request = _decoded(request, streaming_request)
            _, request = _admit(gate, method, context, request, streaming_request)
            return behavior(request, context)
        except errors.DynodError as exc:
            _abort(context, exc)
        except Exception as exc:
            _internal(behavior, context, exc)
        finally:
            CALLS.clear(context)

    def stream(request: Any, context: grpc.ServicerContext) -> Any:
        try:
            request = _decoded(request, streaming_request)
            _, request = _admit(gate, method, context, request, streaming_request)
            yield from behavior(request, context)
        except errors.DynodError as exc:
            _abort(context, exc)
        except Exception as exc:
            _internal(behavior, context, exc)
        finally:
            CALLS.clear(context)

    return stream if streaming_response else unary


class ErrorInterceptor(grpc.ServerInterceptor):
    """Admits each call (the gate: the socket's peers, or a token over TCP), turns
    DynodError into its status code, an undecodable request into INVALID_ARGUMENT;
    anything else is INTERNAL and logged. Without a
    gate (servicer tests) only the socket's rules apply."""

    def __init__(self, gate: Admission | None = None) -> None:
        self.gate = gate

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        # grpc's handlers are namedtuples at run time; the stubs do not say so.
        handler: Any = continuation(handler_call_details)
        if handler is None:
            return None
        wrap = functools.partial(_wrap, gate=self.gate, method=handler_call_details.method)
        handler = handler._replace(request_deserializer=_decoding(handler.request_deserializer))
        if handler.unary_unary:
            return handler._replace(unary_unary=wrap(handler.unary_unary, False,
                                                     streaming_request=False))
        if handler.unary_stream:
            return handler._replace(unary_stream=wrap(handler.unary_stream, True,
                                                      streaming_request=False))
        if handler.stream_unary:
            return handler._replace(stream_unary=wrap(handler.stream_unary, False,
                                                      streaming_request=True))
        if handler.stream_stream:
            return handler._replace(stream_stream=wrap(handler.stream_stream, True,
                                                       streaming_request=True))
        return handler
