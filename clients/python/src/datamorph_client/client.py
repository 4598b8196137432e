"""A small typed wrapper over the generated stubs, for Lambdas and scripts.

It keeps one channel (create the client once per Lambda container, outside
the handler), puts a deadline on every call, attaches the caller's credentials
(an API key, a bearer token, or an AWS IAM token) and any metadata a hook returns,
and turns gRPC errors into ``GatewayError`` with the google.rpc details (reason,
SQLSTATE, field violations) already decoded.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import json_format, struct_pb2
from google.rpc import error_details_pb2, status_pb2

from datamorph.gateway.v1 import gateway_pb2 as pb
from datamorph.gateway.v1 import gateway_pb2_grpc as pb_grpc

MetadataHook = Callable[[], Iterable[tuple[str, str]]]
AWS_IAM_HEADER = "x-datamorph-aws-iam"  # datamorph_client.aws_iam's, without importing boto3
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
WORKFLOW_TIMEOUT_S = 960.0


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


class GatewayError(Exception):
    """A failed call: the gRPC code, the gateway's message and its structured details."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        reason: str = "",
        metadata: Mapping[str, str] | None = None,
        violations: Sequence[FieldViolation] = (),
        details: Sequence[Any] = (),
    ) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.reason = reason
        self.metadata = dict(metadata or {})
        self.violations = tuple(violations)
        self.details = tuple(details)

    @property
    def sqlstate(self) -> str | None:
        return self.metadata.get("sqlstate")

    @property
    def request_id(self) -> str | None:
        return self.metadata.get("request_id")


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    key: str


@dataclass(frozen=True)
class QueryResult:
    """ExecuteQuery's answer with rows as plain Python values."""

    columns: list[Column]
    rows: list[Any]
    row_count: int
    rows_affected: int
    command: str
    truncated: bool


@dataclass(frozen=True)
class Sample:
    """GetData's answer for one table."""

    columns: list[dict[str, str]]
    rows: list[dict[str, Any]] = field(default_factory=list)


def _plain(value: struct_pb2.Value | struct_pb2.ListValue | struct_pb2.Struct) -> Any:
    return json_format.MessageToDict(value)


def _error(exc: grpc.RpcError) -> GatewayError:
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    message = exc.details() if hasattr(exc, "details") else str(exc)
    reason, metadata, violations, details = "", {}, [], []
    trailers = exc.trailing_metadata() if hasattr(exc, "trailing_metadata") else None
    for key, value in trailers or ():
        if key != "grpc-status-details-bin":
            continue
        status = status_pb2.Status.FromString(value)
        for any_detail in status.details:
            info = error_details_pb2.ErrorInfo()
            bad = error_details_pb2.BadRequest()
            health = pb.HealthResponse()
            if any_detail.Unpack(info):
                reason, metadata = info.reason, dict(info.metadata)
            elif any_detail.Unpack(bad):
                violations = [FieldViolation(v.field, v.description) for v in bad.field_violations]
            elif any_detail.Unpack(health):
                details.append(health)
    return GatewayError(
        code,
        message or "",
        reason=reason,
        metadata=metadata,
        violations=violations,
        details=details,
    )


def _read(path: str | None) -> bytes | None:
    if not path:
        return None
    with open(path, "rb") as file:
        return file.read()


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
        self.stub = pb_grpc.DataMorphGatewayStub(self._channel)

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
        return metadata

    def _call(self, method: Callable[..., Any], request: Any, timeout_s: float | None) -> Any:
        try:
            return method(
                request,
                timeout=self.timeout_s if timeout_s is None else timeout_s,
                metadata=self._metadata(),
            )
        except grpc.RpcError as exc:
            raise _error(exc) from None

    # -- RPCs ----------------------------------------------------------------------------

    def get_schemas(
        self, table_names: Sequence[str], *, timeout_s: float | None = None
    ) -> dict[str, pb.TableSchema]:
        response = self._call(
            self.stub.GetSchemas, pb.GetSchemasRequest(table_names=table_names), timeout_s
        )
        return dict(response.schemas)

    def get_data(
        self,
        table_names: Sequence[str],
        *,
        limit: int | None = None,
        timeout_s: float | None = None,
    ) -> dict[str, Sample]:
        request = pb.GetDataRequest(table_names=table_names)
        if limit is not None:
            request.limit = limit
        response = self._call(self.stub.GetData, request, timeout_s)
        return {
            name: Sample(columns=_plain(response.columns[name]), rows=_plain(rows))
            for name, rows in response.data.items()
        }

    def execute_query(
        self,
        query: str,
        params: Sequence[Any] = (),
        *,
        read_only: bool = False,
        max_rows: int | None = None,
        row_format: pb.RowFormat = pb.ROW_FORMAT_OBJECT,
        timeout_s: float | None = None,
    ) -> QueryResult:
        request = pb.ExecuteQueryRequest(query=query, read_only=read_only, row_format=row_format)
        for value in params:
            request.params.add().CopyFrom(_to_value(value))
        if max_rows is not None:
            request.max_rows = max_rows
        response = self._call(self.stub.ExecuteQuery, request, timeout_s)
        return QueryResult(
            columns=[Column(c.name, c.type, c.key) for c in response.columns],
            rows=[_plain(row) for row in response.rows],
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
        timeout_s: float | None = None,
    ) -> Iterator[list[dict[str, Any]]]:
        """Yield a read-only query's rows batch by batch, however many there are.

        Raises GatewayError if the stream fails midway or ends without its
        final message, so a partial result is never taken for a whole one.
        """
        request = pb.StreamQueryRequest(query=query)
        for value in params:
            request.params.add().CopyFrom(_to_value(value))
        if batch_rows is not None:
            request.batch_rows = batch_rows
        stream = self.stub.StreamQuery(
            request,
            timeout=self.timeout_s if timeout_s is None else timeout_s,
            metadata=self._metadata(),
        )
        try:
            for response in stream:
                yield [_plain(row) for row in response.rows]
                if response.done:
                    return
        except grpc.RpcError as exc:
            raise _error(exc) from None
        finally:
            stream.cancel()
        raise GatewayError(grpc.StatusCode.UNAVAILABLE, "the stream ended before its last batch")

    def watch_logs(
        self, run_id: str, *, start_index: int = 0, timeout_s: float | None = None
    ) -> Iterator[pb.WatchLogsResponse]:
        """Yield a run's log entries as they are written, until the run ends."""
        stream = self.stub.WatchLogs(
            pb.WatchLogsRequest(run_id=run_id, start_index=start_index),
            timeout=self.timeout_s if timeout_s is None else timeout_s,
            metadata=self._metadata(),
        )
        try:
            yield from stream
        except grpc.RpcError as exc:
            raise _error(exc) from None
        finally:
            stream.cancel()

    def start_workflow(
        self,
        prompt: str,
        *,
        source_tables: Sequence[str] = (),
        target_table: str = "",
        idempotency_key: str = "",
        timeout_s: float = WORKFLOW_TIMEOUT_S,
    ) -> pb.StartWorkflowResponse:
        request = pb.StartWorkflowRequest(
            prompt=prompt,
            source_tables=source_tables,
            target_table=target_table,
            idempotency_key=idempotency_key,
        )
        response: pb.StartWorkflowResponse = self._call(self.stub.StartWorkflow, request, timeout_s)
        return response

    def get_logs(self, run_id: str, *, timeout_s: float | None = None) -> pb.GetLogsResponse:
        response: pb.GetLogsResponse = self._call(
            self.stub.GetLogs, pb.GetLogsRequest(run_id=run_id), timeout_s
        )
        return response

    def health(self, *, timeout_s: float | None = None) -> pb.HealthResponse:
        """The gateway's health; an unhealthy gateway's report is returned too, not raised."""
        try:
            health: pb.HealthResponse = self._call(self.stub.Health, pb.HealthRequest(), timeout_s)
            return health
        except GatewayError as exc:
            reports = [d for d in exc.details if isinstance(d, pb.HealthResponse)]
            if exc.code == grpc.StatusCode.UNAVAILABLE and reports:
                return reports[0]
            raise


def _to_value(value: Any) -> struct_pb2.Value:
    wrapper = struct_pb2.ListValue()
    wrapper.append(value)
    return wrapper.values[0]
