"""The boundary every RPC crosses: request ids, one log line, errors to statuses.

``@rpc`` wraps a servicer method. It takes the request id from Envoy's
``x-request-id`` metadata (or makes one), makes it visible to every log line
of the request, turns ``GatewayError`` into its status with google.rpc
details, turns anything else into INTERNAL with the request id (traceback to
the log only), and logs one line per request: method, code, duration.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import re
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import grpc

from datamorph_gateway.errors import DeadlineExceeded, GatewayError, internal_status, to_status

log = logging.getLogger("datamorph_gateway.access")
request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

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


def rpc(method: Method[Req, Resp]) -> Method[Req, Resp]:
    name = method.__name__

    @functools.wraps(method)
    def wrapper(self: Any, request: Req, context: grpc.ServicerContext) -> Resp:
        request_id = _request_id(context)
        token = request_id_var.set(request_id)
        start = time.perf_counter()
        code = grpc.StatusCode.OK
        status: grpc.Status | None = None
        try:
            return method(self, request, context)
        except GatewayError as exc:
            code = exc.code
            status = to_status(exc, request_id)
        except Exception:
            code = grpc.StatusCode.INTERNAL
            log.exception("unhandled error in %s", name)
            status = internal_status(request_id)
        finally:
            elapsed_ms = (time.perf_counter() - start) * 1000
            log.info(
                "rpc %s code=%s duration_ms=%.2f peer=%s",
                name,
                code.name,
                elapsed_ms,
                context.peer(),
            )
            request_id_var.reset(token)
        context.abort_with_status(status)
        raise AssertionError("abort_with_status returns only by raising")

    return wrapper
