"""The calls' requests, built once for both clients from the caller's plain arguments."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from datamorph.gateway.v1 import gateway_pb2 as pb
from datamorph_client import _convert
from datamorph_client._base import RowFormat, row_format

__all__ = [
    "execute_query",
    "get_data",
    "get_logs",
    "get_schemas",
    "start_workflow",
    "stream_query",
    "watch_logs",
]


def get_schemas(table_names: Sequence[str]) -> pb.GetSchemasRequest:
    return pb.GetSchemasRequest(table_names=table_names)


def get_data(table_names: Sequence[str], limit: int | None) -> pb.GetDataRequest:
    request = pb.GetDataRequest(table_names=table_names)
    if limit is not None:
        request.limit = limit
    return request


def execute_query(
    query: str,
    params: Sequence[Any],
    *,
    read_only: bool,
    max_rows: int | None,
    rows_as: RowFormat,
) -> pb.ExecuteQueryRequest:
    request = pb.ExecuteQueryRequest(
        query=query,
        params=_convert.params(params),
        read_only=read_only,
        row_format=row_format(rows_as),
    )
    if max_rows is not None:
        request.max_rows = max_rows
    return request


def stream_query(
    query: str, params: Sequence[Any], *, batch_rows: int | None, rows_as: RowFormat
) -> pb.StreamQueryRequest:
    request = pb.StreamQueryRequest(
        query=query, params=_convert.params(params), row_format=row_format(rows_as)
    )
    if batch_rows is not None:
        request.batch_rows = batch_rows
    return request


def start_workflow(
    prompt: str, source_tables: Sequence[str], target_table: str, idempotency_key: str
) -> pb.StartWorkflowRequest:
    return pb.StartWorkflowRequest(
        prompt=prompt,
        source_tables=source_tables,
        target_table=target_table,
        idempotency_key=idempotency_key,
    )


def get_logs(run_id: str) -> pb.GetLogsRequest:
    return pb.GetLogsRequest(run_id=run_id)


def watch_logs(run_id: str, start_index: int) -> pb.WatchLogsRequest:
    return pb.WatchLogsRequest(run_id=run_id, start_index=start_index)
