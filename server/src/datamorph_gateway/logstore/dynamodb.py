"""Workflow logs in DynamoDB, where DataMorph's Lambdas write them.

One item per run (table ``DYNAMODB_TABLE``, partition key
``DYNAMODB_PARTITION_KEY``): ``logs`` is a list of maps, ``created_at`` and
``updated_at`` are strings. Items are decoded with boto3's own
``TypeDeserializer``; its Decimals become ints when integral, floats otherwise.
Appends use the same single ``UpdateItem`` as DataMorph's logger, so entries
written here and by the Lambdas interleave safely.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import boto3
import botocore.exceptions
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

from datamorph_gateway import aws
from datamorph_gateway.config import AwsSettings, WorkflowSettings
from datamorph_gateway.errors import FailedPrecondition, GatewayError, Unavailable
from datamorph_gateway.logstore.base import LogStore, RunLog, json_safe, normalize_entry

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

log = logging.getLogger(__name__)

# Errors that mean the gateway's settings or permissions are wrong, not the request.
_MISCONFIGURED = frozenset(
    {
        "ResourceNotFoundException",
        "AccessDeniedException",
        "ValidationException",
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "ExpiredTokenException",
    }
)


class DynamoDBLogStore(LogStore):
    """Reads (and, for local orchestrators, appends) DataMorph's log items."""

    def __init__(
        self,
        client: DynamoDBClient,
        *,
        table: str = "datamorph_logs",
        partition_key: str = "run_id",
        poll_interval_s: float = 1.0,
    ) -> None:
        super().__init__(poll_interval_s=poll_interval_s)
        self._client = client
        self._table = table
        self._key = partition_key
        self._deserializer = TypeDeserializer()
        self._serializer = TypeSerializer()

    @classmethod
    def from_settings(
        cls,
        settings: WorkflowSettings,
        aws_settings: AwsSettings,
        *,
        session: boto3.session.Session | None = None,
    ) -> DynamoDBLogStore:
        """A store with its own client: bounded timeouts, standard retries; reads are idempotent."""
        client: DynamoDBClient = aws.client(
            aws_settings,
            "dynamodb",
            aws_settings.dynamodb_endpoint_url,
            session=session,
            max_attempts=3,
        )
        return cls(
            client,
            table=aws_settings.dynamodb_table,
            partition_key=aws_settings.dynamodb_partition_key,
            poll_interval_s=settings.log_poll_interval_s,
        )

    def close(self) -> None:
        self._client.close()

    def read_from(self, run_id: str, start: int) -> RunLog | None:
        try:
            response = self._client.get_item(
                TableName=self._table, Key={self._key: {"S": run_id}}, ConsistentRead=True
            )
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise self._error(exc) from None  # logged; its traceback holds the connection
        item = response.get("Item")
        if item is None:
            return None
        decoded = {k: self._deserializer.deserialize(v) for k, v in item.items()}
        raw_logs = decoded.get("logs")
        entries = raw_logs if isinstance(raw_logs, list) else []
        begin = max(start, 0)
        return RunLog(
            run_id,
            [normalize_entry(json_safe(e)) for e in entries[begin:]],
            _text(decoded.get("created_at")),
            _text(decoded.get("updated_at")),
            offset=begin,
        )

    def _append(self, run_id: str, entry: dict[str, Any]) -> None:
        now = {"S": entry["timestamp"]}
        serialized = self._serializer.serialize(_dynamo_numbers(entry))
        try:
            self._client.update_item(
                TableName=self._table,
                Key={self._key: {"S": run_id}},
                UpdateExpression=(
                    "SET #logs = list_append(if_not_exists(#logs, :empty), :new), "
                    "#updated = :now, #created = if_not_exists(#created, :now)"
                ),
                ExpressionAttributeNames={
                    "#logs": "logs",
                    "#updated": "updated_at",
                    "#created": "created_at",
                },
                ExpressionAttributeValues={
                    ":empty": {"L": []},
                    ":new": {"L": [serialized]},
                    ":now": now,
                },
            )
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise self._error(exc) from None  # logged; its traceback holds the connection

    def _error(self, exc: Exception) -> GatewayError:
        """DynamoDB's failure as a request error; the AWS message goes to the log only."""
        if isinstance(exc, botocore.exceptions.ClientError):
            code = aws.error_code(exc)
            log.warning("DynamoDB table %s: %s", self._table, str(exc))
            if code in _MISCONFIGURED:
                return FailedPrecondition(
                    f"the workflow log table {self._table!r} cannot be read ({code}): "
                    "check DYNAMODB_TABLE, DYNAMODB_PARTITION_KEY, AWS_REGION and the "
                    "gateway's IAM permissions",
                    reason="LOG_STORE_MISCONFIGURED",
                    metadata={"aws_error_code": code},
                )
            return Unavailable(
                f"the workflow log store is unavailable ({code})",
                reason="LOG_STORE_UNAVAILABLE",
                metadata={"aws_error_code": code},
            )
        if isinstance(exc, botocore.exceptions.NoCredentialsError):
            return FailedPrecondition(
                "the gateway has no AWS credentials to read workflow logs from DynamoDB",
                reason="LOG_STORE_MISCONFIGURED",
            )
        log.warning("DynamoDB table %s: %s", self._table, str(exc))
        return Unavailable(
            "the workflow log store (DynamoDB) cannot be reached", reason="LOG_STORE_UNAVAILABLE"
        )


def _dynamo_numbers(value: Any) -> Any:
    """Floats as Decimals, which is the only number TypeSerializer takes."""
    if isinstance(value, float) and math.isfinite(value):
        return Decimal(repr(value))
    if isinstance(value, Mapping):
        return {k: _dynamo_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_dynamo_numbers(v) for v in value]
    return value


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""
