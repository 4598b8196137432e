"""An AWS Lambda handler that reads through the DataMorph Gateway.

Deploy with ``datamorph-gateway-client[aws]`` installed (boto3 is in the Lambda runtime
already). The client is made once per container, outside the handler, so warm
invocations reuse its channel. Configure with GATEWAY_ADDRESS (host:port) and
GATEWAY_TLS=1 for TLS, and one credential:

- DATAMORPH_GATEWAY_ID (the gateway's ``aws_iam.gateway_id``): the Lambda proves who it is
  with its own execution role, no shared secret at all. The client presigns an
  ``sts:GetCallerIdentity`` with the role's credentials (renewed before it expires); the
  gateway asks STS who signed it and matches the role's ARN against its policy's
  ``aws_iam_arns``. The role needs no extra IAM permission for this;
- or GATEWAY_API_KEY, an API key from ``python -m datamorph_gateway.auth new-key``.

Event: ``{"tables": ["orders"], "limit": 5}``; the answer holds each table's
columns and a random sample of its rows, ready for a specs generator. Its body is a JSON
string, as API Gateway expects, and a failed call answers the HTTP status the gateway's
REST route would (NOT_FOUND 404, INVALID_ARGUMENT 400, UNAVAILABLE 503...).
"""

from __future__ import annotations

import base64
import json
import os
from datetime import date, time
from typing import Any

from datamorph_client import GatewayClient, GatewayError

client = GatewayClient(
    os.environ.get("GATEWAY_ADDRESS", "127.0.0.1:50051"),
    aws_iam=bool(os.environ.get("DATAMORPH_GATEWAY_ID")),
    api_key=os.environ.get("GATEWAY_API_KEY") or None,
    tls=os.environ.get("GATEWAY_TLS") == "1",
    timeout_s=20.0,
)


def _as_text(value: object) -> str:
    """What JSON cannot hold of the client's values: dates and times, Decimal, UUID, bytes."""
    if isinstance(value, (date, time)):
        return value.isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    return str(value)


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    tables = event.get("tables") or []
    try:
        schemas = client.get_schemas(tables)
        samples = client.get_data(tables, limit=int(event.get("limit", 5)))
    except GatewayError as exc:
        body = {"message": exc.message, "reason": exc.reason}
        return {"statusCode": exc.http_status, "body": json.dumps(body)}
    answer = {
        name: {
            "columns": [
                {"name": c.name, "type": c.type, "nullable": c.nullable} for c in schema.columns
            ],
            "primary_keys": schema.primary_keys,
            "sample": samples[name].rows,
        }
        for name, schema in schemas.items()
    }
    return {"statusCode": 200, "body": json.dumps(answer, default=_as_text)}
