"""The boundary every RPC crosses: request ids, one log line, errors to statuses.

``@rpc`` wraps a servicer method. It takes the request id from Envoy's
``x-request-id`` metadata (or makes one), makes it visible to every log line
of the request, asks the servicer's ``authorize`` who the caller is and whether it
may make the call (``principal_var`` then names it for the rest of the request),
turns ``GatewayError`` into its status with google.rpc details (``status`` knows
which code each kind answers), turns anything else into INTERNAL with the request
id (traceback to the log only), and logs one line per request: method, code,
duration, principal (also as the line's fields, for LOG_FORMAT=json). The same
boundary records the call's metrics (``observability.metrics.rpc_finished``) and, when
OTEL_* turns tracing on, makes its span (the caller's ``traceparent`` its parent), which
ends with the code, the principal and the rows the servicer reported (``rows_var``).

``DecodeErrors`` (a server interceptor) does the same for requests that never reach a
method: bytes that do not decode (malformed, or nested deeper than protobuf's recursion
limit) answer INVALID_ARGUMENT instead of grpcio's INTERNAL "Exception deserializing
request!", which REST callers saw as a 500. ``PassSerialized`` lets a method answer with
bytes it has already serialized (GetSchemas, from its cache): they go out as they are.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import grpc

from datamorph_gateway.auth.policy import ANONYMOUS, Principal
from datamorph_gateway.db.cancel import CancelScope
from datamorph_gateway.errors import DeadlineExceeded, GatewayError, InvalidArgument
from datamorph_gateway.observability import metrics, tracing
from datamorph_gateway.status import internal_status, status_code, to_status

log = logging.getLogger("datamorph_gateway.access")
request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
principal_var: contextvars.ContextVar[Principal] = contextvars.ContextVar(
    "principal", default=ANONYMOUS
)
# The rows a call returned, for its span: set by the servicer, read only while tracing.
rows_var: contextvars.ContextVar[int | None] = contextvars.ContextVar("rows", default=None)

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Method = Callable[[Any, Req, grpc.ServicerContext], Resp]

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def metadata_value(context: grpc.ServicerContext, key: str) -> str | None:
    for item in context.invocation_metadata() or ():
        if item.key == key:
            return str(item.value)
    return None


def _request_id(context: grpc.ServicerContext) -> str:
    given = metadata_value(context, "x-request-id")
    if given and _REQUEST_ID.match(given):
        return given
    return uuid.uuid4().hex


def time_budget_s(context: grpc.ServicerContext, ceiling_s: float) -> float:
    """The time this request may still take: its deadline, capped by the server's ceiling."""
    remaining = context.time_remaining()
    if remaining is None:
        return ceiling_s
    if remaining <= 0:
        raise DeadlineExceeded("the request's deadline passed before it could start")
    return min(float(remaining), ceiling_s)


def cancel_scope(context: grpc.ServicerContext, ceiling_s: float) -> CancelScope:
    """The call's SQL scope: its time budget as a deadline the gateway keeps itself,
    cancelled when the RPC ends for any reason (client cancel, disconnect, deadline).

    gRPC runs termination callbacks on its own thread when the RPC ends; on a call
    that ended normally the scope is already closed and the callback does nothing.
    """
    scope = CancelScope(time_budget_s(context, ceiling_s))
    if not context.add_callback(scope.cancel):
        scope.cancel()  # the RPC has already ended
    return scope


class _Call:
    """One request crossing the boundary: its id, its clock, its outcome, its log line."""

    def __init__(self, name: str, context: grpc.ServicerContext) -> None:
        self.name = name
        self.context = context
        self.request_id = _request_id(context)
        self.code = grpc.StatusCode.OK
        self.principal = ANONYMOUS
        self._token = request_id_var.set(self.request_id)
        self._principal_token: contextvars.Token[Principal] | None = None
        self._start = time.perf_counter()
        # None unless tracing is on (one test then).
        self._span = tracing.start_rpc_span(name, context.invocation_metadata())
        if self._span is not None:
            rows_var.set(None)

    def authorize(self, servicer: Any) -> None:
        """Who calls, if the servicer checks (it raises when the call is not allowed)."""
        authorize = getattr(servicer, "authorize", None)
        if authorize is not None:
            self.principal = authorize(self.name, self.context)
            self._principal_token = principal_var.set(self.principal)

    def failed(self, exc: Exception) -> grpc.Status:
        """The status an exception answers; a bug is logged with its traceback."""
        if isinstance(exc, GatewayError):
            self.code = status_code(exc)
            return to_status(exc, self.request_id)
        self.code = grpc.StatusCode.INTERNAL
        log.exception("unhandled error in %s", self.name)
        return internal_status(self.request_id)

    def finish(self) -> None:
        seconds = time.perf_counter() - self._start
        code = self.code.name
        metrics.rpc_finished(self.name, code, seconds)
        duration_ms = seconds * 1000
        peer = self.context.peer()
        principal = self.principal.name
        log.info(
            "rpc %s code=%s duration_ms=%.2f peer=%s principal=%s",
            self.name,
            code,
            duration_ms,
            peer,
            principal,
            extra={
                "rpc": self.name,
                "code": code,
                "duration_ms": duration_ms,
                "peer": peer,
                "principal": principal,
            },
        )
        if self._span is not None:
            self._span.finish(code, principal=principal, rows=rows_var.get())
        if self._principal_token is not None:
            principal_var.reset(self._principal_token)
        request_id_var.reset(self._token)


def rpc(method: Method[Req, Resp]) -> Method[Req, Resp]:
    """The boundary for a unary RPC."""
    name = method.__name__

    @functools.wraps(method)
    def wrapper(self: Any, request: Req, context: grpc.ServicerContext) -> Resp:
        call = _Call(name, context)
        status: grpc.Status | None = None
        try:
            call.authorize(self)
            return method(self, request, context)
        except Exception as exc:
            status = call.failed(exc)
        finally:
            call.finish()
        context.abort_with_status(status)
        raise AssertionError("abort_with_status returns only by raising")

    return wrapper


def rpc_stream(
    method: Callable[[Any, Req, grpc.ServicerContext], Iterator[Resp]],
) -> Callable[[Any, Req, grpc.ServicerContext], Iterator[Resp]]:
    """The boundary for a server-streaming RPC: errors raised mid-stream end it with a status."""
    name = method.__name__

    @functools.wraps(method)
    def wrapper(self: Any, request: Req, context: grpc.ServicerContext) -> Iterator[Resp]:
        call = _Call(name, context)
        status: grpc.Status | None = None
        try:
            call.authorize(self)
            yield from method(self, request, context)
        except GeneratorExit:
            # gRPC dropped the stream (the client went away) and the generator was closed.
            call.code = grpc.StatusCode.CANCELLED
            raise
        except Exception as exc:
            status = call.failed(exc)
        finally:
            call.finish()
        if status is not None:
            context.abort_with_status(status)

    return wrapper


class _Undecodable:
    """What an undecodable request becomes, so that the method's wrapper can refuse it."""


_UNDECODABLE = _Undecodable()


class _PerMethod(grpc.ServerInterceptor):  # type: ignore[misc]  # grpc has no stubs
    """An interceptor that changes each method's handler the same way on every call, so
    it wraps each once (gRPC asks the interceptors on every call: wrapping anew would cost
    closures and a copy each time). An unknown method is not kept: callers choose names."""

    def __init__(self) -> None:
        self._handlers: dict[str, grpc.RpcMethodHandler] = {}

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        handler = self._handlers.get(method)
        if handler is None:
            handler = self._wrap(method, continuation(handler_call_details))
            if handler is not None:
                self._handlers[method] = handler
        return handler

    @staticmethod
    def _wrap(method: str, handler: grpc.RpcMethodHandler | None) -> grpc.RpcMethodHandler | None:
        raise NotImplementedError


class DecodeErrors(_PerMethod):
    """Requests that cannot be decoded answer INVALID_ARGUMENT, as any bad request does."""

    @staticmethod
    def _wrap(method: str, handler: grpc.RpcMethodHandler | None) -> grpc.RpcMethodHandler | None:
        decode = getattr(handler, "request_deserializer", None)
        if handler is None or decode is None or handler.request_streaming:
            return handler  # nothing of ours streams requests
        name = method.rpartition("/")[2]

        def decode_or_mark(data: bytes) -> Any:
            try:
                return decode(data)
            except Exception:
                return _UNDECODABLE

        def guard(behavior: Callable[[Any, grpc.ServicerContext], Any]) -> Callable[..., Any]:
            def guarded(request: Any, context: grpc.ServicerContext) -> Any:
                if request is _UNDECODABLE:
                    _refuse_undecodable(name, context)
                return behavior(request, context)

            return guarded

        if handler.unary_unary is not None:
            return handler._replace(
                request_deserializer=decode_or_mark, unary_unary=guard(handler.unary_unary)
            )
        return handler._replace(
            request_deserializer=decode_or_mark, unary_stream=guard(handler.unary_stream)
        )


def _refuse_undecodable(name: str, context: grpc.ServicerContext) -> None:
    call = _Call(name, context)
    try:
        status = call.failed(
            InvalidArgument(
                "the request cannot be decoded: it is malformed, or nests values deeper "
                "than protobuf's limit of 100 messages (each JSON list or object level "
                "inside a parameter counts as two)",
                reason="UNDECODABLE_REQUEST",
            )
        )
    finally:
        call.finish()
    context.abort_with_status(status)


class PassSerialized(_PerMethod):
    """Responses that are ``bytes`` are already serialized: sent as they are, not encoded."""

    @staticmethod
    def _wrap(method: str, handler: grpc.RpcMethodHandler | None) -> grpc.RpcMethodHandler | None:
        encode = getattr(handler, "response_serializer", None)
        if handler is None or encode is None:
            return handler

        def encode_or_pass(response: Any) -> bytes:
            return response if isinstance(response, bytes) else encode(response)

        return handler._replace(response_serializer=encode_or_pass)
