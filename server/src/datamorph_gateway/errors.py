"""The gateway's errors, in its own words; the RPC layer alone turns them into gRPC statuses.

Request errors (the caller should hear about them); each class is a kind of failure,
and ``status.STATUS_CODES`` says which gRPC code each kind answers::

    GatewayError                  a failed request: message, reason, metadata, field
    │                             violations, a retry delay; ``kind`` is its class below
    ├── InvalidArgument           a bad field, with BadRequest field violations
    ├── NotFound                  a table or run that does not exist
    ├── AlreadyExists             what the request would create exists already
    ├── PermissionDenied          the request is understood but not allowed
    ├── Unauthenticated           no credentials, or credentials that prove nothing
    ├── FailedPrecondition        the system is not in a state that allows the request
    ├── Aborted                   a conflict ended it: a transaction, a run that never finished
    ├── ResourceExhausted         a limit of the gateway's
    ├── Unavailable               a dependency cannot be reached; trying again may work
    ├── DeadlineExceeded          the caller's deadline or the gateway's limit
    ├── Cancelled                 the caller went away (cancel, disconnect)
    ├── Unimplemented
    ├── Internal                  a failure the caller cannot fix (an orchestrator's 5xx)
    └── QueryError                the database refused a statement; its ``kind`` comes
                                  from its SQLSTATE (see ``SQLSTATE_KINDS``)

``QueryError`` and ``workflows.WorkflowError`` carry a kind given from outside (a SQLSTATE,
an orchestrator's status, a recorded outcome) without being instances of it, so that
``except NotFound`` means the gateway's own "not found", never a statement that failed.

Gateway errors (an operator must fix them)::

    ConfigError                   the configuration is wrong; raised at start-up

Anything else reaching the boundary is a bug: the caller gets INTERNAL with
"internal error" and a request id, the traceback goes to the server log only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg2

from datamorph_gateway.observability import metrics

# A caller's value quoted in an error (a table name, a run id) is cut to this many characters.
ECHO_MAX_CHARS = 200


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
    """A request that failed in a way the caller should hear about.

    ``retry_delay_s`` tells the caller when to try again (google.rpc.RetryInfo);
    ``json_detail`` is a JSON object the status carries (google.protobuf.Struct);
    ``extra_details`` are messages the RPC layer itself adds as they are.
    """

    reason: str = "INTERNAL"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
        violations: Sequence[FieldViolation] = (),
        retry_delay_s: float | None = None,
        json_detail: Mapping[str, Any] | None = None,
        extra_details: Sequence[object] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason
        self.metadata = dict(metadata or {})
        self.violations = tuple(violations)
        self.retry_delay_s = retry_delay_s
        self.json_detail = json_detail
        self.extra_details = tuple(extra_details)
        self.kind: type[GatewayError] = _kind_of(type(self))

    @property
    def kind_name(self) -> str:
        """The kind as run logs and the idempotency ledger record it ("NOT_FOUND"), spelled
        as google.rpc.Code spells the code it answers, as those records always have."""
        return KIND_NAMES[self.kind]


class InvalidArgument(GatewayError):
    reason = "INVALID_ARGUMENT"

    @classmethod
    def field(cls, field: str, description: str) -> InvalidArgument:
        """The usual case: one field is wrong, and the message names it."""
        return cls(f"{field}: {description}", violations=[FieldViolation(field, description)])

    @classmethod
    def fields(cls, violations: Sequence[FieldViolation]) -> InvalidArgument:
        """Several fields are wrong: the message names each, in order."""
        message = "; ".join(f"{v.field}: {v.description}" for v in violations)
        return cls(message, violations=violations)


class NotFound(GatewayError):
    reason = "NOT_FOUND"


class AlreadyExists(GatewayError):
    reason = "ALREADY_EXISTS"


class Unauthenticated(GatewayError):
    """No credentials, or credentials that prove nothing (docs/security.md)."""

    reason = "UNAUTHENTICATED"


class PermissionDenied(GatewayError):
    """Understood, and refused: what the request asks is not allowed through the gateway."""

    reason = "PERMISSION_DENIED"


class FailedPrecondition(GatewayError):
    reason = "FAILED_PRECONDITION"


class Aborted(GatewayError):
    reason = "ABORTED"


class ResourceExhausted(GatewayError):
    reason = "RESOURCE_EXHAUSTED"


class Unavailable(GatewayError):
    reason = "UNAVAILABLE"


class DeadlineExceeded(GatewayError):
    reason = "DEADLINE_EXCEEDED"


class Cancelled(GatewayError):
    """The call ended before its work did; the status rarely reaches anyone, the logs say it."""

    reason = "CANCELLED"


class Unimplemented(GatewayError):
    reason = "UNIMPLEMENTED"


class Internal(GatewayError):
    """Failed in a way the caller cannot fix, and the gateway knows why (not a bug: bugs
    reach the boundary as themselves and answer "internal error")."""


KIND_NAMES: dict[type[GatewayError], str] = {
    InvalidArgument: "INVALID_ARGUMENT",
    NotFound: "NOT_FOUND",
    AlreadyExists: "ALREADY_EXISTS",
    Unauthenticated: "UNAUTHENTICATED",
    PermissionDenied: "PERMISSION_DENIED",
    FailedPrecondition: "FAILED_PRECONDITION",
    Aborted: "ABORTED",
    ResourceExhausted: "RESOURCE_EXHAUSTED",
    Unavailable: "UNAVAILABLE",
    DeadlineExceeded: "DEADLINE_EXCEEDED",
    Cancelled: "CANCELLED",
    Unimplemented: "UNIMPLEMENTED",
    Internal: "INTERNAL",
}
KINDS: dict[str, type[GatewayError]] = {name: kind for kind, name in KIND_NAMES.items()}


def _kind_of(cls: type[GatewayError]) -> type[GatewayError]:
    """The kind a class is (its nearest kind ancestor); Internal for none."""
    return next((c for c in cls.__mro__ if c in KIND_NAMES), Internal)


class QueryError(GatewayError):
    """The database refused a statement; the message is the database's own."""

    reason = "QUERY_FAILED"

    def __init__(self, message: str, *, kind: type[GatewayError], sqlstate: str) -> None:
        super().__init__(message, metadata={"sqlstate": sqlstate})
        self.kind = kind
        self.sqlstate = sqlstate


# Exact SQLSTATEs first, then two-character classes.
SQLSTATE_KINDS: dict[str, type[GatewayError]] = {
    "42P01": NotFound,  # undefined_table
    "42501": PermissionDenied,  # insufficient_privilege
    "42P06": AlreadyExists,  # duplicate_schema
    "42P07": AlreadyExists,  # duplicate_table
    "42710": AlreadyExists,  # duplicate_object
    "23505": AlreadyExists,  # unique_violation
    "57014": DeadlineExceeded,  # query_canceled: our statement timeout
    "57P01": Unavailable,  # admin_shutdown
    "57P02": Unavailable,  # crash_shutdown
    "57P03": Unavailable,  # cannot_connect_now
    "40001": Aborted,  # serialization_failure
    "40P01": Aborted,  # deadlock_detected
    "P0002": NotFound,  # no_data_found
    "0A": InvalidArgument,  # feature_not_supported
    "21": InvalidArgument,  # cardinality_violation
    "22": InvalidArgument,  # data_exception
    "23": FailedPrecondition,  # integrity_constraint_violation
    "25": FailedPrecondition,  # invalid_transaction_state (e.g. read-only)
    "26": InvalidArgument,  # invalid_sql_statement_name
    "2B": FailedPrecondition,  # dependent_privilege_descriptors_still_exist
    "2F": FailedPrecondition,  # sql_routine_exception
    "34": InvalidArgument,  # invalid_cursor_name
    "3F": NotFound,  # invalid_schema_name
    "40": Aborted,  # transaction_rollback
    "42": InvalidArgument,  # syntax_error_or_access_rule_violation
    "44": FailedPrecondition,  # with_check_option_violation
    "53": ResourceExhausted,  # insufficient_resources
    "54": InvalidArgument,  # program_limit_exceeded (statement too complex)
    "55": FailedPrecondition,  # object_not_in_prerequisite_state (e.g. lock_not_available)
    "08": Unavailable,  # connection_exception
    "P0": FailedPrecondition,  # plpgsql_error, raise_exception
}

# States whose text may describe the server rather than the caller's SQL.
_INTERNAL_CLASSES = ("XX", "58", "F0", "HV")


def kind_for_sqlstate(sqlstate: str) -> type[GatewayError]:
    """The kind of error a SQLSTATE is; Internal for server faults and unknown classes."""
    if sqlstate in SQLSTATE_KINDS:
        return SQLSTATE_KINDS[sqlstate]
    if sqlstate[:2] in _INTERNAL_CLASSES:
        return Internal
    return SQLSTATE_KINDS.get(sqlstate[:2], FailedPrecondition)


def from_database_error(exc: psycopg2.Error) -> GatewayError:
    """Translate a psycopg2 error raised while running SQL into a request error.

    Errors that are the server's fault (SQLSTATE classes XX, 58, ...) and
    client-side psycopg2 errors without a SQLSTATE are bugs, not request
    errors: they are re-raised for the boundary to answer INTERNAL.
    """
    sqlstate = exc.pgcode or ""
    metrics.db_error(sqlstate)
    if not sqlstate and not isinstance(exc, (psycopg2.OperationalError, psycopg2.InterfaceError)):
        raise exc
    kind = kind_for_sqlstate(sqlstate) if sqlstate else Unavailable
    if kind is Internal:
        raise exc
    if kind is Unavailable:
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
    return QueryError("\n".join(parts), kind=kind, sqlstate=sqlstate)
