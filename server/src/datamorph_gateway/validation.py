"""Every request is checked here, before any of it reaches the database or the orchestrator.

One place, so that every bad field is named the same way for gRPC and REST callers (by
its path in the request message, as google.rpc.BadRequest wants) and the layers below
can take what they are given as checked. Each request type has a method that refuses the
request with the first problem it finds, in the order a caller reads the fields, or
returns the values the servicer passes on. What only the work itself can find out (a
table that does not exist, a statement the database refuses, the development
orchestrator's rules for its SQL prompt) is refused where it is found.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from google.protobuf import struct_pb2

from datamorph.gateway.v1 import gateway_pb2 as pb
from datamorph_gateway.auth.policy import Principal
from datamorph_gateway.config import LimitsSettings
from datamorph_gateway.db import sqltext
from datamorph_gateway.db.names import InvalidTableName, TableName, parse_table_name
from datamorph_gateway.db.params import MAX_SAFE_INTEGER
from datamorph_gateway.db.sqlpolicy import Refusal, SqlPolicy, first_write
from datamorph_gateway.errors import (
    FieldViolation,
    GatewayError,
    InvalidArgument,
    PermissionDenied,
    QueryError,
    clip,
)
from datamorph_gateway.logstore import check_run_id
from datamorph_gateway.workflows import WorkflowRequest

MAX_IDEMPOTENCY_KEY_CHARS = 256


@dataclass(frozen=True)
class CheckedQuery:
    """An ExecuteQuery request that may run: its statements and how."""

    script: sqltext.Script
    read_only: bool
    """The request's, or forced by a principal allowed only ``ExecuteQuery:read``."""
    max_rows: int


@dataclass(frozen=True)
class CheckedStream:
    """A StreamQuery request that may run: one query, and the rows per message."""

    statement: sqltext.Statement
    batch_rows: int


class Validator:
    """The checks, with the limits of the settings and the SQL policy they name."""

    def __init__(self, settings: LimitsSettings) -> None:
        self._settings = settings
        self.policy = SqlPolicy(settings.sql_denied_functions.split(","))

    # -- tables ----------------------------------------------------------------

    def get_schemas(self, request: pb.GetSchemasRequest) -> list[TableName]:
        return self._table_names(request.table_names)

    def get_data(self, request: pb.GetDataRequest) -> tuple[list[TableName], int]:
        """The tables to sample, and how many rows of each."""
        s = self._settings
        names = self._table_names(request.table_names)
        limit = s.default_sample_limit
        if request.HasField("limit"):
            limit = request.limit
            if not 0 < limit <= s.max_sample_limit:
                raise InvalidArgument.field(
                    "limit", f"must be between 1 and {s.max_sample_limit}, got {limit}"
                )
        return names, limit

    def _table_names(self, names: Sequence[str]) -> list[TableName]:
        """At least one, within the limit, each well formed."""
        s = self._settings
        if not names:
            raise InvalidArgument.field("table_names", "must name at least one table")
        if len(names) > s.max_table_names:
            raise InvalidArgument.field(
                "table_names", f"at most {s.max_table_names} tables per request, got {len(names)}"
            )
        return _parsed([(f"table_names[{i}]", name) for i, name in enumerate(names)])

    # -- SQL -------------------------------------------------------------------------

    def execute_query(self, request: pb.ExecuteQueryRequest, principal: Principal) -> CheckedQuery:
        s = self._settings
        # A principal allowed only "ExecuteQuery:read" reads, whatever the request says.
        reader = principal.read_only_queries
        read_only = request.read_only or reader
        script = self._script(
            request.query, request.params, read_only=read_only, reader=principal if reader else None
        )
        max_rows = s.max_result_rows
        if request.HasField("max_rows"):
            max_rows = request.max_rows
            if not 0 < max_rows <= s.max_result_rows:
                raise InvalidArgument.field(
                    "max_rows", f"must be between 1 and {s.max_result_rows}, got {max_rows}"
                )
        return CheckedQuery(script, read_only, max_rows)

    def stream_query(self, request: pb.StreamQueryRequest) -> CheckedStream:
        s = self._settings
        script = self._script(request.query, request.params, read_only=True)
        if not script.single_query:
            raise InvalidArgument.field(
                "query", "must be a single SELECT, VALUES, TABLE or WITH statement"
            )
        batch_rows = s.stream_batch_rows
        if request.HasField("batch_rows"):
            batch_rows = request.batch_rows
            if not 0 < batch_rows <= s.max_stream_batch_rows:
                raise InvalidArgument.field(
                    "batch_rows",
                    f"must be between 1 and {s.max_stream_batch_rows}, got {batch_rows}",
                )
        return CheckedStream(script.statements[0], batch_rows)

    def _script(
        self,
        query: str,
        params: Sequence[struct_pb2.Value],
        *,
        read_only: bool,
        reader: Principal | None = None,
    ) -> sqltext.Script:
        """Parse the caller's SQL with PostgreSQL's parser and refuse what the policy refuses.

        For a ``reader`` (a principal allowed only ``ExecuteQuery:read``) a statement that
        writes is refused first, naming what the principal lacks rather than the read-only
        rule it would also break.
        """
        s = self._settings
        if not query.strip():
            raise InvalidArgument.field("query", "must not be empty")
        size = len(query.encode("utf-8"))
        if size > s.max_query_bytes:
            raise InvalidArgument.field(
                "query", f"is {size} bytes, over the limit of {s.max_query_bytes}"
            )
        if "\x00" in query:
            raise InvalidArgument.field("query", "must not contain NUL characters")
        try:
            script = sqltext.parse(query)
        except sqltext.SqlSyntaxError as exc:
            where = f" at character {exc.position}" if exc.position else ""
            raise QueryError(
                f"{exc.message}{where}", kind=InvalidArgument, sqlstate="42601"
            ) from None
        if not script.statements:
            raise InvalidArgument.field("query", "holds no SQL statement")
        if reader is not None:
            write = first_write(script)
            if write is not None:
                raise PermissionDenied(
                    f"query: principal {reader.name!r} may only read "
                    f"(ExecuteQuery:read), and {write} writes",
                    reason="WRITES_NOT_ALLOWED",
                )
        if read_only and len(script.statements) > 1:
            raise InvalidArgument.field("query", "a read_only query must be a single statement")
        refusal = self.policy.check(script, read_only=read_only)
        if refusal is not None:
            raise _refused(refusal, len(script.statements))
        self._params(script, params)
        return script

    def _params(self, script: sqltext.Script, params: Sequence[struct_pb2.Value]) -> None:
        s = self._settings
        count = len(params)
        if count > s.max_query_params:
            raise InvalidArgument.field(
                "params", f"at most {s.max_query_params} values, got {count}"
            )
        if count and not script.placeholders:
            raise InvalidArgument.field(
                "params", f"{count} values given but the query has no $n placeholders"
            )
        if count and (script.max_placeholder != count or 0 in script.placeholders):
            raise InvalidArgument.field(
                "params",
                f"{count} values given but the query's placeholders run from $1 to "
                f"${script.max_placeholder}",
            )
        for i, value in enumerate(params):
            problem = _bad_param(value, f"params[{i}]")
            if problem is not None:
                raise InvalidArgument.field(*problem)

    # -- workflows and logs --------------------------------------------------------

    def start_workflow(self, request: pb.StartWorkflowRequest) -> WorkflowRequest:
        """The workflow to start; the prompt is bounded as caller SQL is."""
        s = self._settings
        if not request.prompt.strip():
            raise InvalidArgument.field("prompt", "must not be empty")
        size = len(request.prompt.encode("utf-8", errors="surrogatepass"))
        if size > s.max_query_bytes:
            raise InvalidArgument.field(
                "prompt", f"is {size} bytes, over the limit of {s.max_query_bytes}"
            )
        if len(request.source_tables) > s.max_table_names:
            raise InvalidArgument.field(
                "source_tables",
                f"at most {s.max_table_names} tables, got {len(request.source_tables)}",
            )
        named = [(f"source_tables[{i}]", t) for i, t in enumerate(request.source_tables)]
        if request.target_table:
            named.append(("target_table", request.target_table))
        _parsed(named)
        key = request.idempotency_key
        if len(key) > MAX_IDEMPOTENCY_KEY_CHARS:
            raise InvalidArgument.field(
                "idempotency_key", f"must be at most {MAX_IDEMPOTENCY_KEY_CHARS} characters"
            )
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in key):
            raise InvalidArgument.field("idempotency_key", "must not contain control characters")
        return WorkflowRequest(
            request.prompt, tuple(request.source_tables), request.target_table, key
        )

    def get_logs(self, request: pb.GetLogsRequest) -> None:
        check_run_id(request.run_id)

    def watch_logs(self, request: pb.WatchLogsRequest) -> None:
        if request.start_index < 0:
            raise InvalidArgument.field("start_index", "must not be negative")
        check_run_id(request.run_id)


def _parsed(named: Sequence[tuple[str, str]]) -> list[TableName]:
    """Each ``(field, name)`` parsed; every malformed one is named in one error."""
    parsed: list[TableName] = []
    violations: list[FieldViolation] = []
    for field, name in named:
        try:
            parsed.append(parse_table_name(name))
        except InvalidTableName as exc:
            violations.append(FieldViolation(field, f"{clip(name)!r}: {exc}"))
    if violations:
        raise InvalidArgument.fields(violations)
    return parsed


def _refused(refusal: Refusal, statements: int) -> GatewayError:
    where = f" (statement {refusal.statement} of {statements})" if statements > 1 else ""
    if refusal.unsupported:
        return InvalidArgument.field(
            "query", f"{refusal.kind} is not supported through the gateway{where}"
        )
    description = f"{refusal.kind} is not allowed through the gateway{where}"
    return PermissionDenied(
        f"query: {description}",
        reason="STATEMENT_NOT_ALLOWED",
        metadata={"statement_kind": refusal.kind, "statement": str(refusal.statement)},
        violations=[FieldViolation("query", description)],
    )


def _bad_param(value: struct_pb2.Value, field: str) -> tuple[str, str] | None:
    """The first part of a parameter that cannot be sent as given: (its field path, why).

    A JSON number is a double: an integral one beyond 2^53 - 1 may already have been
    rounded on its way here (9007199254740993 arrives as ...992), so it is refused rather
    than sent as a different number.
    """
    kind = value.WhichOneof("kind")
    if kind == "string_value" and "\x00" in value.string_value:
        return field, "must not contain NUL characters"
    if kind == "number_value":
        number = value.number_value
        if number.is_integer() and abs(number) > MAX_SAFE_INTEGER:
            return field, (
                "is an integer beyond ±(2^53 - 1), which a JSON number cannot carry exactly; "
                'pass it as a string, e.g. "9007199254740993"'
            )
    if kind == "list_value":
        for j, item in enumerate(value.list_value.values):
            problem = _bad_param(item, f"{field}[{j}]")
            if problem is not None:
                return problem
    if kind == "struct_value":
        for key, item in value.struct_value.fields.items():
            if "\x00" in key:
                return field, "must not contain NUL characters"
            problem = _bad_param(item, f"{field}.{clip(key, 50)}")
            if problem is not None:
                return problem
    return None
