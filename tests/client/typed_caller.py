"""A caller of both clients, written as a typed Lambda would be.

Every answer is bound to a plain name and its type asserted (``typing.assert_type``, which
mypy checks exactly and which does nothing at run time), so ``mypy --strict
--disallow-any-expr`` passes on this file only while no answer, nor anything read from
one, is ``Any``. (Annotated assignments would not do: mypy lets ``x: int = <Any>`` pass.)
test_typing.py runs mypy on it, and runs it against the gateway, so the types asserted
here are the types the calls return.
"""

from __future__ import annotations

import uuid
from collections.abc import Generator
from decimal import Decimal
from typing import assert_type

from datamorph_client import (
    ArrayRow,
    AsyncWorkflowCall,
    Column,
    ColumnSchema,
    ErrorDetail,
    FieldViolation,
    ForeignKey,
    GatewayClient,
    GatewayError,
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
    WorkflowCall,
    WorkflowResult,
)
from datamorph_client.aio import AsyncGatewayClient

QUERY = "SELECT 9007199254740993::int8 AS big, 1.10::numeric AS exact, 'x' AS label"


def _describe(schema: TableSchema) -> list[str]:
    column = schema.columns[0]
    assert_type(column, ColumnSchema)
    nullable = column.nullable
    assert_type(nullable, bool)
    default = column.default
    assert_type(default, str | None)
    length = column.character_maximum_length
    assert_type(length, int | None)
    keys = schema.primary_keys
    assert_type(keys, list[str])
    foreign = schema.foreign_keys
    assert_type(foreign, list[ForeignKey])
    return [column.name, str(nullable), str(default), str(length), *keys, *map(str, foreign)]


def _big(row: Row) -> int:
    big = row["big"]
    assert_type(big, Value)
    assert isinstance(big, int)
    exact = row["exact"]
    assert_type(exact, Value)
    assert isinstance(exact, Decimal)
    return big


def _error(error: GatewayError) -> tuple[str, str, str, int, str | None, str | None]:
    violations = error.violations
    assert_type(violations, tuple[FieldViolation, ...])
    details = error.details
    assert_type(details, tuple[ErrorDetail, ...])
    retry = error.retry_delay_s
    assert_type(retry, float | None)
    metadata = error.metadata
    assert_type(metadata, dict[str, str])
    assert retry is None or retry > 0
    assert "request_id" in metadata
    return (
        error.code_name,
        error.message,
        error.reason,
        error.http_status,
        error.run_id,
        error.request_id,
    )


def use_sync(client: GatewayClient, target_table: str) -> int:
    """Every method of ``GatewayClient``; the int8 it read back."""
    report = client.health()
    assert_type(report, HealthReport)
    check = report.checks["database"]
    assert_type(check, HealthCheck)
    latency = check.latency_ms
    assert_type(latency, float)
    healthy = report.healthy
    assert_type(healthy, bool)
    assert healthy
    assert latency >= 0
    schemas = client.get_schemas(["orders"])
    assert_type(schemas, dict[str, TableSchema])
    assert _describe(schemas["orders"])
    samples = client.get_data(["customers"], limit=2)
    assert_type(samples, dict[str, Sample])
    sampled = samples["customers"].rows
    assert_type(sampled, list[Row])
    assert len(sampled) == 2
    result = client.execute_query(QUERY, read_only=True)
    assert_type(result, QueryResult[Row])
    columns = result.columns
    assert_type(columns, list[Column])
    assert [c.type for c in columns] == ["int8", "numeric", "text"]
    arrays = client.execute_query(QUERY, row_format="array")
    assert_type(arrays, QueryResult[ArrayRow])
    first = arrays.rows[0]
    assert_type(first, ArrayRow)
    assert first[2] == "x"
    stream = client.stream_query(QUERY, batch_rows=1)
    assert_type(stream, Generator[RowBatch[Row], None, None])
    streamed = [row for batch in stream for row in batch.rows]
    assert_type(streamed, list[Row])
    assert streamed == result.rows
    run = client.start_workflow("SELECT 1 AS one", target_table=target_table)
    assert_type(run, WorkflowResult)
    details = run.details
    assert_type(details, dict[str, JsonValue])
    assert details["row_count"] == 1
    call = client.begin_workflow("SELECT 2 AS two", target_table=target_table + "_b")
    assert_type(call, WorkflowCall)
    run_id = call.run_id()
    assert_type(run_id, str | None)
    assert run_id is not None
    events = list(client.watch_logs(run_id))
    assert_type(events, list[LogEvent])
    assert call.result().run_id == run_id
    logs = client.get_logs(run_id)
    assert_type(logs, RunLogs)
    entries = logs.logs
    assert_type(entries, list[LogEntry])
    metadata = entries[0].metadata
    assert_type(metadata, dict[str, JsonValue])
    assert isinstance(metadata, dict)
    assert [e.entry for e in events] == entries
    failure: GatewayError | None = None
    try:
        client.get_logs("20200101_000000_00000000")
    except GatewayError as error:
        failure = error
    assert failure is not None
    assert _error(failure)[3] == 404
    return _big(result.rows[0])


async def use_async(client: AsyncGatewayClient) -> int:
    """Every method of ``AsyncGatewayClient``; the int8 it read back."""
    target = f"typed_async_{uuid.uuid4().hex[:8]}"
    report = await client.health()
    assert_type(report, HealthReport)
    assert report.healthy
    schemas = await client.get_schemas(["orders"])
    assert_type(schemas, dict[str, TableSchema])
    assert _describe(schemas["orders"])
    samples = await client.get_data(["customers"], limit=1)
    assert_type(samples, dict[str, Sample])
    assert len(samples["customers"].rows) == 1
    result = await client.execute_query(QUERY)
    assert_type(result, QueryResult[Row])
    arrays = await client.execute_query(QUERY, row_format="array")
    assert_type(arrays, QueryResult[ArrayRow])
    assert len(arrays.rows[0]) == 3
    batches = [batch async for batch in client.stream_query(QUERY, row_format="array")]
    assert_type(batches, list[RowBatch[ArrayRow]])
    assert batches[-1].rows_sent == 1
    run = await client.start_workflow("SELECT 1 AS one", target_table=target)
    assert_type(run, WorkflowResult)
    call = client.begin_workflow("SELECT 2 AS two", target_table=target + "_b")
    assert_type(call, AsyncWorkflowCall)
    run_id = await call.run_id()
    assert_type(run_id, str | None)
    assert run_id is not None
    events = [event async for event in client.watch_logs(run_id)]
    assert_type(events, list[LogEvent])
    finished = await call.result()
    assert_type(finished, WorkflowResult)
    logs = await client.get_logs(finished.run_id)
    assert_type(logs, RunLogs)
    assert [e.entry for e in events] == logs.logs
    assert run.run_id != finished.run_id
    failure: GatewayError | None = None
    try:
        await client.get_schemas(["no_such_table_anywhere"])
    except GatewayError as error:
        failure = error
    assert failure is not None
    assert _error(failure)[0] == "NOT_FOUND"
    return _big(result.rows[0])
