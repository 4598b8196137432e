"""The AWS Lambda orchestrator: one synchronous ``invoke`` per workflow, never two.

Retries are off (``max_attempts: 0``): a workflow creates tables and runs Glue
jobs, so a retried invoke after a lost answer would run it twice. The read
timeout outlasts the longest Lambda (15 minutes); when it passes anyway the
function may still be running, which is why the caller gets the run id.

Errors before the request reached Lambda (no connection, throttling, a bad
function name) are safe to retry and say so by their code; errors after
(timeout, connection lost mid-call) carry the run id, since the run may exist.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

import boto3
import botocore.exceptions

from datamorph_gateway import aws
from datamorph_gateway.config import AwsSettings, WorkflowSettings
from datamorph_gateway.errors import (
    FailedPrecondition,
    GatewayError,
    InvalidArgument,
    ResourceExhausted,
    Unavailable,
)
from datamorph_gateway.workflows.base import (
    OrchestratorResult,
    OrchestratorTimeout,
    WorkflowError,
    parse_answer,
    result_from_answer,
)

if TYPE_CHECKING:
    from mypy_boto3_lambda import LambdaClient

log = logging.getLogger(__name__)

# Lambda errors meaning the gateway's configuration or permissions are wrong.
_MISCONFIGURED = frozenset(
    {
        "ResourceNotFoundException",
        "AccessDeniedException",
        "InvalidParameterValueException",
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "ExpiredTokenException",
    }
)
_THROTTLED = frozenset({"TooManyRequestsException", "EC2ThrottledException"})
_TOO_LARGE = frozenset({"RequestTooLargeException", "InvalidRequestContentException"})


class LambdaOrchestrator:
    """Invokes ``ORCHESTRATOR_FUNCTION`` (a name, alias-qualified name or ARN)."""

    def __init__(self, client: LambdaClient, function_name: str, *, read_timeout_s: float) -> None:
        self._client = client
        self.function_name = function_name
        self._read_timeout_s = read_timeout_s

    @classmethod
    def from_settings(
        cls,
        settings: WorkflowSettings,
        aws_settings: AwsSettings,
        *,
        session: boto3.session.Session | None = None,
    ) -> LambdaOrchestrator:
        client: LambdaClient = aws.client(
            aws_settings,
            "lambda",
            aws_settings.lambda_endpoint_url,
            session=session,
            max_attempts=0,
            read_timeout_s=settings.orchestrator_read_timeout_s,
            connect_timeout_s=settings.orchestrator_connect_timeout_s,
            # One pooled connection per concurrent workflow.
            max_pool_connections=settings.workflow_max_concurrent,
            # Idle for up to 15 minutes: ask the kernel to keep NATs from dropping it.
            tcp_keepalive=True,
        )
        return cls(
            client,
            settings.orchestrator_function,
            read_timeout_s=settings.orchestrator_read_timeout_s,
        )

    def close(self) -> None:
        self._client.close()

    def invoke(self, event: dict[str, Any], *, timeout_s: float) -> OrchestratorResult:
        run_id = str(event.get("run_id", ""))
        try:
            response = self._client.invoke(
                FunctionName=self.function_name,
                InvocationType="RequestResponse",
                Payload=json.dumps(event).encode(),
            )
            stream = response["Payload"]
            try:
                raw = stream.read()
            finally:
                stream.close()
        except botocore.exceptions.ReadTimeoutError:
            raise OrchestratorTimeout(
                f"the orchestrator ({self.function_name}) did not answer within "
                f"{self._read_timeout_s:g} s"
            ) from None
        # "from None": the AWS error is logged, and its traceback holds the HTTP connection.
        except botocore.exceptions.ClientError as exc:
            raise self._client_error(exc, run_id) from None
        except botocore.exceptions.BotoCoreError as exc:
            raise self._transport_error(exc, run_id) from None
        payload = parse_answer(raw, run_id, function_error=response.get("FunctionError"))
        return result_from_answer(payload, run_id)

    def _client_error(self, exc: botocore.exceptions.ClientError, run_id: str) -> GatewayError:
        """Lambda refused the invoke: the function did not run. AWS's text goes to the log only."""
        code = aws.error_code(exc)
        log.warning("run %s: invoking %s failed: %s", run_id, self.function_name, str(exc))
        metadata = {"run_id": run_id, "aws_error_code": code}
        if code in _MISCONFIGURED:
            return FailedPrecondition(
                f"the orchestrator Lambda function cannot be invoked ({code}): check "
                "ORCHESTRATOR_FUNCTION, AWS_REGION and the gateway's lambda:InvokeFunction "
                "permission",
                reason="ORCHESTRATOR_MISCONFIGURED",
                metadata=metadata,
            )
        if code in _THROTTLED:
            return ResourceExhausted(
                f"the orchestrator is throttled ({code}); try again later",
                reason="ORCHESTRATOR_THROTTLED",
                metadata=metadata,
            )
        if code in _TOO_LARGE:
            return InvalidArgument(
                f"the request is too large for the orchestrator ({code})",
                reason="ORCHESTRATOR_REQUEST_TOO_LARGE",
                metadata=metadata,
            )
        return Unavailable(
            f"the orchestrator is unavailable ({code})",
            reason="ORCHESTRATOR_UNAVAILABLE",
            metadata=metadata,
        )

    def _transport_error(self, exc: botocore.exceptions.BotoCoreError, run_id: str) -> GatewayError:
        log.warning("run %s: invoking %s failed: %s", run_id, self.function_name, str(exc))
        metadata = {"run_id": run_id}
        if isinstance(exc, botocore.exceptions.NoCredentialsError):
            return FailedPrecondition(
                "the gateway has no AWS credentials to invoke the orchestrator",
                reason="ORCHESTRATOR_MISCONFIGURED",
                metadata=metadata,
            )
        if isinstance(
            exc,
            (botocore.exceptions.ConnectTimeoutError, botocore.exceptions.EndpointConnectionError),
        ):
            return Unavailable(
                "the orchestrator cannot be reached; the workflow did not start",
                reason="ORCHESTRATOR_UNREACHABLE",
                metadata=metadata,
            )
        # The request may have reached Lambda: the run may exist, so say so.
        return WorkflowError(
            f"the connection to the orchestrator was lost; run {run_id} may still be running",
            kind=Unavailable,
            reason="ORCHESTRATOR_CONNECTION_LOST",
            metadata=metadata,
        )
