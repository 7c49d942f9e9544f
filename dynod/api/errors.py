"""The one place where domain errors become gRPC status codes, and where every call's
caller is checked (root or the API group)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import grpc

from dynod import errors
from dynod.api.peer import caller_of

log = logging.getLogger(__name__)

CODES: dict[type[errors.DynodError], grpc.StatusCode] = {
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Aborted: grpc.StatusCode.ABORTED,
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


def _abort(context: grpc.ServicerContext, exc: errors.DynodError) -> None:
    context.set_trailing_metadata(((DOMAIN_ERROR, type(exc).__name__),))
    context.abort(code_for(exc), exc.message)


def _wrap(behavior: Callable[..., Any], streaming_response: bool) -> Callable[..., Any]:
    def unary(request: Any, context: grpc.ServicerContext) -> Any:
        try:
            caller_of(context)  # refuses callers outside root and the API group
            return behavior(request, context)
        except errors.DynodError as exc:
            _abort(context, exc)
        except Exception:
            log.exception("internal error in %s", getattr(behavior, "__qualname__", behavior))
            context.abort(grpc.StatusCode.INTERNAL, "internal error; see journalctl -u dynod")

    def stream(request: Any, context: grpc.ServicerContext) -> Any:
        try:
            caller_of(context)  # refuses callers outside root and the API group
            yield from behavior(request, context)
        except errors.DynodError as exc:
            _abort(context, exc)
        except Exception:
            log.exception("internal error in %s", getattr(behavior, "__qualname__", behavior))
            context.abort(grpc.StatusCode.INTERNAL, "internal error; see journalctl -u dynod")

    return stream if streaming_response else unary


class ErrorInterceptor(grpc.ServerInterceptor):
    """Turns DynodError into its status code; anything else is INTERNAL and logged."""

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        # grpc's handlers are namedtuples at run time; the stubs do not say so.
        handler: Any = continuation(handler_call_details)
        if handler is None:
            return None
        if handler.unary_unary:
            return handler._replace(unary_unary=_wrap(handler.unary_unary, False))
        if handler.unary_stream:
            return handler._replace(unary_stream=_wrap(handler.unary_stream, True))
        if handler.stream_unary:
            return handler._replace(stream_unary=_wrap(handler.stream_unary, False))
        if handler.stream_stream:
            return handler._replace(stream_stream=_wrap(handler.stream_stream, True))
        return handler
