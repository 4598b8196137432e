"""A small typed wrapper over the generated stubs, for Lambdas and scripts.

It keeps one channel (create the client once per Lambda container, outside
the handler), puts a deadline on every call, attaches the caller's credentials
(an API key, a bearer token, or an AWS IAM token) and any metadata a hook returns,
and answers with ``models``' dataclasses: rows decoded by column type (``values``),
no protobuf message. A failed call raises ``GatewayError`` with the google.rpc details
(reason, SQLSTATE, run id, field violations) already decoded.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from contextlib import closing
from typing import Any, Literal

import grpc

from datamorph.gateway.v1 import gateway_pb2 as pb
from datamorph.gateway.v1 import gateway_pb2_grpc as pb_grpc
from datamorph_client import _convert
from datamorph_client._tracecontext import trace_metadata
from datamorph_client.errors import GatewayError, from_rpc_error
from datamorph_client.models import (
    Column,
    HealthReport,
    LogEvent,
    QueryResult,
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

MetadataHook = Callable[[], Iterable[tuple[str, str]]]
RowFormat = Literal["object", "array"]
AWS_IAM_HEADER = "x-datamorph-aws-iam"  # datamorph_client.aws_iam's, without importing boto3
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
WORKFLOW_TIMEOUT_S = 960.0
"""StartWorkflow's deadline unless the call names one: past the orchestrator's 950 s."""

_ROW_FORMATS = {"object": pb.ROW_FORMAT_OBJECT, "array": pb.ROW_FORMAT_ARRAY}


def _read(path: str | None) -> bytes | None:
    if not path:
        return None
    with open(path, "rb") as file:
        return file.read()


def _row_format(row_format: RowFormat) -> pb.RowFormat:
    try:
        return _ROW_FORMATS[row_format]
    except KeyError:
        raise ValueError(f"row_format must be 'object' or 'array', not {row_format!r}") from None


class GatewayClient:
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

    def __init__(
        self,
        address: str,
        *,
        timeout_s: float = 30.0,
        api_key: str | None = None,
        bearer_token: str | Callable[[], str] | None = None,
        aws_iam: bool = False,
        gateway_id: str | None = None,
        aws_session: Any = None,
        aws_region: str | None = None,
        sts_endpoint_url: str | None = None,
        metadata_hook: MetadataHook | None = None,
        tls: bool = False,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        channel: grpc.Channel | None = None,
    ) -> None:
        self.timeout_s = timeout_s
        self._api_key = api_key
        self._bearer = bearer_token
        self._iam: Callable[[], str] | None = None
        if aws_iam:
            from datamorph_client.aws_iam import IamTokenSource

            gateway_id = gateway_id or os.environ.get("DATAMORPH_GATEWAY_ID", "")
            if not gateway_id:
                raise ValueError("aws_iam=True needs gateway_id= (or DATAMORPH_GATEWAY_ID)")
            self._iam = IamTokenSource(
                gateway_id,
                session=aws_session,
                region=aws_region,
                sts_endpoint_url=sts_endpoint_url,
            )
        self._hook = metadata_hook
        options = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ]
        if bool(cert_file) != bool(key_file):
            raise ValueError("cert_file and key_file go together")
        if credentials is None and (ca_file or cert_file):
            credentials = grpc.ssl_channel_credentials(
                root_certificates=_read(ca_file),
                private_key=_read(key_file),
                certificate_chain=_read(cert_file),
            )
        if channel is not None:
            self._channel = channel
        elif tls or credentials is not None:
            creds = credentials or grpc.ssl_channel_credentials()
            self._channel = grpc.secure_channel(address, creds, options=options)
        else:
            self._channel = grpc.insecure_channel(address, options=options)
        self._stub = pb_grpc.DataMorphGatewayStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _metadata(self) -> list[tuple[str, str]]:
        metadata: list[tuple[str, str]] = []
        if self._api_key:
            metadata.append(("x-api-key", self._api_key))
        if self._bearer is not None:
            token = self._bearer() if callable(self._bearer) else self._bearer
            metadata.append(("authorization", f"Bearer {token}"))
        if self._iam is not None:
            metadata.append((AWS_IAM_HEADER, self._iam()))
        if self._hook is not None:
            metadata.extend(self._hook())
        metadata.extend(trace_metadata())
        return metadata

    def _options(self, timeout_s: float | None, fallback_s: float | None = None) -> dict[str, Any]:
        """A call's deadline (the caller's ``timeout_s``, else the method's own default,
        else the client's) and its metadata: the one place every call gets them."""
        if timeout_s is None:
            timeout_s = self.timeout_s if fallback_s is None else fallback_s
        return {"timeout": timeout_s, "metadata": self._metadata()}

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
        self, method: Callable[..., Any], request: object, timeout_s: float | None
    ) -> Generator[Any, None, None]:
        """A server stream's messages; it is cancelled when the caller stops reading."""
        stream = method(request, **self._options(timeout_s))
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
        request = pb.GetSchemasRequest(table_names=table_names)
        response = self._call(self._stub.GetSchemas, request, timeout_s)
        return {name: _convert.table_schema(s) for name, s in response.schemas.items()}

    def get_data(
        self,
        table_names: Sequence[str],
        *,
        limit: int | None = None,
        timeout_s: float | None = None,
    ) -> dict[str, Sample]:
        """A random sample of each table's rows (10 unless ``limit``), keyed by name as given."""
        request = pb.GetDataRequest(table_names=table_names)
        if limit is not None:
            request.limit = limit
        response = self._call(self._stub.GetData, request, timeout_s)
        return {name: _convert.sample(name, response) for name in response.data}

    def execute_query(
        self,
        query: str,
        params: Sequence[Any] = (),
        *,
        read_only: bool = False,
        max_rows: int | None = None,
        row_format: RowFormat = "object",
        timeout_s: float | None = None,
    ) -> QueryResult:
        """Run SQL in one transaction; ``$1``, ``$2``... take ``params`` (see ``encode_param``)."""
        request = pb.ExecuteQueryRequest(
            query=query,
            params=_convert.params(params),
            read_only=read_only,
            row_format=_row_format(row_format),
        )
        if max_rows is not None:
            request.max_rows = max_rows
        response = self._call(self._stub.ExecuteQuery, request, timeout_s)
        columns = _convert.columns(response.columns)
        return QueryResult(
            columns=columns,
            rows=_convert.rows(response.rows, columns),
            row_count=response.row_count,
            rows_affected=int(response.rows_affected),
            command=response.command,
            truncated=response.truncated,
        )

    def stream_query(
        self,
        query: str,
        params: Sequence[Any] = (),
        *,
        batch_rows: int | None = None,
        row_format: RowFormat = "object",
        timeout_s: float | None = None,
    ) -> Iterator[RowBatch]:
        """Yield a read-only query's rows batch by batch, however many there are.

        Raises GatewayError if the stream fails midway or ends without its
        final message, so a partial result is never taken for a whole one.
        """
        request = pb.StreamQueryRequest(
            query=query, params=_convert.params(params), row_format=_row_format(row_format)
        )
        if batch_rows is not None:
            request.batch_rows = batch_rows
        columns: list[Column] = []
        with closing(self._stream(self._stub.StreamQuery, request, timeout_s)) as responses:
            for response in responses:
                if response.columns:
                    columns = _convert.columns(response.columns)
                rows = _convert.rows(response.rows, columns)
                yield RowBatch(columns=columns, rows=rows, rows_sent=int(response.rows_sent))
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
        request = pb.StartWorkflowRequest(
            prompt=prompt,
            source_tables=source_tables,
            target_table=target_table,
            idempotency_key=idempotency_key,
        )
        response = self._call(self._stub.StartWorkflow, request, timeout_s, WORKFLOW_TIMEOUT_S)
        return _convert.workflow_result(response)

    def get_logs(self, run_id: str, *, timeout_s: float | None = None) -> RunLogs:
        """The entries a run has written so far."""
        response = self._call(self._stub.GetLogs, pb.GetLogsRequest(run_id=run_id), timeout_s)
        return _convert.run_logs(response)

    def watch_logs(
        self, run_id: str, *, start_index: int = 0, timeout_s: float | None = None
    ) -> Iterator[LogEvent]:
        """Yield a run's log entries as they are written, until the run ends."""
        request = pb.WatchLogsRequest(run_id=run_id, start_index=start_index)
        with closing(self._stream(self._stub.WatchLogs, request, timeout_s)) as responses:
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
