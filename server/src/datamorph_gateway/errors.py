"""Errors, and the one place they become gRPC statuses.

Request errors (the caller can fix them)::

    GatewayError                  a failed request; carries its gRPC code
    ├── InvalidArgument           INVALID_ARGUMENT, with BadRequest field violations
    ├── NotFound                  NOT_FOUND: a table or run that does not exist
    ├── PermissionDenied          PERMISSION_DENIED: the request is understood but not allowed
    ├── FailedPrecondition        FAILED_PRECONDITION
    ├── ResourceExhausted         RESOURCE_EXHAUSTED: a limit of the gateway's
    ├── Unavailable               UNAVAILABLE: the database cannot be reached
    ├── DeadlineExceeded          DEADLINE_EXCEEDED: the caller's deadline or the gateway's limit
    ├── Cancelled                 CANCELLED: the caller went away (cancel, disconnect)
    ├── Unimplemented             UNIMPLEMENTED
    └── QueryError                the database refused a statement; the code comes
                                  from its SQLSTATE (see ``SQLSTATE_CODES``)

Gateway errors (an operator must fix them)::

    ConfigError                   the configuration is wrong; raised at start-up

Anything else reaching the boundary is a bug: the caller gets INTERNAL with
"internal error" and a request id, the traceback goes to the server log only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import grpc
import psycopg2
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

DOMAIN = "datamorph.gateway"

# A caller's value quoted in an error (a table name, a run id) is cut to this many characters.
ECHO_MAX_CHARS = 200
# The whole status travels in HTTP/2 trailers (grpc-message, percent-encoded, and
# grpc-status-details-bin, base64, which repeats the message). gRPC clients drop trailers
# over 8 KiB at random and over 16 KiB always; Envoy turns that into a 502. These bounds
# keep a status under 8 KiB even when every byte of the message must be percent-encoded.
MAX_MESSAGE_BYTES = 1024
MAX_VIOLATIONS_BYTES = 1024
MAX_METADATA_VALUE_CHARS = 2 * ECHO_MAX_CHARS


def clip(text: str, limit: int = ECHO_MAX_CHARS) -> str:
    """``text`` as an error message may echo it: at most ``limit`` characters, then "…"."""
    return text if len(text) <= limit else text[:limit] + "…"


class ConfigError(Exception):
    """The gateway is misconfigured; reported once at start-up, never to callers."""


@dataclass(frozen=True)
class FieldViolation:
    """One bad field of a request, for google.rpc.BadRequest."""

    field: str
    description: str


class GatewayError(Exception):
    """A request that failed in a way the caller should hear about."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    reason: str = "INTERNAL"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
        violations: Sequence[FieldViolation] = (),
        extra_details: Sequence[object] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason
        self.metadata = dict(metadata or {})
        self.violations = tuple(violations)
        self.extra_details = tuple(extra_details)


class InvalidArgument(GatewayError):
    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "INVALID_ARGUMENT"

    @classmethod
    def field(cls, field: str, description: str) -> InvalidArgument:
        """The usual case: one field is wrong, and the message names it."""
        return cls(f"{field}: {description}", violations=[FieldViolation(field, description)])


class NotFound(GatewayError):
    code = grpc.StatusCode.NOT_FOUND
    reason = "NOT_FOUND"


class Unauthenticated(GatewayError):
    """No credentials, or credentials that prove nothing (docs/security.md)."""

    code = grpc.StatusCode.UNAUTHENTICATED
    reason = "UNAUTHENTICATED"


class PermissionDenied(GatewayError):
    """Understood, and refused: what the request asks is not allowed through the gateway."""

    code = grpc.StatusCode.PERMISSION_DENIED
    reason = "PERMISSION_DENIED"


class FailedPrecondition(GatewayError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "FAILED_PRECONDITION"


class ResourceExhausted(GatewayError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "RESOURCE_EXHAUSTED"


class Unavailable(GatewayError):
    code = grpc.StatusCode.UNAVAILABLE
    reason = "UNAVAILABLE"


class DeadlineExceeded(GatewayError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED
    reason = "DEADLINE_EXCEEDED"


class Cancelled(GatewayError):
    """The call ended before its work did; the status rarely reaches anyone, the logs say it."""

    code = grpc.StatusCode.CANCELLED
    reason = "CANCELLED"


class Unimplemented(GatewayError):
    code = grpc.StatusCode.UNIMPLEMENTED
    reason = "UNIMPLEMENTED"


class QueryError(GatewayError):
    """The database refused a statement; the message is the database's own."""

    reason = "QUERY_FAILED"

    def __init__(self, message: str, *, code: grpc.StatusCode, sqlstate: str) -> None:
        super().__init__(message, metadata={"sqlstate": sqlstate})
        self.code = code
        self.sqlstate = sqlstate


_S = grpc.StatusCode
# Exact SQLSTATEs first, then two-character classes.
SQLSTATE_CODES: dict[str, grpc.StatusCode] = {
    "42P01": _S.NOT_FOUND,  # undefined_table
    "42501": _S.PERMISSION_DENIED,  # insufficient_privilege
    "42P06": _S.ALREADY_EXISTS,  # duplicate_schema
    "42P07": _S.ALREADY_EXISTS,  # duplicate_table
    "42710": _S.ALREADY_EXISTS,  # duplicate_object
    "23505": _S.ALREADY_EXISTS,  # unique_violation
    "57014": _S.DEADLINE_EXCEEDED,  # query_canceled: our statement timeout
    "57P01": _S.UNAVAILABLE,  # admin_shutdown
    "57P02": _S.UNAVAILABLE,  # crash_shutdown
    "57P03": _S.UNAVAILABLE,  # cannot_connect_now
    "40001": _S.ABORTED,  # serialization_failure
    "40P01": _S.ABORTED,  # deadlock_detected
    "P0002": _S.NOT_FOUND,  # no_data_found
    "0A": _S.INVALID_ARGUMENT,  # feature_not_supported
    "21": _S.INVALID_ARGUMENT,  # cardinality_violation
    "22": _S.INVALID_ARGUMENT,  # data_exception
    "23": _S.FAILED_PRECONDITION,  # integrity_constraint_violation
    "25": _S.FAILED_PRECONDITION,  # invalid_transaction_state (e.g. read-only)
    "26": _S.INVALID_ARGUMENT,  # invalid_sql_statement_name
    "2B": _S.FAILED_PRECONDITION,  # dependent_privilege_descriptors_still_exist
    "2F": _S.FAILED_PRECONDITION,  # sql_routine_exception
    "34": _S.INVALID_ARGUMENT,  # invalid_cursor_name
    "3F": _S.NOT_FOUND,  # invalid_schema_name
    "40": _S.ABORTED,  # transaction_rollback
    "42": _S.INVALID_ARGUMENT,  # syntax_error_or_access_rule_violation
    "44": _S.FAILED_PRECONDITION,  # with_check_option_violation
    "53": _S.RESOURCE_EXHAUSTED,  # insufficient_resources
    "54": _S.INVALID_ARGUMENT,  # program_limit_exceeded (statement too complex)
    "55": _S.FAILED_PRECONDITION,  # object_not_in_prerequisite_state (e.g. lock_not_available)
    "08": _S.UNAVAILABLE,  # connection_exception
    "P0": _S.FAILED_PRECONDITION,  # plpgsql_error, raise_exception
}

# States whose text may describe the server rather than the caller's SQL.
_INTERNAL_CLASSES = ("XX", "58", "F0", "HV")


def code_for_sqlstate(sqlstate: str) -> grpc.StatusCode:
    """The gRPC code for a SQLSTATE; INTERNAL for server faults and unknown classes."""
    if sqlstate in SQLSTATE_CODES:
        return SQLSTATE_CODES[sqlstate]
    if sqlstate[:2] in _INTERNAL_CLASSES:
        return _S.INTERNAL
    return SQLSTATE_CODES.get(sqlstate[:2], _S.FAILED_PRECONDITION)


def from_database_error(exc: psycopg2.Error) -> GatewayError:
    """Translate a psycopg2 error raised while running SQL into a request error.

    Errors that are the server's fault (SQLSTATE classes XX, 58, ...) and
    client-side psycopg2 errors without a SQLSTATE are bugs, not request
    errors: they are re-raised for the boundary to answer INTERNAL.
    """
    sqlstate = exc.pgcode or ""
    if not sqlstate and not isinstance(exc, (psycopg2.OperationalError, psycopg2.InterfaceError)):
        raise exc
    code = code_for_sqlstate(sqlstate) if sqlstate else _S.UNAVAILABLE
    if code == _S.INTERNAL:
        raise exc
    if code == _S.UNAVAILABLE:
        return Unavailable(
            "the database connection was lost before the request finished",
            reason="DATABASE_UNAVAILABLE",
            metadata={"sqlstate": sqlstate} if sqlstate else {},
        )
    diag = exc.diag
    parts = [diag.message_primary or str(exc).strip()]
    if diag.message_detail:
        parts.append(f"DETAIL: {diag.message_detail}")
    if diag.message_hint:
        parts.append(f"HINT: {diag.message_hint}")
    return QueryError("\n".join(parts), code=code, sqlstate=sqlstate)


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def to_status(exc: GatewayError, request_id: str) -> grpc.Status:
    """The gRPC status (with google.rpc details) that a request error answers."""
    metadata = {k: clip(v, MAX_METADATA_VALUE_CHARS) for k, v in exc.metadata.items()}
    info = error_details_pb2.ErrorInfo(
        reason=exc.reason, domain=DOMAIN, metadata={**metadata, "request_id": request_id}
    )
    details = [_pack(info)]
    if exc.violations:
        bad = error_details_pb2.BadRequest(field_violations=_bounded(exc.violations))
        details.append(_pack(bad))
    details.extend(_pack(d) for d in exc.extra_details)
    message = _cut_bytes(exc.message, MAX_MESSAGE_BYTES)
    status = status_pb2.Status(code=exc.code.value[0], message=message, details=details)
    return rpc_status.to_status(status)


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
