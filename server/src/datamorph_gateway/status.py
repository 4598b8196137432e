"""Domain errors as gRPC statuses: the class → code table and the google.rpc details.

The only place that knows which ``grpc.StatusCode`` each kind of ``errors.GatewayError``
answers (Envoy turns the code into the contract's HTTP status). Used by ``rpc`` for every
call, the authorization check and undecodable requests alike.

The whole status travels in HTTP/2 trailers (grpc-message, percent-encoded, and
grpc-status-details-bin, base64, which repeats the message). gRPC clients drop trailers
over 8 KiB at random and over 16 KiB always; Envoy turns that into a 502. The bounds
below keep a status under 8 KiB even when every byte of the message must be
percent-encoded.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from google.protobuf import any_pb2, duration_pb2, struct_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from datamorph_gateway.errors import (
    ECHO_MAX_CHARS,
    Aborted,
    AlreadyExists,
    Cancelled,
    DeadlineExceeded,
    FailedPrecondition,
    FieldViolation,
    GatewayError,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    Unimplemented,
    clip,
)

DOMAIN = "datamorph.gateway"

MAX_MESSAGE_BYTES = 1024
MAX_VIOLATIONS_BYTES = 1024
MAX_METADATA_VALUE_CHARS = 2 * ECHO_MAX_CHARS

_S = grpc.StatusCode
STATUS_CODES: dict[type[GatewayError], grpc.StatusCode] = {
    InvalidArgument: _S.INVALID_ARGUMENT,
    NotFound: _S.NOT_FOUND,
    AlreadyExists: _S.ALREADY_EXISTS,
    Unauthenticated: _S.UNAUTHENTICATED,
    PermissionDenied: _S.PERMISSION_DENIED,
    FailedPrecondition: _S.FAILED_PRECONDITION,
    Aborted: _S.ABORTED,
    ResourceExhausted: _S.RESOURCE_EXHAUSTED,
    Unavailable: _S.UNAVAILABLE,
    DeadlineExceeded: _S.DEADLINE_EXCEEDED,
    Cancelled: _S.CANCELLED,
    Unimplemented: _S.UNIMPLEMENTED,
    Internal: _S.INTERNAL,
}


def status_code(error: GatewayError | type[GatewayError]) -> grpc.StatusCode:
    """The code an error (or a kind of error) answers."""
    kind = error.kind if isinstance(error, GatewayError) else error
    return STATUS_CODES[kind]


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def google_status(exc: GatewayError, request_id: str) -> status_pb2.Status:
    """The google.rpc.Status a request error answers: ErrorInfo first, then BadRequest,
    RetryInfo and a Struct when the error has them, then the RPC layer's own details."""
    metadata = {k: clip(v, MAX_METADATA_VALUE_CHARS) for k, v in exc.metadata.items()}
    info = error_details_pb2.ErrorInfo(
        reason=exc.reason, domain=DOMAIN, metadata={**metadata, "request_id": request_id}
    )
    details = [_pack(info)]
    if exc.violations:
        bad = error_details_pb2.BadRequest(field_violations=_bounded(exc.violations))
        details.append(_pack(bad))
    if exc.retry_delay_s is not None:
        delay = exc.retry_delay_s
        duration = duration_pb2.Duration(seconds=int(delay), nanos=int((delay % 1) * 1_000_000_000))
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=duration)))
    if exc.json_detail is not None:
        detail = struct_pb2.Struct()
        detail.update(exc.json_detail)
        details.append(_pack(detail))
    details.extend(_pack(d) for d in exc.extra_details)
    message = _cut_bytes(exc.message, MAX_MESSAGE_BYTES)
    return status_pb2.Status(code=status_code(exc).value[0], message=message, details=details)


def to_status(exc: GatewayError, request_id: str) -> grpc.Status:
    """The gRPC status (with google.rpc details) that a request error answers."""
    return rpc_status.to_status(google_status(exc, request_id))


def _cut_bytes(text: str, limit: int) -> str:
    """``text`` in at most ``limit`` UTF-8 bytes, ending in "…" when cut."""
    encoded = text.encode("utf-8")
    if len(encoded) <= limit:
        return text
    return encoded[: limit - 3].decode("utf-8", "ignore") + "…"


def _bounded(
    violations: Sequence[FieldViolation],
) -> list[error_details_pb2.BadRequest.FieldViolation]:
    """The first violations that fit ``MAX_VIOLATIONS_BYTES`` (always at least one)."""
    kept: list[error_details_pb2.BadRequest.FieldViolation] = []
    used = 0
    for v in violations:
        description = _cut_bytes(v.description, MAX_VIOLATIONS_BYTES // 2)
        used += len(v.field.encode("utf-8")) + len(description.encode("utf-8"))
        if kept and used > MAX_VIOLATIONS_BYTES:
            break
        kept.append(
            error_details_pb2.BadRequest.FieldViolation(field=v.field, description=description)
        )
    return kept


def internal_status(request_id: str) -> grpc.Status:
    """What a bug answers: no internals, just a request id to find the log line."""
    info = error_details_pb2.ErrorInfo(
        reason="INTERNAL", domain=DOMAIN, metadata={"request_id": request_id}
    )
    status = status_pb2.Status(
        code=code_pb2.INTERNAL,
        message=f"internal error (request id {request_id})",
        details=[_pack(info)],
    )
    return rpc_status.to_status(status)
