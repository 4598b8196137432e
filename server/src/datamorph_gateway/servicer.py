"""The DataMorphGateway service: checks each request, calls the layer that does the work.

Validation lives here so that every bad field is named the same way for
gRPC and REST callers, and nothing reaches the database before the whole
request has been checked.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import grpc
from google.protobuf import struct_pb2

from datamorph.gateway.v1 import gateway_pb2 as pb
from datamorph.gateway.v1 import gateway_pb2_grpc as pb_grpc
from datamorph_gateway import __version__
from datamorph_gateway.audit import audited
from datamorph_gateway.auth.authenticator import Authenticator, principal_key
from datamorph_gateway.auth.policy import Principal
from datamorph_gateway.callers import CallerLimits, caller_key
from datamorph_gateway.config import Settings
from datamorph_gateway.db import sqltext
from datamorph_gateway.db.catalog import READABLE_KINDS
from datamorph_gateway.db.connect import DatabaseLogin
from datamorph_gateway.db.database import Database
from datamorph_gateway.db.encoding import ColumnType, append_array_rows, append_object_rows
from datamorph_gateway.db.names import InvalidTableName, TableName, parse_table_name
from datamorph_gateway.db.query import MAX_SAFE_INTEGER, QueryResult
from datamorph_gateway.db.sqlpolicy import Refusal, SqlPolicy, first_write
from datamorph_gateway.errors import (
    FieldViolation,
    GatewayError,
    InvalidArgument,
    PermissionDenied,
    QueryError,
    Unavailable,
    clip,
)
from datamorph_gateway.identity import ClientIdentities
from datamorph_gateway.rpc import (
    Method,
    Req,
    Resp,
    cancel_scope,
    principal_var,
    rpc,
    rpc_stream,
    time_budget_s,
)
from datamorph_gateway.workflows import WorkflowRequest, WorkflowRunner

log = logging.getLogger(__name__)

SUCCESS = "success"


def _login() -> DatabaseLogin | None:
    """The calling principal's own database login, if the policy gives it one."""
    principal = principal_var.get()
    if not principal.database_user:
        return None
    return DatabaseLogin(
        principal.database_user, principal.database_secret, principal.database_iam_auth
    )


def _counted_per_caller(method: Method[Req, Resp]) -> Method[Req, Resp]:
    """Caller SQL: the call counts against MAX_CONCURRENT_QUERIES_PER_CALLER while it runs."""

    @functools.wraps(method)
    def wrapper(self: GatewayServicer, request: Req, context: grpc.ServicerContext) -> Resp:
        with self._callers.hold(self._caller_key(context)):
            return method(self, request, context)

    return wrapper


def _streamed_per_caller(
    method: Callable[[Any, Req, grpc.ServicerContext], Iterator[Resp]],
) -> Callable[[Any, Req, grpc.ServicerContext], Iterator[Resp]]:
    """The same for a stream: it counts until the last message is sent or the call ends."""

    @functools.wraps(method)
    def wrapper(
        self: GatewayServicer, request: Req, context: grpc.ServicerContext
    ) -> Iterator[Resp]:
        with self._callers.hold(self._caller_key(context)):
            yield from method(self, request, context)

    return wrapper


class GatewayServicer(pb_grpc.DataMorphGatewayServicer):
    """Maps each RPC onto the database layer or the workflow runner."""

    def __init__(
        self,
        settings: Settings,
        database: Database,
        workflows: WorkflowRunner,
        identities: ClientIdentities | None = None,
        authenticator: Authenticator | None = None,
    ) -> None:
        self._settings = settings
        self._db = database
        self._workflows = workflows
        # The caller's verified client certificate (mTLS), for the auth policy to name.
        self.identities = identities or ClientIdentities(None)
        self.auth = authenticator or Authenticator(settings, self.identities)
        self._policy = SqlPolicy(settings.sql_denied_functions.split(","))
        self._callers = CallerLimits(settings.max_concurrent_queries_per_caller)
        self.draining = False  # set by Gateway.stop: Health answers "draining"

    def authorize(self, rpc: str, context: grpc.ServicerContext) -> Principal:
        """Who calls, and whether it may call ``rpc`` (called by ``@rpc`` for every call)."""
        return self.auth.authorize(rpc, context)

    def _caller_key(self, context: grpc.ServicerContext) -> str:
        """Per-caller limits count a named principal, else the client's address."""
        return principal_key(principal_var.get()) or caller_key(
            context, self.identities.forwarded_for(context)
        )

    # -- tables ----------------------------------------------------------------

    def _table_names(self, names: Sequence[str]) -> list[TableName]:
        s = self._settings
        if not names:
            raise InvalidArgument.field("table_names", "must name at least one table")
        if len(names) > s.max_table_names:
            raise InvalidArgument.field(
                "table_names", f"at most {s.max_table_names} tables per request, got {len(names)}"
            )
        parsed: list[TableName] = []
        violations: list[FieldViolation] = []
        for i, name in enumerate(names):
            try:
                parsed.append(parse_table_name(name))
            except InvalidTableName as exc:
                violations.append(FieldViolation(f"table_names[{i}]", f"{clip(name)!r}: {exc}"))
        if violations:
            message = "; ".join(f"{v.field}: {v.description}" for v in violations)
            raise InvalidArgument(message, violations=violations)
        return parsed

    @rpc
    def GetSchemas(
        self, request: pb.GetSchemasRequest, context: grpc.ServicerContext
    ) -> pb.GetSchemasResponse:
        originals = list(request.table_names)
        names = self._table_names(originals)
        with cancel_scope(context, self._settings.statement_timeout_s) as scope:
            tables = self._db.get_schemas(
                names, originals, scope.timeout_s, scope=scope, login=_login()
            )
        response = pb.GetSchemasResponse(status=SUCCESS)
        for original, table in zip(originals, tables, strict=True):
            schema = response.schemas[original]
            schema.table_name = table.relation.name
            schema.schema = table.relation.schema
            schema.table_type = READABLE_KINDS[table.relation.kind]
            schema.primary_keys.extend(table.primary_keys)
            for col in table.columns:
                column = schema.columns.add(
                    column_name=col["column_name"],
                    data_type=col["data_type"],
                    is_nullable=col["is_nullable"],
                    ordinal_position=col["ordinal_position"],
                    udt_name=col["udt_name"],
                    type=col["type"],
                )
                for key in (
                    "column_default",
                    "character_maximum_length",
                    "numeric_precision",
                    "numeric_scale",
                ):
                    _set_value(getattr(column, key), col[key])
            for fk in table.foreign_keys:
                schema.foreign_keys.add(**fk)
        return response

    @rpc
    def GetData(
        self, request: pb.GetDataRequest, context: grpc.ServicerContext
    ) -> pb.GetDataResponse:
        s = self._settings
        originals = list(request.table_names)
        names = self._table_names(originals)
        limit = s.default_sample_limit
        if request.HasField("limit"):
            limit = request.limit
            if not 0 < limit <= s.max_sample_limit:
                raise InvalidArgument.field(
                    "limit", f"must be between 1 and {s.max_sample_limit}, got {limit}"
                )
        with cancel_scope(context, s.statement_timeout_s) as scope:
            samples = self._db.get_data(
                names, originals, limit, scope.timeout_s, scope=scope, login=_login()
            )
        response = pb.GetDataResponse(status=SUCCESS)
        for original, sample in zip(originals, samples, strict=True):
            append_object_rows(response.data[original].values, sample.keys, sample.rows)
            add_column = response.columns[original].values.add
            for key, column in zip(sample.keys, sample.columns, strict=True):
                fields = add_column().struct_value.fields
                fields["name"].string_value = key
                fields["type"].string_value = column.name
        return response

    # -- SQL ---------------------------------------------------------------------

    @rpc
    @_counted_per_caller
    def ExecuteQuery(
        self, request: pb.ExecuteQueryRequest, context: grpc.ServicerContext
    ) -> pb.ExecuteQueryResponse:
        s = self._settings
        query = request.query
        # A principal allowed only "ExecuteQuery:read" reads, whatever the request says.
        reader = principal_var.get().read_only_queries
        read_only = request.read_only or reader
        script = self._check_query(request.query, request.params, read_only=read_only)
        if reader:
            write = first_write(script)
            if write is not None:
                raise PermissionDenied(
                    f"query: principal {principal_var.get().name!r} may only read "
                    f"(ExecuteQuery:read), and {write} writes",
                    reason="WRITES_NOT_ALLOWED",
                )
        max_rows = s.max_result_rows
        if request.HasField("max_rows"):
            max_rows = request.max_rows
            if not 0 < max_rows <= s.max_result_rows:
                raise InvalidArgument.field(
                    "max_rows", f"must be between 1 and {s.max_result_rows}, got {max_rows}"
                )
        params = [_from_value(v) for v in request.params]
        with (
            cancel_scope(context, s.statement_timeout_s) as scope,
            audited(
                context,
                forwarded_for=self.identities.forwarded_for(context),
                query=query,
                param_count=len(params),
                read_only=read_only,
            ) as tally,
        ):
            result = self._db.execute(
                script,
                params,
                read_only=read_only,
                max_rows=max_rows,
                timeout_s=scope.timeout_s,
                scope=scope,
                login=_login(),
            )
            tally.rows = len(result.rows)
        return self._query_response(result, request.row_format)

    def _check_query(
        self, query: str, params: Sequence[struct_pb2.Value], *, read_only: bool
    ) -> sqltext.Script:
        """Parse the caller's SQL with PostgreSQL's parser and refuse what the policy refuses."""
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
        if read_only and len(script.statements) > 1:
            raise InvalidArgument.field("query", "a read_only query must be a single statement")
        refusal = self._policy.check(script, read_only=read_only)
        if refusal is not None:
            raise _refused(refusal, len(script.statements))
        self._check_params(script, params)
        return script

    def _check_params(self, script: sqltext.Script, params: Sequence[struct_pb2.Value]) -> None:
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

    @rpc_stream
    @_streamed_per_caller
    def StreamQuery(
        self, request: pb.StreamQueryRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.StreamQueryResponse]:
        s = self._settings
        script = self._check_query(request.query, request.params, read_only=True)
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
        params = [_from_value(v) for v in request.params]
        with (
            cancel_scope(context, s.stream_timeout_s) as scope,
            audited(
                context,
                forwarded_for=self.identities.forwarded_for(context),
                query=request.query,
                param_count=len(params),
                read_only=True,
            ) as tally,
        ):
            batches = self._db.stream(
                script.statements[0],
                params,
                batch_rows=batch_rows,
                timeout_s=scope.timeout_s,
                scope=scope,
                login=_login(),
            )
            previous: pb.StreamQueryResponse | None = None
            for batch in batches:
                response = pb.StreamQueryResponse(status=SUCCESS)
                if previous is None:
                    _add_columns(response.columns, batch.names, batch.columns, batch.keys)
                _append_rows(response.rows, batch.keys, batch.rows, request.row_format)
                tally.rows += len(batch.rows)
                response.rows_sent = tally.rows
                # Held back one step, so that the last message can say done.
                if previous is not None:
                    yield previous
                previous = response
            if previous is not None:
                previous.done = True
                yield previous

    def _query_response(self, result: QueryResult, row_format: int) -> pb.ExecuteQueryResponse:
        response = pb.ExecuteQueryResponse(
            status=SUCCESS,
            row_count=len(result.rows),
            rows_affected=float(result.rows_affected),
            command=result.command,
            truncated=result.truncated,
        )
        _add_columns(response.columns, result.names, result.columns, result.keys)
        _append_rows(response.rows, result.keys, result.rows, row_format)
        return response

    # -- workflows and logs --------------------------------------------------------

    @rpc
    def StartWorkflow(
        self, request: pb.StartWorkflowRequest, context: grpc.ServicerContext
    ) -> pb.StartWorkflowResponse:
        remaining = context.time_remaining()
        result = self._workflows.start(
            WorkflowRequest(
                request.prompt,
                tuple(request.source_tables),
                request.target_table,
                request.idempotency_key,
            ),
            timeout_s=None if remaining is None else float(remaining),
            on_run_id=lambda run_id: context.send_initial_metadata(
                (("x-datamorph-run-id", run_id),)
            ),
            should_stop=lambda: not context.is_active(),
        )
        response = pb.StartWorkflowResponse(
            status=SUCCESS, run_id=result.run_id, message=result.message
        )
        response.details.update(result.details)
        return response

    @rpc
    def GetLogs(
        self, request: pb.GetLogsRequest, context: grpc.ServicerContext
    ) -> pb.GetLogsResponse:
        run = self._workflows.get_logs(request.run_id)
        response = pb.GetLogsResponse(
            status=SUCCESS,
            run_id=run.run_id,
            log_count=len(run.logs),
            created_at=run.created_at,
            updated_at=run.updated_at,
        )
        for entry in run.logs:
            _log_entry(response.logs.add(), entry)
        return response

    @rpc_stream
    def WatchLogs(
        self, request: pb.WatchLogsRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.WatchLogsResponse]:
        if request.start_index < 0:
            raise InvalidArgument.field("start_index", "must not be negative")
        events = self._workflows.watch(
            request.run_id,
            timeout_s=time_budget_s(context, self._settings.log_watch_max_s),
            start=request.start_index,
            should_stop=lambda: not context.is_active(),
        )
        for event in events:
            response = pb.WatchLogsResponse(run_id=request.run_id, index=event.index)
            _log_entry(response.entry, event.entry)
            yield response

    # -- health ------------------------------------------------------------------------

    def check_health(self) -> pb.HealthResponse:
        """Check every dependency within the configured timeout.

        The database is checked on a connection of its own, so a pool that slow
        callers have filled cannot fail it; the pool is a check of its own, whose
        "degraded" leaves the gateway healthy.
        """
        response = pb.HealthResponse(status="healthy", version=__version__)
        if self.draining:
            response.status = "unhealthy"
            response.checks["gateway"].status = "unhealthy"
            response.checks["gateway"].message = "draining: this process is shutting down"
        start = time.perf_counter()
        check = response.checks["database"]
        try:
            self._db.check(self._settings.health_check_timeout_s)
            check.status = "healthy"
        except GatewayError as exc:
            check.status = "unhealthy"
            check.message = exc.message
            response.status = "unhealthy"
        check.latency_ms = (time.perf_counter() - start) * 1000
        _pool_check(response.checks["pool"], self._db.pool.stats())
        return response

    @rpc
    def Health(self, request: pb.HealthRequest, context: grpc.ServicerContext) -> pb.HealthResponse:
        response = self.check_health()
        if response.status != "healthy":
            failing = ", ".join(k for k, v in response.checks.items() if v.status == "unhealthy")
            raise Unavailable(f"unhealthy: {failing}", reason="UNHEALTHY", extra_details=[response])
        return response


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


def _pool_check(check: pb.HealthCheck, stats: Mapping[str, int]) -> None:
    """Healthy, or "degraded" while every connection (or caller SQL's share) is busy."""
    check.status = "healthy"
    if stats["busy"] >= stats["max"]:
        check.message = f"{stats['busy']} of {stats['max']} connections busy"
    elif stats["shared_busy"] >= stats["shared_max"]:
        check.message = (
            f"{stats['shared_busy']} of {stats['shared_max']} connections for caller SQL busy "
            f"({stats['reserved']} kept for reads)"
        )
    else:
        return
    check.status = "degraded"
    if stats["shared_waiting"]:
        check.message += f"; {stats['shared_waiting']} queries waiting"


def _add_columns(
    dest: Any, names: Sequence[str], columns: Sequence[ColumnType], keys: Sequence[str]
) -> None:
    for name, column, key in zip(names, columns, keys, strict=True):
        dest.add(name=name, type=column.name, key=key)


def _append_rows(
    dest: Any, keys: Sequence[str], rows: Sequence[Sequence[Any]], row_format: int
) -> None:
    if row_format == pb.ROW_FORMAT_ARRAY:
        append_array_rows(dest, rows)
    else:
        append_object_rows(dest, keys, rows)


def _log_entry(target: pb.LogEntry, entry: dict[str, Any]) -> None:
    target.timestamp = str(entry.get("timestamp", ""))
    target.type = str(entry.get("type", ""))
    target.title = str(entry.get("title", ""))
    target.description = str(entry.get("description", ""))
    metadata = entry.get("metadata")
    if isinstance(metadata, dict):
        target.metadata.update(metadata)


def _set_value(target: struct_pb2.Value, value: Any) -> None:
    if value is None:
        target.null_value = struct_pb2.NULL_VALUE
    elif isinstance(value, str):
        target.string_value = value
    else:
        target.number_value = value


def _from_value(value: struct_pb2.Value) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "struct_value":
        return {k: _from_value(v) for k, v in value.struct_value.fields.items()}
    if kind == "list_value":
        return [_from_value(v) for v in value.list_value.values]
    if kind in (None, "null_value"):
        return None
    return getattr(value, kind)


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
