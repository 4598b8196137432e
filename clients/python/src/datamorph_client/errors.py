"""The one exception a call raises, with the gateway's google.rpc details decoded.

::

    GatewayError        any failed call (the gateway's answer, or no answer at all)
      .code             grpc.StatusCode (.code_name: its name); .http_status is what the
                        REST route answers
      .message          the gateway's message
      .reason           google.rpc.ErrorInfo's reason: TABLE_NOT_FOUND, QUERY_FAILED...
      .metadata         ErrorInfo's metadata, from which .run_id, .sqlstate, .request_id
      .violations       google.rpc.BadRequest's field violations, as FieldViolation
      .retry_delay_s    google.rpc.RetryInfo's delay, for RESOURCE_EXHAUSTED
      .details          anything else, decoded: the HealthReport of an unhealthy
                        gateway, the RunLogs written before a workflow timed out
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import Enum
from typing import Any

import grpc
from google.protobuf import struct_pb2
from google.rpc import error_details_pb2, status_pb2

from datamorph.gateway.v1 import gateway_pb2 as pb
from datamorph_client import _convert
from datamorph_client.models import FieldViolation, HealthReport, JsonValue, RunLogs

__all__ = ["ErrorDetail", "GatewayError", "from_rpc_error"]

ErrorDetail = HealthReport | RunLogs | dict[str, JsonValue]
"""A decoded status detail other than ErrorInfo, BadRequest and RetryInfo."""

_S = grpc.StatusCode
# CONTRACT.md's table, completed with the usual mapping (Envoy's, grpc-gateway's).
_HTTP_STATUS: dict[grpc.StatusCode, int] = {
    _S.OK: 200,
    _S.CANCELLED: 499,
    _S.UNKNOWN: 500,
    _S.INVALID_ARGUMENT: 400,
    _S.DEADLINE_EXCEEDED: 504,
    _S.NOT_FOUND: 404,
    _S.ALREADY_EXISTS: 409,
    _S.PERMISSION_DENIED: 403,
    _S.RESOURCE_EXHAUSTED: 429,
    _S.FAILED_PRECONDITION: 400,
    _S.ABORTED: 409,
    _S.OUT_OF_RANGE: 400,
    _S.UNIMPLEMENTED: 501,
    _S.INTERNAL: 500,
    _S.UNAVAILABLE: 503,
    _S.DATA_LOSS: 500,
    _S.UNAUTHENTICATED: 401,
}


class GatewayError(Exception):
    """A failed call: the gRPC code, the gateway's message and its structured details."""

    def __init__(
        self,
        code: Enum,
        message: str,
        *,
        reason: str = "",
        metadata: Mapping[str, str] | None = None,
        violations: Sequence[FieldViolation] = (),
        retry_delay_s: float | None = None,
        details: Sequence[ErrorDetail] = (),
    ) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code: Enum = code
        """A ``grpc.StatusCode`` (typed as the ``Enum`` it is: grpc ships no type stubs)."""
        self.message: str = message
        self.reason: str = reason
        self.metadata: dict[str, str] = dict(metadata or {})
        self.violations: tuple[FieldViolation, ...] = tuple(violations)
        self.retry_delay_s: float | None = retry_delay_s
        self.details: tuple[ErrorDetail, ...] = tuple(details)

    @property
    def code_name(self) -> str:
        """The code's name: ``NOT_FOUND``, ``INVALID_ARGUMENT``..."""
        return self.code.name

    @property
    def run_id(self) -> str | None:
        """The workflow run the error is about (StartWorkflow, GetLogs), when there is one."""
        return self.metadata.get("run_id")

    @property
    def sqlstate(self) -> str | None:
        return self.metadata.get("sqlstate")

    @property
    def request_id(self) -> str | None:
        return self.metadata.get("request_id")

    @property
    def http_status(self) -> int:
        """The HTTP status the gateway's REST route answers for this code (NOT_FOUND: 404)."""
        return _HTTP_STATUS.get(self.code, 500)


def from_rpc_error(exc: grpc.RpcError) -> GatewayError:
    """A ``GatewayError`` from grpc's, its status details unpacked."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    message = exc.details() if hasattr(exc, "details") else str(exc)
    found: dict[str, Any] = {"reason": "", "metadata": {}, "violations": [], "details": []}
    trailers = exc.trailing_metadata() if hasattr(exc, "trailing_metadata") else None
    for key, value in trailers or ():
        if key == "grpc-status-details-bin":
            for detail in status_pb2.Status.FromString(value).details:
                _unpack(detail, found)
    return GatewayError(code, message or "", **found)


def _unpack(detail: Any, found: dict[str, Any]) -> None:
    info = error_details_pb2.ErrorInfo()
    bad = error_details_pb2.BadRequest()
    retry = error_details_pb2.RetryInfo()
    health = pb.HealthResponse()
    body = struct_pb2.Struct()
    if detail.Unpack(info):
        found["reason"], found["metadata"] = info.reason, dict(info.metadata)
    elif detail.Unpack(bad):
        found["violations"] = [FieldViolation(v.field, v.description) for v in bad.field_violations]
    elif detail.Unpack(retry):
        found["retry_delay_s"] = retry.retry_delay.ToTimedelta().total_seconds()
    elif detail.Unpack(health):
        found["details"].append(_convert.health_report(health))
    elif detail.Unpack(body):
        decoded = _convert.struct(body)
        found["details"].append(
            _convert.run_logs_from_json(decoded) if "logs" in decoded else decoded
        )
