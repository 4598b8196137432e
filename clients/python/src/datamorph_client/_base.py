"""What ``GatewayClient`` and ``AsyncGatewayClient`` share: the channel, credentials, deadlines.

Both clients take the same arguments and send the same metadata; they differ only in the
channel they open (``grpc`` or ``grpc.aio``) and in how they wait for an answer.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any, Literal

import grpc

from datamorph.gateway.v1 import gateway_pb2 as pb
from datamorph.gateway.v1 import gateway_pb2_grpc as pb_grpc
from datamorph_client._tracecontext import trace_metadata

__all__ = [
    "AWS_IAM_HEADER",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "RUN_ID_HEADER",
    "WORKFLOW_TIMEOUT_S",
    "ClientBase",
    "MetadataHook",
    "RowFormat",
    "row_format",
]

MetadataHook = Callable[[], Iterable[tuple[str, str]]]
RowFormat = Literal["object", "array"]
AWS_IAM_HEADER = "x-datamorph-aws-iam"  # datamorph_client.aws_iam's, without importing boto3
RUN_ID_HEADER = "x-datamorph-run-id"
"""The initial metadata StartWorkflow sends as soon as its run has an id."""
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
WORKFLOW_TIMEOUT_S = 960.0
"""StartWorkflow's deadline (and following a run's logs) unless the call names one: past
the orchestrator's 950 s."""

_ROW_FORMATS = {"object": pb.ROW_FORMAT_OBJECT, "array": pb.ROW_FORMAT_ARRAY}
_SERVICE = pb.DESCRIPTOR.services_by_name["DataMorphGateway"].full_name


def _read(path: str | None) -> bytes | None:
    if not path:
        return None
    with open(path, "rb") as file:
        return file.read()


def row_format(value: RowFormat) -> pb.RowFormat:
    try:
        return _ROW_FORMATS[value]
    except KeyError:
        raise ValueError(f"row_format must be 'object' or 'array', not {value!r}") from None


class ClientBase:
    """The constructor both clients share; a subclass opens its kind of channel."""

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
        channel: Any = None,
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
        if channel is None:
            if tls and credentials is None:
                credentials = grpc.ssl_channel_credentials()
            channel = self._open(address, credentials, options)
        self._channel = channel
        self._stub = pb_grpc.DataMorphGatewayStub(channel)
        # StartWorkflow called as a server stream of one message: a unary call's initial
        # metadata (the run id) reaches the caller only with its answer, a stream's at once.
        # The gateway sees the same call either way.
        self._begin_workflow = channel.unary_stream(
            f"/{_SERVICE}/StartWorkflow",
            request_serializer=pb.StartWorkflowRequest.SerializeToString,
            response_deserializer=pb.StartWorkflowResponse.FromString,
        )

    def _open(
        self,
        address: str,
        credentials: grpc.ChannelCredentials | None,
        options: list[tuple[str, int]],
    ) -> Any:
        """A new channel to ``address``: TLS with ``credentials``, else plaintext."""
        raise NotImplementedError

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
        metadata.extend(trace_metadata())  # W3C trace context, when the caller traces
        return metadata

    def _options(self, timeout_s: float | None, fallback_s: float | None = None) -> dict[str, Any]:
        """A call's deadline (the caller's ``timeout_s``, else the method's own default,
        else the client's) and its metadata: the one place every call gets them."""
        if timeout_s is None:
            timeout_s = self.timeout_s if fallback_s is None else fallback_s
        return {"timeout": timeout_s, "metadata": self._metadata()}
