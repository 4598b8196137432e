"""Client for the DataMorph Gateway: ``GatewayClient``, what its calls return, its error.

Everything here is the public surface, with ``datamorph_client.aio.AsyncGatewayClient``
for asyncio callers and the ``datamorph`` command (``datamorph_client.cli``); the
generated stubs they wrap live in ``datamorph.gateway.v1`` and never reach a caller.
"""

from datamorph_client.calls import AsyncWorkflowCall, WorkflowCall
from datamorph_client.client import GatewayClient, MetadataHook, RowFormat
from datamorph_client.errors import ErrorDetail, GatewayError
from datamorph_client.models import (
    ArrayRow,
    Column,
    ColumnSchema,
    FieldViolation,
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
from datamorph_client.values import decode_value

__all__ = [
    "ArrayRow",
    "AsyncWorkflowCall",
    "Column",
    "ColumnSchema",
    "ErrorDetail",
    "FieldViolation",
    "ForeignKey",
    "GatewayClient",
    "GatewayError",
    "HealthCheck",
    "HealthReport",
    "JsonValue",
    "LogEntry",
    "LogEvent",
    "MetadataHook",
    "QueryResult",
    "Row",
    "RowBatch",
    "RowFormat",
    "RunLogs",
    "Sample",
    "TableSchema",
    "Value",
    "WorkflowCall",
    "WorkflowResult",
    "decode_value",
]
