"""Client for the DataMorph Gateway: ``GatewayClient`` and the generated stubs it wraps."""

from datamorph_client.client import (
    Column,
    FieldViolation,
    GatewayClient,
    GatewayError,
    QueryResult,
    Sample,
)

__all__ = ["Column", "FieldViolation", "GatewayClient", "GatewayError", "QueryResult", "Sample"]
