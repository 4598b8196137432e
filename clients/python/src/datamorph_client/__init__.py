"""Client for the DataMorph Gateway: ``GatewayClient``, what its calls return, its error.

Everything here is the public surface; the generated stubs it wraps live in
``datamorph.gateway.v1`` and never reach a caller.
"""

from datamorph_client.client import GatewayClient, MetadataHook, RowFormat
from datamorph_client.errors import GatewayError
from datamorph_client.models import (
    Column,
    ColumnSchema,
    FieldViolation,
    ForeignKey,
    HealthCheck,
    HealthReport,
    LogEntry,
    LogEvent,
    QueryResult,
    RowBatch,
    RunLogs,
    Sample,
    TableSchema,
    WorkflowResult,
)
from datamorph_client.values import decode_value

__all__ = [
    "Column",
    "ColumnSchema",
    "FieldViolation",
    "ForeignKey",
    "GatewayClient",
    "GatewayError",
    "HealthCheck",
    "HealthReport",
    "LogEntry",
    "LogEvent",
    "MetadataHook",
    "QueryResult",
    "RowBatch",
    "RowFormat",
    "RunLogs",
    "Sample",
    "TableSchema",
    "WorkflowResult",
    "decode_value",
]
