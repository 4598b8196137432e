"""``AsyncGatewayClient``: ``GatewayClient``'s calls for asyncio callers, on ``grpc.aio``.

The same arguments, methods and answers as ``GatewayClient``, awaited::

    async with AsyncGatewayClient("gateway.internal:50051") as client:
        schemas = await client.get_schemas(["orders"])
        async for batch in client.stream_query("SELECT * FROM orders"):
            ...

Make it inside the event loop that uses it (grpc.aio channels belong to one loop). A
bearer-token callable and the AWS IAM token source are called on the loop: both answer
from memory but for their first call and a renewal every few minutes.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from typing import Any, Literal, overload

import grpc
import grpc.aio

from datamorph.gateway.v1 import gateway_pb2 as pb
from datamorph_client import _convert, _requests
from datamorph_client._base import WORKFLOW_TIMEOUT_S, ClientBase, RowFormat
from datamorph_client.calls import AsyncWorkflowCall
from datamorph_client.errors import GatewayError, from_rpc_error
from datamorph_client.models import (
    ArrayRow,
    HealthReport,
    LogEvent,
    QueryResult,
    Row,
    RowBatch,
    RunLogs,
    Sample,
    TableSchema,
    WorkflowResult,
)

__all__ = ["AsyncGatewayClient"]


class AsyncGatewayClient(ClientBase):
    """Typed asyncio calls to a DataMorph Gateway; arguments as ``GatewayClient``'s."""

    def _open(
        self,
        address: str,
        credentials: grpc.ChannelCredentials | None,
        options: list[tuple[str, int]],
    ) -> grpc.aio.Channel:
        if credentials is not None:
            return grpc.aio.secure_channel(address, credentials, options=options)
        return grpc.aio.insecure_channel(address, options=options)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncGatewayClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _call(
        self,
        method: Callable[..., Awaitable[Any]],
        request: object,
        timeout_s: float | None,
        fallback_s: float | None = None,
    ) -> Any:
        try:
            return await method(request, **self._options(timeout_s, fallback_s))
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    async def _stream(
        self,
        method: Callable[..., Any],
        request: object,
        timeout_s: float | None,
        fallback_s: float | None = None,
    ) -> AsyncGenerator[Any, None]:
        """A server stream's messages; it is cancelled when the caller stops reading."""
        call = method(request, **self._options(timeout_s, fallback_s))
        try:
            async for response in call:
                yield response
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        finally:
            call.cancel()

    # -- RPCs ----------------------------------------------------------------------------

    async def get_schemas(
        self, table_names: Sequence[str], *, timeout_s: float | None = None
    ) -> dict[str, TableSchema]:
        """Each table's columns and keys, keyed by the name as given."""
        request = _requests.get_schemas(table_names)
        response = await self._call(self._stub.GetSchemas, request, timeout_s)
        return _convert.table_schemas(response, table_names)

    async def get_data(
        self,
        table_names: Sequence[str],
        *,
        limit: int | None = None,
        timeout_s: float | None = None,
    ) -> dict[str, Sample]:
        """A random sample of each table's rows (10 unless ``limit``), keyed by name as given."""
        request = _requests.get_data(table_names, limit)
        response = await self._call(self._stub.GetData, request, timeout_s)
        return _convert.samples(response, table_names)

    @overload
    async def execute_query(
        self,
        query: str,
        params: Sequence[Any] = (),
        *,
        read_only: bool = False,
        max_rows: int | None = None,
        row_format: Literal["object"] = "object",
        timeout_s: float | None = None,
    ) -> QueryResult[Row]: ...
    @overload
    async def execute_query(
        self,
        query: str,
        params: Sequence[Any] = (),
        *,
        read_only: bool = False,
        max_rows: int | None = None,
        row_format: Literal["array"],
        timeout_s: float | None = None,
    ) -> QueryResult[ArrayRow]: ...
    async def execute_query(
        self,
        query: str,
        params: Sequence[Any] = (),
        *,
        read_only: bool = False,
        max_rows: int | None = None,
        row_format: RowFormat = "object",
        timeout_s: float | None = None,
    ) -> QueryResult[Row] | QueryResult[ArrayRow]:
        """Run SQL in one transaction; ``$1``, ``$2``... take ``params``."""
        request = _requests.execute_query(
            query, params, read_only=read_only, max_rows=max_rows, rows_as=row_format
        )
        response: pb.ExecuteQueryResponse = await self._call(
            self._stub.ExecuteQuery, request, timeout_s
        )
        return _convert.query_result(response, arrays=row_format == "array")

    @overload
    def stream_query(
        self,
        query: str,
        params: Sequence[Any] = (),
        *,
        batch_rows: int | None = None,
        row_format: Literal["object"] = "object",
        timeout_s: float | None = None,
    ) -> AsyncGenerator[RowBatch[Row], None]: ...
    @overload
    def stream_query(
        self,
        query: str,
        params: Sequence[Any] = (),
        *,
        batch_rows: int | None = None,
        row_format: Literal["array"],
        timeout_s: float | None = None,
    ) -> AsyncGenerator[RowBatch[ArrayRow], None]: ...
    async def stream_query(
        self,
        query: str,
        params: Sequence[Any] = (),
        *,
        batch_rows: int | None = None,
        row_format: RowFormat = "object",
        timeout_s: float | None = None,
    ) -> AsyncGenerator[RowBatch[Row] | RowBatch[ArrayRow], None]:
        """Yield a read-only query's rows batch by batch (``async for``); see
        ``GatewayClient.stream_query``. ``aclose()`` cancels the call and the query."""
        request = _requests.stream_query(query, params, batch_rows=batch_rows, rows_as=row_format)
        reader = _convert.BatchReader(arrays=row_format == "array")
        responses = self._stream(self._stub.StreamQuery, request, timeout_s)
        try:
            async for response in responses:
                yield reader.batch(response)
                if response.done:
                    return
        finally:
            await responses.aclose()
        raise GatewayError(grpc.StatusCode.UNAVAILABLE, "the stream ended before its last batch")

    async def start_workflow(
        self,
        prompt: str,
        *,
        source_tables: Sequence[str] = (),
        target_table: str = "",
        idempotency_key: str = "",
        timeout_s: float | None = None,
    ) -> WorkflowResult:
        """Run one workflow and answer when it has finished (by default within 960 s)."""
        request = _requests.start_workflow(prompt, source_tables, target_table, idempotency_key)
        response = await self._call(
            self._stub.StartWorkflow, request, timeout_s, WORKFLOW_TIMEOUT_S
        )
        return _convert.workflow_result(response)

    def begin_workflow(
        self,
        prompt: str,
        *,
        source_tables: Sequence[str] = (),
        target_table: str = "",
        idempotency_key: str = "",
        timeout_s: float | None = None,
    ) -> AsyncWorkflowCall:
        """Start one workflow and answer at once: ``await run_id()`` to follow its log,
        ``await result()`` for what ``start_workflow`` would answer."""
        request = _requests.start_workflow(prompt, source_tables, target_table, idempotency_key)
        options = self._options(timeout_s, WORKFLOW_TIMEOUT_S)
        return AsyncWorkflowCall(self._begin_workflow(request, **options))

    async def get_logs(self, run_id: str, *, timeout_s: float | None = None) -> RunLogs:
        """The entries a run has written so far."""
        response = await self._call(self._stub.GetLogs, _requests.get_logs(run_id), timeout_s)
        return _convert.run_logs(response)

    async def watch_logs(
        self, run_id: str, *, start_index: int = 0, timeout_s: float | None = None
    ) -> AsyncGenerator[LogEvent, None]:
        """Yield a run's log entries as they are written, until the run ends."""
        request = _requests.watch_logs(run_id, start_index)
        responses = self._stream(self._stub.WatchLogs, request, timeout_s, WORKFLOW_TIMEOUT_S)
        try:
            async for response in responses:
                yield _convert.log_event(response)
        finally:
            await responses.aclose()

    async def health(self, *, timeout_s: float | None = None) -> HealthReport:
        """The gateway's health; an unhealthy gateway's report is returned too, not raised."""
        try:
            response = await self._call(self._stub.Health, pb.HealthRequest(), timeout_s)
        except GatewayError as exc:
            reports = [d for d in exc.details if isinstance(d, HealthReport)]
            if exc.code == grpc.StatusCode.UNAVAILABLE and reports:
                return reports[0]
            raise
        return _convert.health_report(response)
