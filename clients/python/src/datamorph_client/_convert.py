"""The generated messages, turned into ``models``: the one module that reads protobuf."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from google.protobuf import struct_pb2

from datamorph.gateway.v1 import gateway_pb2 as pb
from datamorph_client.models import (
    ArrayRow,
    Column,
    ColumnSchema,
    ForeignKey,
    HealthCheck,
    HealthReport,
    JsonValue,
    LogEntry,
    LogEvent,
    QueryResult,
    Row,
    RowBatch,
    RunLogs,
    Sample,
    TableSchema,
    Value,
    WorkflowResult,
)
from datamorph_client.values import Decoder, decoder, encode_param, from_json

__all__ = [
    "BatchReader",
    "array_rows",
    "columns",
    "health_report",
    "log_event",
    "object_rows",
    "params",
    "plain",
    "query_result",
    "run_logs",
    "run_logs_from_json",
    "sample",
    "samples",
    "struct",
    "table_schema",
    "table_schemas",
    "workflow_result",
]


def plain(value: struct_pb2.Value) -> Any:
    """A ``Value`` as the JSON value it holds; numbers stay floats (protobuf's doubles)."""
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return value.string_value
    if kind == "number_value":
        return value.number_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return {k: plain(v) for k, v in value.struct_value.fields.items()}
    if kind == "list_value":
        return [plain(v) for v in value.list_value.values]
    return None


def struct(message: struct_pb2.Struct) -> dict[str, JsonValue]:
    """A ``Struct`` as a dict, whole numbers as ints (as ``json.loads`` would read them)."""
    return {k: from_json(plain(v)) for k, v in message.fields.items()}


def _optional_int(value: struct_pb2.Value) -> int | None:
    v = plain(value)
    return None if v is None else int(v)


def columns(message: Iterable[pb.Column]) -> list[Column]:
    return [Column(c.name, c.type, c.key) for c in message]


def object_rows(values: Iterable[struct_pb2.Value], cols: Sequence[Column]) -> list[Row]:
    """Rows as objects keyed by ``Column.key``, each value decoded by its column's type."""
    decoders = [(c.key, decoder(c.type)) for c in cols]
    out: list[Row] = []
    for value in values:
        fields = value.struct_value.fields
        out.append({key: _decoded(fields[key], decode) for key, decode in decoders})
    return out


def array_rows(values: Iterable[struct_pb2.Value], cols: Sequence[Column]) -> list[ArrayRow]:
    """Rows as arrays in column order, each value decoded by its column's type."""
    decoders = [decoder(c.type) for c in cols]
    return [
        [_decoded(item, decode) for item, decode in zip(v.list_value.values, decoders, strict=True)]
        for v in values
    ]


def _decoded(value: struct_pb2.Value, decode: Decoder) -> Value:
    v = plain(value)
    return None if v is None else decode(v)


def query_result(
    response: pb.ExecuteQueryResponse, *, arrays: bool
) -> QueryResult[Row] | QueryResult[ArrayRow]:
    """ExecuteQuery's answer, its rows as arrays or objects, as the request asked."""
    cols = columns(response.columns)
    r = response
    counts = (r.row_count, int(r.rows_affected), r.command, r.truncated)
    if arrays:
        return QueryResult(cols, array_rows(r.rows, cols), *counts)
    return QueryResult(cols, object_rows(r.rows, cols), *counts)


class BatchReader:
    """A stream's messages as ``RowBatch``es: the first one's columns go on every batch."""

    def __init__(self, *, arrays: bool) -> None:
        self._arrays = arrays
        self._columns: list[Column] = []

    def batch(self, response: pb.StreamQueryResponse) -> RowBatch[Row] | RowBatch[ArrayRow]:
        if response.columns:
            self._columns = columns(response.columns)
        cols, sent = self._columns, int(response.rows_sent)
        if self._arrays:
            return RowBatch(cols, array_rows(response.rows, cols), sent)
        return RowBatch(cols, object_rows(response.rows, cols), sent)


def _in_order(asked: Sequence[str], answered: Iterable[str]) -> list[str]:
    """The answer's keys in the order they were asked for (a protobuf map has none)."""
    found = set(answered)
    return [name for name in dict.fromkeys(asked) if name in found] + sorted(
        found.difference(asked)
    )


def table_schemas(response: pb.GetSchemasResponse, asked: Sequence[str]) -> dict[str, TableSchema]:
    return {
        name: table_schema(response.schemas[name]) for name in _in_order(asked, response.schemas)
    }


def samples(response: pb.GetDataResponse, asked: Sequence[str]) -> dict[str, Sample]:
    return {name: sample(name, response) for name in _in_order(asked, response.data)}


def sample(name: str, response: pb.GetDataResponse) -> Sample:
    described = [plain(c) for c in response.columns[name].values]
    cols = [Column(c["name"], c["type"], c["name"]) for c in described]
    return Sample(columns=cols, rows=object_rows(response.data[name].values, cols))


def table_schema(message: pb.TableSchema) -> TableSchema:
    return TableSchema(
        name=message.table_name,
        schema=message.schema,
        table_type=message.table_type,
        columns=[
            ColumnSchema(
                name=c.column_name,
                type=c.type,
                data_type=c.data_type,
                udt_name=c.udt_name,
                nullable=c.is_nullable == "YES",
                default=plain(c.column_default),
                ordinal_position=c.ordinal_position,
                character_maximum_length=_optional_int(c.character_maximum_length),
                numeric_precision=_optional_int(c.numeric_precision),
                numeric_scale=_optional_int(c.numeric_scale),
            )
            for c in message.columns
        ],
        primary_keys=list(message.primary_keys),
        foreign_keys=[
            ForeignKey(
                column_name=fk.column_name,
                foreign_table_schema=fk.foreign_table_schema,
                foreign_table_name=fk.foreign_table_name,
                foreign_column_name=fk.foreign_column_name,
                constraint_name=fk.constraint_name,
            )
            for fk in message.foreign_keys
        ],
    )


def _log_entry(message: pb.LogEntry) -> LogEntry:
    return LogEntry(
        timestamp=message.timestamp,
        type=message.type,
        title=message.title,
        description=message.description,
        metadata=struct(message.metadata),
    )


def run_logs(message: pb.GetLogsResponse) -> RunLogs:
    return RunLogs(
        run_id=message.run_id,
        log_count=message.log_count,
        logs=[_log_entry(e) for e in message.logs],
        created_at=message.created_at,
        updated_at=message.updated_at,
    )


def run_logs_from_json(body: dict[str, Any]) -> RunLogs:
    """The run log a workflow timeout carries in its details (a Struct, not a message)."""
    return RunLogs(
        run_id=str(body.get("run_id", "")),
        log_count=int(body.get("log_count", 0)),
        logs=[
            LogEntry(
                timestamp=str(e.get("timestamp", "")),
                type=str(e.get("type", "")),
                title=str(e.get("title", "")),
                description=str(e.get("description", "")),
                metadata=_json_object(e.get("metadata")),
            )
            for e in body.get("logs") or ()
        ],
        created_at=str(body.get("created_at", "")),
        updated_at=str(body.get("updated_at", "")),
        truncated=bool(body.get("logs_truncated", False)),
    )


def _json_object(value: JsonValue) -> dict[str, JsonValue]:
    return value if isinstance(value, dict) else {}


def log_event(message: pb.WatchLogsResponse) -> LogEvent:
    return LogEvent(run_id=message.run_id, index=message.index, entry=_log_entry(message.entry))


def workflow_result(message: pb.StartWorkflowResponse) -> WorkflowResult:
    return WorkflowResult(
        run_id=message.run_id, message=message.message, details=struct(message.details)
    )


def health_report(message: pb.HealthResponse) -> HealthReport:
    return HealthReport(
        status=message.status,
        checks={
            name: HealthCheck(c.status, c.latency_ms, c.message)
            for name, c in message.checks.items()
        },
        version=message.version,
    )


def params(values: Iterable[Any]) -> list[struct_pb2.Value]:
    """Query parameters as ``Value`` messages, encoded by ``values.encode_param``."""
    wrapper = struct_pb2.ListValue()
    wrapper.extend(encode_param(v) for v in values)
    return list(wrapper.values)
