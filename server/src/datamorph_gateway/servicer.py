"""The DataMorphGateway service: checks each request, calls the layer that does the work.

Validation lives here so that every bad field is named the same way for
gRPC and REST callers, and nothing reaches the database before the whole
request has been checked.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from typing import Any

import grpc
from google.protobuf import struct_pb2

from datamorph.gateway.v1 import gateway_pb2 as pb
from datamorph.gateway.v1 import gateway_pb2_grpc as pb_grpc
from datamorph_gateway import __version__
from datamorph_gateway.audit import audited
from datamorph_gateway.config import Settings
from datamorph_gateway.db import sqltext
from datamorph_gateway.db.catalog import READABLE_KINDS
from datamorph_gateway.db.database import Database
from datamorph_gateway.db.encoding import ColumnType, append_array_rows, append_object_rows
from datamorph_gateway.db.names import InvalidTableName, TableName, parse_table_name
from datamorph_gateway.db.query import QueryResult, wants_cursor
from datamorph_gateway.errors import (
    FieldViolation,
    GatewayError,
    InvalidArgument,
    Unavailable,
)
from datamorph_gateway.rpc import cancel_scope, rpc, rpc_stream, time_budget_s
from datamorph_gateway.workflows import WorkflowRequest, WorkflowRunner

log = logging.getLogger(__name__)

SUCCESS = "success"
# Statements that would end the request's transaction early and so break
# "any error rolls the whole request back".
_TRANSACTION_CONTROL = frozenset({"BEGIN", "START", "COMMIT", "END", "ABORT", "ROLLBACK"})


class GatewayServicer(pb_grpc.DataMorphGatewayServicer):
    """Maps each RPC onto the database layer or the workflow runner."""

    def __init__(self, settings: Settings, database: Database, workflows: WorkflowRunner) -> None:
        self._settings = settings
        self._db = database
        self._workflows = workflows

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
                violations.append(FieldViolation(f"table_names[{i}]", f"{name!r}: {exc}"))
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
            tables = self._db.get_schemas(names, originals, scope.timeout_s, scope=scope)
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
            samples = self._db.get_data(names, originals, limit, scope.timeout_s, scope=scope)
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
    def ExecuteQuery(
        self, request: pb.ExecuteQueryRequest, context: grpc.ServicerContext
    ) -> pb.ExecuteQueryResponse:
        s = self._settings
        query = request.query
        scanned = self._check_query(request.query, request.params)
        if request.read_only and scanned.statements > 1:
            raise InvalidArgument.field("query", "a read_only query must be a single statement")
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
                context, query=query, param_count=len(params), read_only=request.read_only
            ) as tally,
        ):
            result = self._db.execute(
                query,
                params,
                read_only=request.read_only,
                max_rows=max_rows,
                timeout_s=scope.timeout_s,
                use_cursor=wants_cursor(scanned),
                scope=scope,
            )
            tally.rows = len(result.rows)
        return self._query_response(result, request.row_format)

    def _check_query(self, query: str, params: Sequence[struct_pb2.Value]) -> sqltext.SqlText:
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
        scanned = sqltext.scan(query)
        if scanned.statements == 0:
            raise InvalidArgument.field("query", "holds no SQL statement")
        control = _TRANSACTION_CONTROL.intersection(scanned.keywords)
        if control:
            raise InvalidArgument.field(
                "query",
                f"transaction control ({', '.join(sorted(control))}) is not allowed: "
                "each request runs in one transaction that the gateway commits or rolls back",
            )
        count = len(params)
        if count > s.max_query_params:
            raise InvalidArgument.field(
                "params", f"at most {s.max_query_params} values, got {count}"
            )
        if count and not scanned.placeholders:
            raise InvalidArgument.field(
                "params", f"{count} values given but the query has no $n placeholders"
            )
        if count and (scanned.max_placeholder != count or 0 in scanned.placeholders):
            raise InvalidArgument.field(
                "params",
                f"{count} values given but the query's placeholders run from $1 to "
                f"${scanned.max_placeholder}",
            )
        for i, value in enumerate(params):
            if _has_nul(value):
                raise InvalidArgument.field(f"params[{i}]", "must not contain NUL characters")
        return scanned

    @rpc_stream
    def StreamQuery(
        self, request: pb.StreamQueryRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.StreamQueryResponse]:
        s = self._settings
        scanned = self._check_query(request.query, request.params)
        if not wants_cursor(scanned):
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
            audited(context, query=request.query, param_count=len(params), read_only=True) as tally,
        ):
            batches = self._db.stream(
                request.query, params, batch_rows=batch_rows, timeout_s=scope.timeout_s, scope=scope
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
        """Check every dependency within the configured timeout."""
        response = pb.HealthResponse(status="healthy", version=__version__)
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
        return response

    @rpc
    def Health(self, request: pb.HealthRequest, context: grpc.ServicerContext) -> pb.HealthResponse:
        response = self.check_health()
        if response.status != "healthy":
            failing = ", ".join(k for k, v in response.checks.items() if v.status != "healthy")
            raise Unavailable(f"unhealthy: {failing}", reason="UNHEALTHY", extra_details=[response])
        return response


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


def _has_nul(value: struct_pb2.Value) -> bool:
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return "\x00" in value.string_value
    if kind == "list_value":
        return any(_has_nul(v) for v in value.list_value.values)
    if kind == "struct_value":
        return any("\x00" in k or _has_nul(v) for k, v in value.struct_value.fields.items())
    return False
