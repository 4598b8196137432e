"""An AWS Lambda handler that reads through the DataMorph Gateway.

Deploy with only ``datamorph-gateway-client`` installed. The client is made
once per container, outside the handler, so warm invocations reuse its
channel. Configure with GATEWAY_ADDRESS (host:port), GATEWAY_API_KEY and
GATEWAY_TLS=1 for TLS.

Event: ``{"tables": ["orders"], "limit": 5}``; the answer holds each table's
columns and a random sample of its rows, ready for a specs generator.
"""

from __future__ import annotations

import os
from typing import Any

from datamorph_client import GatewayClient, GatewayError

client = GatewayClient(
    os.environ.get("GATEWAY_ADDRESS", "127.0.0.1:50051"),
    api_key=os.environ.get("GATEWAY_API_KEY") or None,
    tls=os.environ.get("GATEWAY_TLS") == "1",
    timeout_s=20.0,
)


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    tables = event.get("tables") or []
    try:
        schemas = client.get_schemas(tables)
        samples = client.get_data(tables, limit=int(event.get("limit", 5)))
    except GatewayError as exc:
        return {"statusCode": 400 if exc.violations else 502, "body": {"message": exc.message}}
    body = {
        name: {
            "columns": [c.column_name for c in schema.columns],
            "primary_keys": list(schema.primary_keys),
            "sample": samples[name].rows,
        }
        for name, schema in schemas.items()
    }
    return {"statusCode": 200, "body": body}
