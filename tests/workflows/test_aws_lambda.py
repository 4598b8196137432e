"""The AWS Lambda adapter, against a stand-in Invoke endpoint."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import grpc
import pytest

from datamorph_gateway.config import DatabaseSettings, LimitsSettings, Settings
from datamorph_gateway.db.database import Database
from datamorph_gateway.errors import FailedPrecondition, ResourceExhausted, Unavailable
from datamorph_gateway.status import status_code
from datamorph_gateway.workflows import (
    LambdaOrchestrator,
    WorkflowError,
    WorkflowRequest,
    WorkflowRunner,
    WorkflowTimeout,
)

from ..fixtures.aws import LambdaStandIn, Reply
from ..fixtures.roles import with_state_role
from ..fixtures.workflows import RUN_ID, runner_on, timeout_detail

FUNCTION = "datamorph-orchestrator"


def answer(body: Any, status: int = 200) -> bytes:
    return json.dumps({"statusCode": status, "body": body}).encode()


@pytest.fixture
def lambda_settings(lambda_stand_in: LambdaStandIn, moto_url: str, dynamodb_table: str) -> Settings:
    return Settings.from_flat(
        orchestrator_function=FUNCTION,
        lambda_endpoint_url=lambda_stand_in.url,
        dynamodb_endpoint_url=moto_url,
        dynamodb_table=dynamodb_table,
        orchestrator_read_timeout_s=10,
        orchestrator_connect_timeout_s=2,
        aws_timeout_s=5,
    )


@pytest.fixture
def unused_pool(database_url: str) -> Iterator[Database]:
    """The gateway's pool: in Lambda mode only the idempotency ledger uses it."""
    db = Database(with_state_role(DatabaseSettings(), database_url), LimitsSettings(), database_url)
    yield db
    db.close()


@pytest.fixture
def make_lambda_runner(
    lambda_settings: Settings, unused_pool: Database, aws_session: boto3.session.Session
) -> Iterator[Callable[..., WorkflowRunner]]:
    runners: list[WorkflowRunner] = []

    def make(**overrides: Any) -> WorkflowRunner:
        settings = lambda_settings.with_flat(**overrides)
        runner = runner_on(unused_pool, settings, session=aws_session)
        runners.append(runner)
        return runner

    yield make
    for runner in runners:
        runner.close()


def test_lambda_success(
    make_lambda_runner: Callable[..., WorkflowRunner], lambda_stand_in: LambdaStandIn
) -> None:
    runner = make_lambda_runner()
    assert isinstance(runner.orchestrator, LambdaOrchestrator)
    body = {
        "status": "completed",
        "target_table": "customer_order_summary",
        "validation_status": "pass",
        "message": "ETL pipeline executed and validated successfully",
    }
    lambda_stand_in.reply = Reply(payload=answer(body))
    result = runner.start(
        WorkflowRequest("Join customers and orders", ["customers", "sales.orders"], "summary")
    )
    [call] = lambda_stand_in.calls
    assert call.function_name == FUNCTION
    assert call.invocation_type == "RequestResponse"
    assert call.event == {
        "user_prompt": "Join customers and orders",
        "prompt": "Join customers and orders",
        "source_tables": ["customers", "sales.orders"],
        "target_table": "summary",
        "run_id": result.run_id,
    }
    assert RUN_ID.match(result.run_id)
    assert result.message == "ETL pipeline executed and validated successfully"
    assert result.details == body


def test_lambda_body_as_json_string_and_its_run_id_wins(
    make_lambda_runner: Callable[..., WorkflowRunner], lambda_stand_in: LambdaStandIn
) -> None:
    runner = make_lambda_runner()
    body = json.dumps({"run_id": "20250113_123456_abc123", "message": "done", "rows": 3})
    lambda_stand_in.reply = Reply(payload=answer(body))
    result = runner.start(WorkflowRequest("p"))
    assert result.run_id == "20250113_123456_abc123"
    assert result.run_id != lambda_stand_in.calls[0].event["run_id"]
    assert result.details == {"run_id": "20250113_123456_abc123", "message": "done", "rows": 3}


def test_lambda_status_500_is_an_error_with_the_body_message(
    make_lambda_runner: Callable[..., WorkflowRunner], lambda_stand_in: LambdaStandIn
) -> None:
    runner = make_lambda_runner()
    lambda_stand_in.reply = Reply(
        payload=answer(
            {
                "error": True,
                "message": "Workflow failed: Glue job failed",
                "error_type": "GlueError",
            },
            status=500,
        )
    )
    with pytest.raises(WorkflowError) as err:
        runner.start(WorkflowRequest("p"))
    assert status_code(err.value) == grpc.StatusCode.INTERNAL
    assert err.value.message == "Workflow failed: Glue job failed"
    assert err.value.metadata == {
        "run_id": lambda_stand_in.calls[0].event["run_id"],
        "status_code": "500",
        "error_type": "GlueError",
    }
    assert len(lambda_stand_in.calls) == 1


def test_lambda_function_error_never_shows_the_stack_trace(
    make_lambda_runner: Callable[..., WorkflowRunner], lambda_stand_in: LambdaStandIn
) -> None:
    runner = make_lambda_runner()
    lambda_stand_in.reply = Reply(
        function_error="Unhandled",
        payload=json.dumps(
            {
                "errorMessage": "name 'specs' is not defined",
                "errorType": "NameError",
                "requestId": str(uuid.uuid4()),
                "stackTrace": ['  File "/var/task/lambda_function.py", line 12, in handler\n'],
            }
        ).encode(),
    )
    with pytest.raises(WorkflowError) as err:
        runner.start(WorkflowRequest("p"))
    assert err.value.message == "the orchestrator failed: NameError: name 'specs' is not defined"
    assert err.value.reason == "ORCHESTRATOR_FUNCTION_ERROR"
    assert err.value.metadata["error_type"] == "NameError"
    assert "lambda_function.py" not in repr(err.value.__dict__)
    assert len(lambda_stand_in.calls) == 1


def test_lambda_payload_that_is_not_json(
    make_lambda_runner: Callable[..., WorkflowRunner], lambda_stand_in: LambdaStandIn
) -> None:
    runner = make_lambda_runner()
    lambda_stand_in.reply = Reply(payload=b"<html>Internal Server Error</html>")
    with pytest.raises(WorkflowError, match=r"^the orchestrator's answer is not JSON$") as err:
        runner.start(WorkflowRequest("p"))
    assert err.value.reason == "ORCHESTRATOR_BAD_ANSWER"
    lambda_stand_in.reply = Reply(payload=b'"a bare string"')
    with pytest.raises(WorkflowError, match="not a JSON object but a string"):
        runner.start(WorkflowRequest("p"))
    assert len(lambda_stand_in.calls) == 2


def test_lambda_read_timeout_answers_the_run_id_and_its_logs_so_far(
    make_lambda_runner: Callable[..., WorkflowRunner],
    lambda_stand_in: LambdaStandIn,
    moto_url: str,
    aws_session: boto3.session.Session,
    dynamodb_table: str,
) -> None:
    """The stand-in logs to DynamoDB like DataMorph's orchestrator, then never answers in time."""
    dynamodb = aws_session.client("dynamodb", endpoint_url=moto_url)

    def start_logging(call: Any) -> None:
        entries = [
            {"type": {"S": "start"}, "title": {"S": "Starting Orchestrator"}},
            {"type": {"S": "status"}, "title": {"S": "Step 1: Generating Specifications"}},
        ]
        dynamodb.put_item(
            TableName=dynamodb_table,
            Item={
                "run_id": {"S": call.event["run_id"]},
                "logs": {"L": [{"M": e} for e in entries]},
                "created_at": {"S": "2025-01-13T12:34:56.789Z"},
                "updated_at": {"S": "2025-01-13T12:34:57.000Z"},
            },
        )

    lambda_stand_in.on_invoke = start_logging
    lambda_stand_in.reply = Reply(delay_s=60)
    runner = make_lambda_runner(orchestrator_read_timeout_s=0.5)
    try:
        with pytest.raises(WorkflowTimeout) as err:
            runner.start(WorkflowRequest("p"))
    finally:
        dynamodb.close()
    [call] = lambda_stand_in.calls  # botocore did not retry after the timeout
    run_id = call.event["run_id"]
    assert status_code(err.value) == grpc.StatusCode.DEADLINE_EXCEEDED
    assert err.value.run_id == run_id
    assert err.value.metadata["run_id"] == run_id
    assert run_id in err.value.message
    detail = timeout_detail(err.value)
    assert detail["run_id"] == run_id
    assert detail["log_count"] == 2
    assert [e["type"] for e in detail["logs"]] == ["start", "status"]
    assert detail["logs_truncated"] is False


def test_lambda_own_timeout_is_a_deadline_too(
    make_lambda_runner: Callable[..., WorkflowRunner], lambda_stand_in: LambdaStandIn
) -> None:
    runner = make_lambda_runner()
    lambda_stand_in.reply = Reply(
        function_error="Unhandled",
        payload=json.dumps(
            {"errorType": "Sandbox.Timedout", "errorMessage": "Task timed out after 900.00 seconds"}
        ).encode(),
    )
    with pytest.raises(WorkflowTimeout, match=r"Task timed out after 900\.00 seconds") as err:
        runner.start(WorkflowRequest("p"))
    assert timeout_detail(err.value)["log_count"] == 0


def test_lambda_refusals_say_what_to_fix_and_are_not_retried(
    make_lambda_runner: Callable[..., WorkflowRunner], lambda_stand_in: LambdaStandIn
) -> None:
    runner = make_lambda_runner()
    lambda_stand_in.reply = Reply(
        status=404,
        error_type="ResourceNotFoundException",
        payload=b'{"Type": "User", "Message": "Function not found: '
        b'arn:aws:lambda:us-east-1:123456789012:function:datamorph-orchestrator"}',
    )
    with pytest.raises(FailedPrecondition, match="ORCHESTRATOR_FUNCTION") as err:
        runner.start(WorkflowRequest("p"))
    assert err.value.reason == "ORCHESTRATOR_MISCONFIGURED"
    assert "123456789012" not in err.value.message  # AWS's text goes to the server log only
    lambda_stand_in.reply = Reply(
        status=429, error_type="TooManyRequestsException", payload=b'{"message": "Rate exceeded"}'
    )
    with pytest.raises(ResourceExhausted, match="throttled"):
        runner.start(WorkflowRequest("p"))
    assert len(lambda_stand_in.calls) == 2


def test_lambda_unreachable(make_lambda_runner: Callable[..., WorkflowRunner]) -> None:
    runner = make_lambda_runner(lambda_endpoint_url="http://127.0.0.1:9")
    with pytest.raises(Unavailable, match="did not start") as err:
        runner.start(WorkflowRequest("p"))
    run_id = err.value.metadata["run_id"]
    assert RUN_ID.match(run_id)
    # The Lambda never ran, so never logged: the gateway wrote the run's end to DynamoDB.
    logs = runner.get_logs(run_id).logs
    assert [(e["type"], e["metadata"]["source"]) for e in logs] == [
        ("error", "gateway"),
        ("end", "gateway"),
    ]
    assert logs[0]["metadata"]["code"] == "UNAVAILABLE"
