"""The error contract, entry by entry: SQLSTATE → kind → gRPC code, and the exact
google.rpc details each kind of error answers (docs/api.md, "Errors").

Table-driven on purpose: a row deleted or changed in errors.py or status.py changes what
a caller sees, and one of these rows must then fail (docs/testing.md, mutation testing).
"""

from __future__ import annotations

import dataclasses
import types
from typing import Any

import grpc
import psycopg2
import pytest
from google.protobuf import duration_pb2, struct_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from datamorph_gateway import errors
from datamorph_gateway.errors import (
    ECHO_MAX_CHARS,
    KIND_NAMES,
    KINDS,
    SQLSTATE_KINDS,
    FieldViolation,
    GatewayError,
    InvalidArgument,
    QueryError,
    clip,
    from_database_error,
    kind_for_sqlstate,
)
from datamorph_gateway.status import (
    DOMAIN,
    MAX_MESSAGE_BYTES,
    MAX_METADATA_VALUE_CHARS,
    MAX_VIOLATIONS_BYTES,
    STATUS_CODES,
    google_status,
    internal_status,
    status_code,
    to_status,
)

S = grpc.StatusCode

# Every exact SQLSTATE the mapping names, with the code its caller gets.
EXACT: dict[str, grpc.StatusCode] = {
    "42P01": S.NOT_FOUND,  # undefined_table
    "42501": S.PERMISSION_DENIED,  # insufficient_privilege
    "42P06": S.ALREADY_EXISTS,  # duplicate_schema
    "42P07": S.ALREADY_EXISTS,  # duplicate_table
    "42710": S.ALREADY_EXISTS,  # duplicate_object
    "23505": S.ALREADY_EXISTS,  # unique_violation
    "57014": S.DEADLINE_EXCEEDED,  # query_canceled
    "57P01": S.UNAVAILABLE,  # admin_shutdown
    "57P02": S.UNAVAILABLE,  # crash_shutdown
    "57P03": S.UNAVAILABLE,  # cannot_connect_now
    "40001": S.ABORTED,  # serialization_failure
    "40P01": S.ABORTED,  # deadlock_detected
    "P0002": S.NOT_FOUND,  # no_data_found
}

# Every two-character class the mapping names.
CLASSES: dict[str, grpc.StatusCode] = {
    "0A": S.INVALID_ARGUMENT,
    "21": S.INVALID_ARGUMENT,
    "22": S.INVALID_ARGUMENT,
    "23": S.FAILED_PRECONDITION,
    "25": S.FAILED_PRECONDITION,
    "26": S.INVALID_ARGUMENT,
    "2B": S.FAILED_PRECONDITION,
    "2F": S.FAILED_PRECONDITION,
    "34": S.INVALID_ARGUMENT,
    "3F": S.NOT_FOUND,
    "40": S.ABORTED,
    "42": S.INVALID_ARGUMENT,
    "44": S.FAILED_PRECONDITION,
    "53": S.RESOURCE_EXHAUSTED,
    "54": S.INVALID_ARGUMENT,
    "55": S.FAILED_PRECONDITION,
    "08": S.UNAVAILABLE,
    "P0": S.FAILED_PRECONDITION,
}

# Classes whose text may describe the server: kept from callers (INTERNAL, "internal error").
KEPT_FROM_CALLERS = ("XX", "58", "F0", "HV")

# Each kind: the gRPC code, and the ErrorInfo reason it carries unless given another.
KIND_CODES: dict[str, tuple[grpc.StatusCode, str]] = {
    "InvalidArgument": (S.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
    "NotFound": (S.NOT_FOUND, "NOT_FOUND"),
    "AlreadyExists": (S.ALREADY_EXISTS, "ALREADY_EXISTS"),
    "Unauthenticated": (S.UNAUTHENTICATED, "UNAUTHENTICATED"),
    "PermissionDenied": (S.PERMISSION_DENIED, "PERMISSION_DENIED"),
    "FailedPrecondition": (S.FAILED_PRECONDITION, "FAILED_PRECONDITION"),
    "Aborted": (S.ABORTED, "ABORTED"),
    "ResourceExhausted": (S.RESOURCE_EXHAUSTED, "RESOURCE_EXHAUSTED"),
    "Unavailable": (S.UNAVAILABLE, "UNAVAILABLE"),
    "DeadlineExceeded": (S.DEADLINE_EXCEEDED, "DEADLINE_EXCEEDED"),
    "Cancelled": (S.CANCELLED, "CANCELLED"),
    "Unimplemented": (S.UNIMPLEMENTED, "UNIMPLEMENTED"),
    "Internal": (S.INTERNAL, "INTERNAL"),
}


def database_error(
    sqlstate: str | None,
    *,
    base: type[psycopg2.Error] = psycopg2.DatabaseError,
    primary: str | None = "the database's message",
    detail: str | None = None,
    hint: str | None = None,
    text: str = "",
) -> psycopg2.Error:
    """A psycopg2 error as the driver raises it, with the SQLSTATE and diagnostics given."""
    diag = types.SimpleNamespace(message_primary=primary, message_detail=detail, message_hint=hint)
    cls = type("Raised", (base,), {"pgcode": sqlstate, "diag": diag})
    error: psycopg2.Error = cls(text)
    return error


def unpacked(status: status_pb2.Status) -> list[Any]:
    """The details of a status, unpacked in order."""
    kinds: list[type[Any]] = [
        error_details_pb2.ErrorInfo,
        error_details_pb2.BadRequest,
        error_details_pb2.RetryInfo,
        struct_pb2.Struct,
        duration_pb2.Duration,
    ]
    out = []
    for detail in status.details:
        kind = next(k for k in kinds if detail.Is(k.DESCRIPTOR))
        message = kind()
        detail.Unpack(message)
        out.append(message)
    return out


# -- SQLSTATE → kind → code ---------------------------------------------------------------


def test_the_mapping_names_exactly_these_states_and_classes() -> None:
    assert set(SQLSTATE_KINDS) == set(EXACT) | set(CLASSES)
    assert {errors.KIND_NAMES[kind] for kind in SQLSTATE_KINDS.values()} <= set(KINDS)


@pytest.mark.parametrize(("sqlstate", "code"), EXACT.items())
def test_each_exact_sqlstate_answers_its_code(sqlstate: str, code: grpc.StatusCode) -> None:
    assert status_code(kind_for_sqlstate(sqlstate)) == code


@pytest.mark.parametrize(("klass", "code"), CLASSES.items())
def test_each_class_answers_its_code(klass: str, code: grpc.StatusCode) -> None:
    # A state of the class that no exact entry names.
    assert status_code(kind_for_sqlstate(klass + "ZZZ")) == code


@pytest.mark.parametrize("klass", KEPT_FROM_CALLERS)
def test_server_fault_classes_are_internal_and_kept_from_callers(klass: str) -> None:
    assert status_code(kind_for_sqlstate(klass + "000")) == S.INTERNAL
    raised = database_error(klass + "000", primary="could not read block 7 of base/1/2")
    with pytest.raises(psycopg2.Error) as info:
        from_database_error(raised)
    assert info.value is raised  # re-raised: the boundary answers "internal error"


@pytest.mark.parametrize("sqlstate", ["3D000", "ZZ999", "0B000", "09000"])
def test_unknown_classes_are_failed_precondition(sqlstate: str) -> None:
    assert status_code(kind_for_sqlstate(sqlstate)) == S.FAILED_PRECONDITION


# -- from_database_error --------------------------------------------------------------------


@pytest.mark.parametrize(
    "sqlstate",
    [s for s, code in EXACT.items() if code != S.UNAVAILABLE]
    + [k + "ZZZ" for k, code in CLASSES.items() if code != S.UNAVAILABLE],
)
def test_a_refused_statement_is_a_query_error_with_its_sqlstate(sqlstate: str) -> None:
    error = from_database_error(database_error(sqlstate))
    assert isinstance(error, QueryError)
    assert error.sqlstate == sqlstate
    assert error.metadata == {"sqlstate": sqlstate}
    assert error.reason == "QUERY_FAILED"
    assert error.message == "the database's message"
    assert status_code(error) == (EXACT.get(sqlstate) or CLASSES[sqlstate[:2]])


def test_a_query_error_carries_detail_and_hint_in_that_order() -> None:
    error = from_database_error(
        database_error("23505", primary="duplicate key", detail="Key (id)=(1)", hint="pick one")
    )
    assert error.message == "duplicate key\nDETAIL: Key (id)=(1)\nHINT: pick one"
    only_hint = from_database_error(database_error("22012", primary="division", hint="h"))
    assert only_hint.message == "division\nHINT: h"


def test_without_a_primary_message_the_error_text_is_used() -> None:
    error = from_database_error(database_error("22012", primary=None, text="  division by zero\n"))
    assert error.message == "division by zero"


@pytest.mark.parametrize("sqlstate", ["57P01", "57P02", "57P03", "08006", "08000"])
def test_a_server_going_away_is_unavailable(sqlstate: str) -> None:
    error = from_database_error(database_error(sqlstate))
    assert type(error) is errors.Unavailable
    assert error.reason == "DATABASE_UNAVAILABLE"
    assert error.message == "the database connection was lost before the request finished"
    assert error.metadata == {"sqlstate": sqlstate}


@pytest.mark.parametrize("base", [psycopg2.OperationalError, psycopg2.InterfaceError])
def test_a_lost_connection_without_sqlstate_is_unavailable(base: type[psycopg2.Error]) -> None:
    error = from_database_error(database_error(None, base=base, text="server closed"))
    assert type(error) is errors.Unavailable
    assert status_code(error) == S.UNAVAILABLE
    assert error.reason == "DATABASE_UNAVAILABLE"
    assert error.metadata == {}


@pytest.mark.parametrize("base", [psycopg2.ProgrammingError, psycopg2.DataError])
def test_a_client_side_error_without_sqlstate_is_a_bug(base: type[psycopg2.Error]) -> None:
    raised = database_error(None, base=base, text="cursor already closed")
    with pytest.raises(psycopg2.Error) as info:
        from_database_error(raised)
    assert info.value is raised


# -- kinds ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "expected"), KIND_CODES.items())
def test_each_kind_answers_its_code_and_reason(
    name: str, expected: tuple[grpc.StatusCode, str]
) -> None:
    code, reason = expected
    kind: type[GatewayError] = getattr(errors, name)
    error = kind("went wrong")
    assert STATUS_CODES[kind] == code
    assert status_code(error) == status_code(kind) == code
    assert error.reason == reason
    assert error.kind is kind
    assert error.kind_name == code.name == KIND_NAMES[kind]
    assert KINDS[code.name] is kind


def test_the_tables_name_every_kind_once() -> None:
    assert set(STATUS_CODES) == set(KIND_NAMES) == {getattr(errors, n) for n in KIND_CODES}
    assert len(KINDS) == len(KIND_NAMES) == 13


def test_a_subclass_is_its_nearest_kind_and_a_plain_error_internal() -> None:
    class Missing(errors.NotFound):
        pass

    assert Missing("x").kind is errors.NotFound
    assert GatewayError("x").kind is errors.Internal
    assert GatewayError("x").reason == "INTERNAL"
    assert GatewayError("x", reason="MINE").reason == "MINE"


def test_a_gateway_error_keeps_what_it_was_given() -> None:
    error = GatewayError(
        "m",
        metadata={"a": "b"},
        violations=[FieldViolation("f", "d")],
        retry_delay_s=1.5,
        json_detail={"k": 1},
        extra_details=["x"],
    )
    assert (error.message, str(error)) == ("m", "m")
    assert error.metadata == {"a": "b"}
    assert error.violations == (FieldViolation("f", "d"),)
    assert (error.retry_delay_s, error.json_detail, error.extra_details) == (1.5, {"k": 1}, ("x",))
    plain = GatewayError("m")
    assert (plain.metadata, plain.violations, plain.extra_details) == ({}, (), ())
    assert plain.retry_delay_s is None
    assert plain.json_detail is None


def test_invalid_argument_names_its_fields() -> None:
    one = InvalidArgument.field("limit", "must be at least 1")
    assert one.message == "limit: must be at least 1"
    assert one.violations == (FieldViolation("limit", "must be at least 1"),)
    many = InvalidArgument.fields([FieldViolation("a", "bad"), FieldViolation("b", "worse")])
    assert many.message == "a: bad; b: worse"
    assert [v.field for v in many.violations] == ["a", "b"]


def test_a_field_violation_is_a_value() -> None:
    violation = FieldViolation("limit", "too big")
    assert {violation, FieldViolation("limit", "too big")} == {violation}
    with pytest.raises(dataclasses.FrozenInstanceError):
        violation.field = "other"  # type: ignore[misc]


def test_clip_cuts_echoed_values() -> None:
    assert ECHO_MAX_CHARS == 200
    assert clip("x" * 200) == "x" * 200
    assert clip("x" * 201) == "x" * 200 + "…"
    assert clip("abcdef", 3) == "abc…"
    assert clip("abc", 3) == "abc"


# -- the google.rpc details -----------------------------------------------------------------


def test_error_info_carries_reason_domain_metadata_and_request_id() -> None:
    error = errors.NotFound("table 'x' not found", metadata={"table": "x"})
    status = google_status(error, "req-1")
    assert DOMAIN == "datamorph.gateway"
    assert status.code == code_pb2.NOT_FOUND
    assert status.message == "table 'x' not found"
    [info] = unpacked(status)
    assert info == error_details_pb2.ErrorInfo(
        reason="NOT_FOUND",
        domain="datamorph.gateway",
        metadata={"table": "x", "request_id": "req-1"},
    )


def test_a_query_error_carries_its_sqlstate() -> None:
    error = from_database_error(database_error("42P07", primary='relation "t" already exists'))
    status = google_status(error, "r")
    assert status.code == code_pb2.ALREADY_EXISTS
    [info] = unpacked(status)
    assert info.reason == "QUERY_FAILED"
    assert dict(info.metadata) == {"sqlstate": "42P07", "request_id": "r"}


def test_details_come_in_order_error_info_bad_request_retry_struct_extra() -> None:
    extra = error_details_pb2.ErrorInfo(reason="EXTRA", domain="d")
    error = errors.ResourceExhausted(
        "slow down",
        reason="RATE_LIMITED",
        violations=[FieldViolation("f", "d")],
        retry_delay_s=3.25,
        json_detail={"run_id": "r1", "n": 2},
        extra_details=[extra],
    )
    status = google_status(error, "q")
    assert status.code == code_pb2.RESOURCE_EXHAUSTED
    info, bad, retry, detail, last = unpacked(status)
    assert info.reason == "RATE_LIMITED"
    assert info.domain == DOMAIN
    assert bad == error_details_pb2.BadRequest(
        field_violations=[error_details_pb2.BadRequest.FieldViolation(field="f", description="d")]
    )
    assert retry.retry_delay == duration_pb2.Duration(seconds=3, nanos=250_000_000)
    assert dict(detail) == {"run_id": "r1", "n": 2.0}
    assert last == extra


def test_a_retry_delay_of_zero_is_still_sent() -> None:
    _, retry = unpacked(google_status(errors.Unavailable("x", retry_delay_s=0.0), "r"))
    assert retry.retry_delay == duration_pb2.Duration(seconds=0, nanos=0)


def test_an_empty_json_detail_is_still_sent() -> None:
    _, detail = unpacked(google_status(errors.Aborted("x", json_detail={}), "r"))
    assert dict(detail) == {}


def test_bad_request_lists_every_violation_in_order() -> None:
    error = InvalidArgument.fields([FieldViolation("a", "x"), FieldViolation("b", "y")])
    _, bad = unpacked(google_status(error, "r"))
    assert [(v.field, v.description) for v in bad.field_violations] == [("a", "x"), ("b", "y")]


def test_metadata_values_are_clipped() -> None:
    assert MAX_METADATA_VALUE_CHARS == 400
    error = errors.NotFound("m", metadata={"table": "t" * 401, "short": "t" * 400})
    [info] = unpacked(google_status(error, "r"))
    assert info.metadata["table"] == "t" * 400 + "…"
    assert info.metadata["short"] == "t" * 400


def test_a_long_message_is_cut_to_its_bytes() -> None:
    assert MAX_MESSAGE_BYTES == 1024
    exact = google_status(errors.Internal("é" * 512), "r")
    assert exact.message == "é" * 512
    cut = google_status(errors.Internal("é" * 513), "r").message
    assert cut == "é" * 510 + "…"
    assert len(cut.encode()) <= MAX_MESSAGE_BYTES
    assert google_status(errors.Internal("a" * 1025), "r").message == "a" * 1021 + "…"


def test_violations_are_bounded_but_one_is_always_kept() -> None:
    assert MAX_VIOLATIONS_BYTES == 1024
    huge = FieldViolation("f", "d" * 2000)
    _, bad = unpacked(google_status(InvalidArgument.fields([huge, huge]), "r"))
    [only] = bad.field_violations
    assert only.description == "d" * 509 + "…"
    many = [FieldViolation(f"f{i}", "d" * 98) for i in range(20)]  # 100 bytes each: 10 fit
    _, bad = unpacked(google_status(InvalidArgument.fields(many), "r"))
    assert [v.field for v in bad.field_violations] == [f"f{i}" for i in range(10)]
    exact = [FieldViolation("ab", "d" * 510), FieldViolation("cd", "d" * 510)]  # 1024 bytes
    _, bad = unpacked(google_status(InvalidArgument.fields(exact), "r"))
    assert len(bad.field_violations) == 2
    over = [FieldViolation("ab", "d" * 510), FieldViolation("cde", "d" * 510)]  # 1025 bytes
    _, bad = unpacked(google_status(InvalidArgument.fields(over), "r"))
    assert len(bad.field_violations) == 1


def test_to_status_carries_code_message_and_details() -> None:
    status = to_status(errors.PermissionDenied("no", reason="NOT_ALLOWED"), "r")
    assert status.code == S.PERMISSION_DENIED
    assert status.details == "no"
    [(key, value)] = status.trailing_metadata
    assert key == "grpc-status-details-bin"
    sent = status_pb2.Status.FromString(value)
    assert sent == google_status(errors.PermissionDenied("no", reason="NOT_ALLOWED"), "r")


def test_a_bug_answers_internal_error_and_the_request_id_only() -> None:
    status = internal_status("req-9")
    assert status.code == S.INTERNAL
    assert status.details == "internal error (request id req-9)"
    sent = status_pb2.Status.FromString(dict(status.trailing_metadata)["grpc-status-details-bin"])
    assert sent.code == code_pb2.INTERNAL
    assert sent.message == "internal error (request id req-9)"
    [info] = unpacked(sent)
    assert info == error_details_pb2.ErrorInfo(
        reason="INTERNAL", domain="datamorph.gateway", metadata={"request_id": "req-9"}
    )
