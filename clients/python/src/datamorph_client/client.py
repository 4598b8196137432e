"""A small typed wrapper over the generated stubs, for Lambdas and scripts.

It keeps one channel (create the client once per Lambda container, outside
the handler), puts a deadline on every call, attaches the caller's credentials
(an API key, a bearer token, or an AWS IAM token) and any metadata a hook returns,
and answers with ``models``' dataclasses: rows decoded by column type (``values``),
no protobuf message. A failed call raises ``GatewayError`` with the google.rpc details
(reason, SQLSTATE, run id, field violations) already decoded.

``datamorph_client.aio.AsyncGatewayClient`` has the same methods for asyncio callers.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from contextlib import closing
from typing import Any, Literal, overload

import grpc

from datamorph.gateway.v1 import gateway_pb2 as pb
from datamorph_client import _convert, _requests
from datamorph_client._base import (
    DEFAULT_MAX_MESSAGE_BYTES,
    WORKFLOW_TIMEOUT_S,
    ClientBase,
    MetadataHook,
    RowFormat,
)
from datamorph_client.calls import WorkflowCall
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

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "WORKFLOW_TIMEOUT_S",
    "GatewayClient",
    "MetadataHook",
    "RowFormat",
]


class GatewayClient(ClientBase):
    """Typed calls to a DataMorph Gateway.

    ``address`` is "host:port" (the gateway itself, or Envoy's listener, which
    proxies gRPC too). Pass ``tls=True`` for the system's root certificates,
    ``ca_file`` (PEM) to verify the gateway with your own CA instead, ``cert_file`` and
    ``key_file`` to present a client certificate (mTLS), or ``credentials`` for anything
    else. Any of the three files implies TLS.

    Credentials (the gateway's auth policy decides what each may do): ``api_key``
    (sent as ``x-api-key``); ``bearer_token``, an OAuth 2 / OIDC access token, or a
    callable returning a fresh one before each call (``authorization: Bearer``); or
    ``aws_iam=True`` with the ``gateway_id`` the gateway's policy names (default: the
    ``DATAMORPH_GATEWAY_ID`` environment variable), which signs a presigned
    ``sts:GetCallerIdentity`` with the default boto3 credentials (a Lambda's role) and
    renews it before it expires; it needs ``datamorph-gateway-client[aws]``. Sign for the
    gateway's region (``aws_region``) when the Lambda runs in another one.
    """

    def _open(
        self,
        address: str,
        credentials: grpc.ChannelCredentials | None,
        options: list[tuple[str, int]],
    ) -> grpc.Channel:
        if credentials is not None:
            return grpc.secure_channel(address, credentials, options=options)
        return grpc.insecure_channel(address, options=options)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(
        self,
        method: Callable[..., Any],
        request: object,
        timeout_s: float | None,
        fallback_s: float | None = None,
    ) -> Any:
        try:
            return method(request, **self._options(timeout_s, fallback_s))
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    def _stream(
        self,
        method: Callable[..., Any],
        request: object,
        timeout_s: float | None,
        fallback_s: float | None = None,
    ) -> Generator[Any, None, None]:
        """A server stream's messages; it is cancelled when the caller stops reading."""
        stream = method(request, **self._options(timeout_s, fallback_s))
        try:
            yield from stream
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        finally:
            stream.cancel()

    # -- RPCs ----------------------------------------------------------------------------

    def get_schemas(
        self, table_names: Sequence[str], *, timeout_s: float | None = None
    ) -> dict[str, TableSchema]:
        """Each table's columns and keys, keyed by the name as given."""
        request = _requests.get_schemas(table_names)
        response = self._call(self._stub.GetSchemas, request, timeout_s)
        return _convert.table_schemas(response, table_names)

    def get_data(
        self,
        table_names: Sequence[str],
        *,
        limit: int | None = None,
        timeout_s: float | None = None,
    ) -> dict[str, Sample]:
        """A random sample of each table's rows (10 unless ``limit``), keyed by name as given."""
        request = _requests.get_data(table_names, limit)
        response = self._call(self._stub.GetData, request, timeout_s)
        return _convert.samples(response, table_names)

    @overload
    def execute_query(
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
    def execute_query(
        self,
        query: str,
        params: Sequence[Any] = (),
        *,
        read_only: bool = False,
        max_rows: int | None = None,
        row_format: Literal["array"],
        timeout_s: float | None = None,
    ) -> QueryResult[ArrayRow]: ...
    def execute_query(
        self,
        query: str,
        params: Sequence[Any] = (),
        *,
        read_only: bool = False,
        max_rows: int | None = None,
        row_format: RowFormat = "object",
        timeout_s: float | None = None,
    ) -> QueryResult[Row] | QueryResult[ArrayRow]:
        """Run SQL in one transaction; ``$1``, ``$2``... take ``params`` (see ``encode_param``)."""
        request = _requests.execute_query(
            query, params, read_only=read_only, max_rows=max_rows, rows_as=row_format
        )
        response: pb.ExecuteQueryResponse = self._call(self._stub.ExecuteQuery, request, timeout_s)
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
    ) -> Generator[RowBatch[Row], None, None]: ...
    @overload
    def stream_query(
        self,
        query: str,
        params: Sequence[Any] = (),
        *,
        batch_rows: int | None = None,
        row_format: Literal["array"],
        timeout_s: float | None = None,
    ) -> Generator[RowBatch[ArrayRow], None, None]: ...
    def stream_query(
        self,
        query: str,
        params: Sequence[Any] = (),
        *,
        batch_rows: int | None = None,
        row_format: RowFormat = "object",
        timeout_s: float | None = None,
    ) -> Generator[RowBatch[Row] | RowBatch[ArrayRow], None, None]:
        """Yield a read-only query's rows batch by batch, however many there are.

        Raises GatewayError if the stream fails midway or ends without its final
        message, so a partial result is never taken for a whole one. Closing the
        generator early (``close()``, or leaving a ``with closing(...)`` block)
        cancels the call, and the gateway cancels the query.
        """
        request = _requests.stream_query(query, params, batch_rows=batch_rows, rows_as=row_format)
        reader = _convert.BatchReader(arrays=row_format == "array")
        with closing(self._stream(self._stub.StreamQuery, request, timeout_s)) as responses:
            for response in responses:
                yield reader.batch(response)
                if response.done:
                    return
        raise GatewayError(grpc.StatusCode.UNAVAILABLE, "the stream ended before its last batch")

    def start_workflow(
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
        response = self._call(self._stub.StartWorkflow, request, timeout_s, WORKFLOW_TIMEOUT_S)
        return _convert.workflow_result(response)

    def begin_workflow(
        self,
        prompt: str,
        *,
        source_tables: Sequence[str] = (),
        target_table: str = "",
        idempotency_key: str = "",
        timeout_s: float | None = None,
    ) -> WorkflowCall:
        """Start one workflow and answer at once: ``run_id()`` to follow its log while it
        runs (``watch_logs``), ``result()`` for what ``start_workflow`` would answer."""
        request = _requests.start_workflow(prompt, source_tables, target_table, idempotency_key)
        options = self._options(timeout_s, WORKFLOW_TIMEOUT_S)
        return WorkflowCall(self._begin_workflow(request, **options))

    def get_logs(self, run_id: str, *, timeout_s: float | None = None) -> RunLogs:
        """The entries a run has written so far."""
        response = self._call(self._stub.GetLogs, _requests.get_logs(run_id), timeout_s)
        return _convert.run_logs(response)

    def watch_logs(
        self, run_id: str, *, start_index: int = 0, timeout_s: float | None = None
    ) -> Generator[LogEvent, None, None]:
        """Yield a run's log entries as they are written, until the run ends.

        Without ``timeout_s`` it may follow a run for as long as a workflow may take.
        """
        request = _requests.watch_logs(run_id, start_index)
        stream = self._stream(self._stub.WatchLogs, request, timeout_s, WORKFLOW_TIMEOUT_S)
        with closing(stream) as responses:
            for response in responses:
                yield _convert.log_event(response)

    def health(self, *, timeout_s: float | None = None) -> HealthReport:
        """The gateway's health; an unhealthy gateway's report is returned too, not raised."""
        try:
            response = self._call(self._stub.Health, pb.HealthRequest(), timeout_s)
        except GatewayError as exc:
            reports = [d for d in exc.details if isinstance(d, HealthReport)]
            if exc.code == grpc.StatusCode.UNAVAILABLE and reports:
                return reports[0]
            raise
        return _convert.health_report(response)
