"""Workflows: the Lambda adapter against a stand-in Invoke endpoint, the local adapter, the
development orchestrator on a real PostgreSQL, and the runner's ids, keys and limits."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import boto3
import grpc
import psycopg2
import pytest
from google.protobuf import json_format, struct_pb2

from datamorph_gateway.config import Settings, load_settings
from datamorph_gateway.db.database import Database
from datamorph_gateway.errors import (
    ConfigError,
    DeadlineExceeded,
    FailedPrecondition,
    GatewayError,
    InvalidArgument,
    NotFound,
    QueryError,
    ResourceExhausted,
    Unavailable,
)
from datamorph_gateway.logstore import LogStore, PostgresLogStore, RunLog, make_entry
from datamorph_gateway.status import google_status, status_code
from datamorph_gateway.workflows import (
    DEV_HANDLER,
    LambdaOrchestrator,
    LocalContext,
    LocalOrchestrator,
    WorkflowError,
    WorkflowRequest,
    WorkflowRunner,
    WorkflowTimeout,
    create_orchestrator,
    create_runner,
    new_run_id,
)
from datamorph_gateway.workflows.handler_orchestrator import load_handler

from .fixtures.aws import LambdaStandIn, Reply

RUN_ID = re.compile(r"^\d{8}_\d{6}_[0-9a-f]{8}$")
FUNCTION = "datamorph-orchestrator"
NOT_CALLABLE = 42


def answer(body: Any, status: int = 200) -> bytes:
    return json.dumps({"statusCode": status, "body": body}).encode()


def echo_handler(event: dict[str, Any], context: LocalContext) -> dict[str, Any]:
    """A handler importable as ``tests.test_workflows:echo_handler``."""
    return {"statusCode": 200, "body": {"message": "echo", "event": event}}


def timeout_detail(err: WorkflowTimeout) -> dict[str, Any]:
    [packed] = [d for d in google_status(err, "-").details if d.Is(struct_pb2.Struct.DESCRIPTOR)]
    detail = struct_pb2.Struct()
    packed.Unpack(detail)
    return json_format.MessageToDict(detail)


# -- run ids ------------------------------------------------------------------------------


def test_run_ids_are_utc_time_and_eight_hex_digits() -> None:
    moment = dt.datetime(2025, 1, 13, 14, 34, 56, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    run_id = new_run_id(moment)
    assert run_id.startswith("20250113_123456_")
    assert RUN_ID.match(run_id)
    assert RUN_ID.match(new_run_id())
    assert new_run_id() != new_run_id()


# -- AWS Lambda, against the stand-in Invoke endpoint ------------------------------------------


@pytest.fixture
def lambda_settings(lambda_stand_in: LambdaStandIn, moto_url: str, dynamodb_table: str) -> Settings:
    return Settings(
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
    db = Database(Settings(), database_url)
    yield db
    db.close()


@pytest.fixture
def make_lambda_runner(
    lambda_settings: Settings, unused_pool: Database, aws_session: boto3.session.Session
) -> Iterator[Callable[..., WorkflowRunner]]:
    runners: list[WorkflowRunner] = []

    def make(**overrides: Any) -> WorkflowRunner:
        settings = dataclasses.replace(lambda_settings, **overrides)
        runner = create_runner(settings, unused_pool.pool, session=aws_session)
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


def test_timeout_details_keep_the_newest_entries_that_fit() -> None:
    """Status details travel in a trailer: a long run's logs are cut to the newest ones."""
    entries = [
        {"timestamp": f"t{i}", "type": "info", "title": f"entry {i}", "description": "d",
         "metadata": {"blob": "x" * 500}}
        for i in range(50)
    ]  # fmt: skip
    run_log = RunLog("20250113_123456_0000abcd", entries, "c", "u")
    err = WorkflowTimeout("late", run_id=run_log.run_id, run_log=run_log)
    detail = timeout_detail(err)
    assert detail["log_count"] == 50
    assert detail["logs_truncated"] is True
    titles = [e["title"] for e in detail["logs"]]
    assert titles[-1] == "entry 49"
    assert titles == [f"entry {i}" for i in range(50 - len(titles), 50)]
    # Base64 in grpc-status-details-bin, it stays under gRPC's default 8 KiB metadata limit.
    [packed] = [d for d in google_status(err, "-").details if d.Is(struct_pb2.Struct.DESCRIPTOR)]
    assert len(packed.value) * 4 / 3 < 8192


# -- the local orchestrator -----------------------------------------------------------------


def local(handler: Callable[..., Any]) -> LocalOrchestrator:
    return LocalOrchestrator(handler, name="tests.handler")


def invoke(handler: Callable[..., Any], timeout_s: float = 30) -> Any:
    event = WorkflowRequest("SELECT 1", ["t"], "x").event("20250113_123456_0000abcd")
    return local(handler).invoke(event, timeout_s=timeout_s)


def test_local_handler_gets_a_lambda_like_context_and_a_copy_of_the_event() -> None:
    seen: dict[str, Any] = {}

    def handler(event: dict[str, Any], context: LocalContext) -> dict[str, Any]:
        seen["remaining"] = context.get_remaining_time_in_millis()
        seen["request_id"] = context.aws_request_id
        seen["name"] = context.function_name
        seen["arn"] = context.invoked_function_arn
        seen["event"] = dict(event)
        event["prompt"] = "changed by the handler"
        return {"statusCode": 200, "body": {"message": "fine", "n": 1}}

    result = invoke(handler, timeout_s=30)
    assert 0 < seen["remaining"] <= 30_000
    assert uuid.UUID(seen["request_id"])
    assert seen["name"] == "tests.handler"
    assert seen["arn"].endswith(":function:tests-handler")
    assert seen["event"]["run_id"] == "20250113_123456_0000abcd"
    assert (result.run_id, result.message, result.details) == (
        "20250113_123456_0000abcd",
        "fine",
        {"message": "fine", "n": 1},
    )


def test_local_handler_exception_is_a_function_error() -> None:
    def handler(event: dict[str, Any], context: LocalContext) -> Any:
        raise ValueError("the specs are empty")

    with pytest.raises(WorkflowError) as err:
        invoke(handler)
    assert err.value.message == "the orchestrator failed: ValueError: the specs are empty"
    assert err.value.metadata["error_type"] == "ValueError"
    assert err.value.__cause__ is None


def test_local_handler_answers_that_lambda_would_refuse_or_map() -> None:
    with pytest.raises(WorkflowError, match="cannot be sent as JSON"):
        invoke(lambda event, context: {"statusCode": 200, "body": object()})
    plain = invoke(lambda event, context: {"message": "no envelope", "rows": 2})
    assert plain.details == {"message": "no envelope", "rows": 2}
    text = invoke(lambda event, context: {"statusCode": 200, "body": "not json"})
    assert text.details == {"message": "not json"}


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, grpc.StatusCode.INVALID_ARGUMENT),
        (404, grpc.StatusCode.NOT_FOUND),
        (409, grpc.StatusCode.ALREADY_EXISTS),
        (418, grpc.StatusCode.FAILED_PRECONDITION),
        (429, grpc.StatusCode.RESOURCE_EXHAUSTED),
        (502, grpc.StatusCode.INTERNAL),
        (503, grpc.StatusCode.UNAVAILABLE),
    ],
)
def test_status_codes_map_to_grpc_codes(status: int, code: grpc.StatusCode) -> None:
    with pytest.raises(WorkflowError) as err:
        invoke(lambda event, context: {"statusCode": status, "body": {"message": "nope"}})
    assert (status_code(err.value), err.value.message) == (code, "nope")


def test_handler_specs() -> None:
    assert load_handler("tests.test_workflows:echo_handler") is echo_handler
    assert load_handler("tests.test_workflows.echo_handler") is echo_handler
    cases = {
        "nothing": "must look like package.module:function",
        "no_such_module_here:handler": "cannot import no_such_module_here: ModuleNotFoundError",
        "tests.test_workflows:missing": "has no attribute 'missing'",
        "tests.test_workflows:NOT_CALLABLE": "is not callable",
    }
    for spec, message in cases.items():
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_handler(spec)


def test_orchestrator_choice(database_url: str) -> None:
    db = Database(Settings(), database_url)
    store = PostgresLogStore(db.pool)
    try:
        dev = create_orchestrator(Settings(), store, db.pool)
        assert isinstance(dev, LocalOrchestrator)
        assert dev.name == DEV_HANDLER
        mine = create_orchestrator(
            Settings(orchestrator_handler="tests.test_workflows:echo_handler"), store, db.pool
        )
        assert isinstance(mine, LocalOrchestrator)
        assert mine.name == "tests.test_workflows:echo_handler"
        with pytest.raises(ConfigError, match="ORCHESTRATOR_HANDLER"):
            create_orchestrator(Settings(orchestrator_handler="nope:x"), store, db.pool)
    finally:
        db.close()


def test_a_handlers_session_changes_do_not_reach_other_requests(database_url: str) -> None:
    db = Database(Settings(db_pool_min=0, db_pool_max=1), database_url)

    def handler(event: dict[str, Any], context: LocalContext) -> dict[str, Any]:
        with context.connection() as conn, conn.cursor() as cur:
            cur.execute("SET search_path = nowhere; SELECT pg_advisory_lock(77)")
            conn.commit()
        return {"statusCode": 200, "body": {"message": "done"}}

    try:
        orchestrator = LocalOrchestrator(handler, name="tests.handler", pool=db.pool)
        event = WorkflowRequest("SELECT 1", ["t"], "x").event("20250113_123456_0000abcd")
        assert orchestrator.invoke(event, timeout_s=30).message == "done"
        with db.pool.connection() as conn, conn.cursor() as cur:  # the same, only connection
            cur.execute(
                "SELECT current_setting('search_path'),"
                " (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 77)"
            )
            assert cur.fetchone() == ('"$user", public', 0)
    finally:
        db.close()


# -- the development orchestrator, on the session's PostgreSQL ------------------------------------


@pytest.fixture
def dev_runner(seeded_database: str) -> Iterator[WorkflowRunner]:
    """The embedded default: dev orchestrator, logs in PostgreSQL, the gateway's own pool."""
    settings = Settings(database_url=seeded_database)
    db = Database(settings, seeded_database)
    runner = create_runner(settings, db.pool)
    yield runner
    runner.close()
    db.close()


def fetch(dsn: str, query: str, *args: Any) -> list[tuple[Any, ...]]:
    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(query, args)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


def exists(dsn: str, name: str) -> bool:
    return bool(fetch(dsn, "SELECT to_regclass(%s) IS NOT NULL", name)[0][0])


def log_types(runner: WorkflowRunner, run_id: str) -> list[str]:
    return [e["type"] for e in runner.get_logs(run_id).logs]


def test_dev_materializes_a_select(dev_runner: WorkflowRunner, seeded_database: str) -> None:
    target = f"dev_{uuid.uuid4().hex[:8]}"
    prompt = "SELECT id, name, country FROM customers WHERE id <= 5 ORDER BY id"
    result = dev_runner.start(WorkflowRequest(prompt, ["customers"], target))
    assert RUN_ID.match(result.run_id)
    assert result.message == f"Query result materialized into public.{target} (5 rows)"
    assert result.details == {
        "status": "completed",
        "run_id": result.run_id,
        "target_table": f"public.{target}",
        "row_count": 5,
        "columns": [
            {"name": "id", "type": "bigint"},
            {"name": "name", "type": "text"},
            {"name": "country", "type": "text"},
        ],
        "validation_status": "pass",
        "message": result.message,
    }
    expected = fetch(seeded_database, prompt)
    assert fetch(seeded_database, f"SELECT * FROM {target} ORDER BY id") == expected

    logs = dev_runner.get_logs(result.run_id)
    assert [e["type"] for e in logs.logs] == ["start", "status", "result", "success", "end"]
    start, status, made, success, end = logs.logs
    assert start["title"] == "Starting Development Orchestrator"
    assert start["metadata"] == {"source_tables": ["customers"], "target_table": target}
    assert status["metadata"] == {"query": prompt}
    assert made["metadata"]["row_count"] == 5
    assert success["metadata"]["validation_status"] == "pass"
    assert end["metadata"]["workflow_status"] == "completed"
    assert isinstance(end["metadata"]["execution_time_seconds"], (int, float))


def test_dev_with_query_into_a_quoted_schema(
    dev_runner: WorkflowRunner, seeded_database: str
) -> None:
    target = f'"Mixed Schema"."Dev {uuid.uuid4().hex[:6]}"'
    prompt = (
        "WITH t AS (SELECT status, count(*) AS n FROM orders GROUP BY status) "
        "SELECT * FROM t ORDER BY status;"
    )
    result = dev_runner.start(WorkflowRequest(prompt, target_table=target))
    assert result.details["target_table"] == target
    assert result.details["row_count"] == 5
    assert fetch(seeded_database, f"SELECT count(*) FROM {target}") == [(5,)]


def test_dev_prompt_text_is_sent_as_written(
    dev_runner: WorkflowRunner, seeded_database: str
) -> None:
    """No client-side interpolation: %, braces and dollar quotes reach the server unchanged."""
    target = f"dev_{uuid.uuid4().hex[:8]}"
    prompt = "SELECT 'a%b' AS pct, '{}' AS braces, $q$it's$q$ AS dollar -- trailing comment"
    result = dev_runner.start(WorkflowRequest(prompt, target_table=target))
    assert result.details["row_count"] == 1
    assert fetch(seeded_database, f"SELECT * FROM {target}") == [("a%b", "{}", "it's")]


def test_dev_existing_target_is_refused_and_left_alone(
    dev_runner: WorkflowRunner, seeded_database: str
) -> None:
    before = fetch(seeded_database, "SELECT count(*) FROM customers")
    with pytest.raises(WorkflowError, match="'customers' already exists") as err:
        dev_runner.start(WorkflowRequest("SELECT 1 AS x", target_table="customers"))
    assert status_code(err.value) == grpc.StatusCode.ALREADY_EXISTS
    assert err.value.reason == "TARGET_TABLE_EXISTS"
    assert fetch(seeded_database, "SELECT count(*) FROM customers") == before
    run_id = err.value.metadata["run_id"]
    assert log_types(dev_runner, run_id) == ["start", "status", "error", "end"]
    error = dev_runner.get_logs(run_id).logs[2]
    assert error["metadata"]["error_type"] == "TARGET_TABLE_EXISTS"


def test_dev_failure_mid_query_leaves_no_table(
    dev_runner: WorkflowRunner, seeded_database: str
) -> None:
    target = f"dev_{uuid.uuid4().hex[:8]}"
    with pytest.raises(QueryError, match="division by zero") as err:
        dev_runner.start(
            WorkflowRequest("SELECT 1 / (id - 900) AS x FROM customers", target_table=target)
        )
    assert err.value.sqlstate == "22012"
    assert not exists(seeded_database, target)
    assert log_types(dev_runner, err.value.metadata["run_id"])[-2:] == ["error", "end"]


def test_dev_missing_schema(dev_runner: WorkflowRunner) -> None:
    with pytest.raises(GatewayError) as err:
        dev_runner.start(WorkflowRequest("SELECT 1 AS x", target_table="no_such_schema.t"))
    assert status_code(err.value) == grpc.StatusCode.NOT_FOUND


def test_dev_natural_language_needs_an_orchestrator(dev_runner: WorkflowRunner) -> None:
    prompt = "Join customers and orders and compute the total order amount per customer"
    with pytest.raises(FailedPrecondition) as err:
        dev_runner.start(WorkflowRequest(prompt, target_table="totals"))
    assert err.value.reason == "ORCHESTRATOR_NOT_CONFIGURED"
    assert "natural-language prompts need an orchestrator" in err.value.message
    assert "ORCHESTRATOR_FUNCTION" in err.value.message
    assert "ORCHESTRATOR_HANDLER" in err.value.message
    # Refused before it logged anything, but its run id went out: the gateway logs the refusal.
    logs = dev_runner.get_logs(err.value.metadata["run_id"]).logs
    assert [e["type"] for e in logs] == ["error", "end"]
    assert logs[0]["metadata"]["error_type"] == "ORCHESTRATOR_NOT_CONFIGURED"
    assert logs[0]["description"] == err.value.message
    assert logs[1]["metadata"]["workflow_status"] == "failed"


def test_dev_prose_that_starts_like_sql(dev_runner: WorkflowRunner, seeded_database: str) -> None:
    target = f"dev_{uuid.uuid4().hex[:8]}"
    with pytest.raises(FailedPrecondition, match="syntax error") as err:
        dev_runner.start(WorkflowRequest("Select the best customers for me", target_table=target))
    assert "natural-language prompts need an orchestrator" in err.value.message
    assert not exists(seeded_database, target)


@pytest.mark.parametrize(
    ("prompt", "what"),
    [
        ("DELETE FROM orders", "a DELETE statement"),
        ("SELECT 1; SELECT 2", "2 statements"),
    ],
)
def test_dev_only_runs_one_query(dev_runner: WorkflowRunner, prompt: str, what: str) -> None:
    with pytest.raises(FailedPrecondition, match=what) as err:
        dev_runner.start(WorkflowRequest(prompt, target_table="t"))
    assert err.value.reason == "NOT_A_QUERY"


def test_dev_refuses_a_query_that_modifies_data(
    dev_runner: WorkflowRunner, seeded_database: str
) -> None:
    scratch = f"scratch_{uuid.uuid4().hex[:8]}"
    target = f"dev_{uuid.uuid4().hex[:8]}"
    fetch(seeded_database, f"CREATE TABLE {scratch} AS SELECT generate_series(1, 3) AS n")
    prompt = f"WITH d AS (DELETE FROM {scratch} RETURNING n) SELECT n FROM d"
    with pytest.raises(FailedPrecondition, match="modifies data"):
        dev_runner.start(WorkflowRequest(prompt, target_table=target))
    assert fetch(seeded_database, f"SELECT count(*) FROM {scratch}") == [(3,)]
    assert not exists(seeded_database, target)


def test_dev_needs_a_target(dev_runner: WorkflowRunner) -> None:
    with pytest.raises(InvalidArgument, match="target_table: is required") as err:
        dev_runner.start(WorkflowRequest("SELECT 1"))
    assert err.value.violations[0].field == "target_table"


# -- the runner: keys, limits, deadlines, following --------------------------------------------


class Gate:
    """A handler that logs, then blocks until released; it counts its calls."""

    def __init__(self, error: Exception | None = None) -> None:
        self.calls: list[dict[str, Any]] = []
        self.entered = threading.Semaphore(0)
        self.release = threading.Event()
        self.error = error

    def __call__(self, event: dict[str, Any], context: LocalContext) -> dict[str, Any]:
        self.calls.append(event)
        context.append_log(make_entry("start", "Starting", "waiting at the gate"))
        self.entered.release()
        if not self.release.wait(30):
            raise TimeoutError("the test never opened the gate")
        context.append_log(make_entry("end", "Completed", "through the gate"))
        if self.error is not None:
            raise self.error
        return {"statusCode": 200, "body": {"message": f"done {event['prompt']}"}}

    def wait_entered(self, count: int = 1) -> None:
        for _ in range(count):
            assert self.entered.acquire(timeout=10), "the handler was never called"


@pytest.fixture
def log_store(database_url: str) -> Iterator[LogStore]:
    db = Database(Settings(), database_url)
    store = PostgresLogStore(db.pool, poll_interval_s=0.05)
    store.ensure_schema()
    yield store
    db.close()


@pytest.fixture
def make_runner(log_store: LogStore) -> Iterator[Callable[..., WorkflowRunner]]:
    runners: list[tuple[WorkflowRunner, Gate]] = []

    def make(gate: Gate, **overrides: Any) -> WorkflowRunner:
        settings = dataclasses.replace(Settings(workflow_max_concurrent=2), **overrides)
        orchestrator = LocalOrchestrator(gate, name="gate", log_store=log_store)
        runner = WorkflowRunner(settings, orchestrator, log_store)
        runners.append((runner, gate))
        return runner

    yield make
    for runner, gate in runners:
        gate.release.set()
        runner.close(timeout_s=10)


@pytest.fixture
def background() -> Iterator[Callable[..., Future[Any]]]:
    with ThreadPoolExecutor(8) as pool:
        yield pool.submit


def test_same_key_while_running_waits_for_the_first_run(
    make_runner: Callable[..., WorkflowRunner], background: Callable[..., Future[Any]]
) -> None:
    gate = Gate()
    runner = make_runner(gate)
    request = WorkflowRequest("SELECT 1", target_table="t", idempotency_key="key-1")
    first = background(runner.start, request)
    gate.wait_entered()
    joined = threading.Event()
    second = background(runner.start, request, on_run_id=lambda run_id: joined.set())
    assert joined.wait(10)
    gate.release.set()
    assert first.result(10) == second.result(10)
    assert len(gate.calls) == 1
    # Finished: the answer comes back at once, still without another run.
    assert runner.start(request) == first.result()
    assert len(gate.calls) == 1
    with pytest.raises(InvalidArgument, match="idempotency_key: was already used"):
        runner.start(dataclasses.replace(request, prompt="SELECT 2"))
    # Without a key every request is a run of its own.
    runner.start(WorkflowRequest("SELECT 1"))
    runner.start(WorkflowRequest("SELECT 1"))
    assert len(gate.calls) == 3


def test_same_key_replays_the_first_runs_error(
    make_runner: Callable[..., WorkflowRunner], background: Callable[..., Future[Any]]
) -> None:
    gate = Gate(error=RuntimeError("the validator rejected the table"))
    runner = make_runner(gate)
    request = WorkflowRequest("SELECT 1", idempotency_key="key-err")
    first = background(runner.start, request)
    gate.wait_entered()
    gate.release.set()
    with pytest.raises(WorkflowError) as one:
        first.result(10)
    with pytest.raises(WorkflowError) as two:
        runner.start(request)
    assert one.value is not two.value
    assert one.value.message == two.value.message
    assert "the validator rejected the table" in two.value.message
    assert one.value.metadata["run_id"] == two.value.metadata["run_id"]
    assert len(gate.calls) == 1


def test_beyond_the_limit_is_resource_exhausted_at_once(
    make_runner: Callable[..., WorkflowRunner], background: Callable[..., Future[Any]]
) -> None:
    gate = Gate()
    runner = make_runner(gate, workflow_max_concurrent=2)
    running = [background(runner.start, WorkflowRequest(f"SELECT {i}")) for i in range(2)]
    gate.wait_entered(2)
    refused = WorkflowRequest("SELECT 3", idempotency_key="key-3")
    # timeout_s: had it been admitted, it would fail with a deadline, not hang.
    with pytest.raises(ResourceExhausted, match="2 workflows are already running") as err:
        runner.start(refused, timeout_s=5)
    assert err.value.reason == "WORKFLOWS_EXHAUSTED"
    assert len(gate.calls) == 2
    gate.release.set()
    for future in running:
        future.result(10)
    # The refused request did not take its key: retrying it runs it.
    assert runner.start(refused).message == "done SELECT 3"


def test_waiting_callers_are_bounded(
    make_runner: Callable[..., WorkflowRunner], background: Callable[..., Future[Any]]
) -> None:
    gate = Gate()
    runner = make_runner(gate, workflow_max_concurrent=1)
    request = WorkflowRequest("SELECT 1", idempotency_key="key-w")
    first = background(runner.start, request)
    gate.wait_entered()
    joined = threading.Event()
    second = background(runner.start, request, on_run_id=lambda run_id: joined.set())
    assert joined.wait(10)
    with pytest.raises(ResourceExhausted, match="2 StartWorkflow calls are already waiting"):
        runner.start(request, timeout_s=5)
    gate.release.set()
    assert first.result(10) == second.result(10)


def test_the_callers_deadline_ends_the_wait_not_the_run(
    make_runner: Callable[..., WorkflowRunner],
) -> None:
    gate = Gate()
    runner = make_runner(gate)
    request = WorkflowRequest("SELECT 1", idempotency_key="key-d")
    with pytest.raises(WorkflowTimeout) as err:
        runner.start(request, timeout_s=0.3)
    run_id = err.value.run_id
    assert err.value.metadata["run_id"] == run_id
    detail = timeout_detail(err.value)
    assert [e["title"] for e in detail["logs"]] == ["Starting"]
    assert runner.is_running(run_id)
    gate.release.set()
    assert runner.start(request).message == "done SELECT 1"
    assert len(gate.calls) == 1
    assert not runner.is_running(run_id)
    with pytest.raises(DeadlineExceeded, match="before the workflow could start"):
        runner.start(WorkflowRequest("SELECT 2"), timeout_s=0)
    assert len(gate.calls) == 1


def test_a_cancelled_caller_stops_waiting(make_runner: Callable[..., WorkflowRunner]) -> None:
    gate = Gate()
    runner = make_runner(gate)
    request = WorkflowRequest("SELECT 1", idempotency_key="key-c")
    with pytest.raises(WorkflowError) as err:
        runner.start(request, should_stop=lambda: True)
    assert status_code(err.value) == grpc.StatusCode.CANCELLED
    gate.release.set()
    assert runner.start(request).message == "done SELECT 1"


def test_watch_follows_a_run_until_its_invocation_ends(
    make_runner: Callable[..., WorkflowRunner], background: Callable[..., Future[Any]]
) -> None:
    gate = Gate()
    runner = make_runner(gate)
    started = threading.Event()
    run_ids: list[str] = []

    def remember(run_id: str) -> None:
        run_ids.append(run_id)
        started.set()

    outcome = background(runner.start, WorkflowRequest("SELECT 1"), on_run_id=remember)
    assert started.wait(10)
    watched = background(lambda: list(runner.watch(run_ids[0], timeout_s=20)))
    gate.wait_entered()
    gate.release.set()
    outcome.result(10)
    events = watched.result(20)
    assert [(e.index, e.entry["title"]) for e in events] == [(0, "Starting"), (1, "Completed")]
    # Afterwards the run is read from the store, and ends at its terminal entry.
    assert [e.index for e in runner.watch(run_ids[0], timeout_s=20)] == [0, 1]
    with pytest.raises(NotFound):
        next(runner.watch("20250113_123456_ffffffff", timeout_s=20))


def test_a_closed_runner_starts_nothing(make_runner: Callable[..., WorkflowRunner]) -> None:
    gate = Gate()
    runner = make_runner(gate)
    runner.close()
    with pytest.raises(Unavailable, match="shutting down"):
        runner.start(WorkflowRequest("SELECT 1"))
    assert gate.calls == []


# -- settings -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"WORKFLOW_MAX_CONCURRENT": "16"}, "WORKFLOW_MAX_CONCURRENT must be less than half"),
        ({"WORKFLOW_MAX_CONCURRENT": "0"}, "WORKFLOW_MAX_CONCURRENT must be positive"),
        ({"LOG_STORE": "s3"}, "LOG_STORE must be one of"),
        ({"ORCHESTRATOR_FUNCTION": "f", "ORCHESTRATOR_HANDLER": "m:f"}, "not both"),
        ({"LAMBDA_ENDPOINT_URL": "localhost:4566"}, "LAMBDA_ENDPOINT_URL must be an http"),
        ({"ORCHESTRATOR_READ_TIMEOUT_S": "-1"}, "ORCHESTRATOR_READ_TIMEOUT_S must be positive"),
    ],
)
def test_workflow_settings_are_checked(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(environ)


def test_workflow_settings_defaults() -> None:
    s = load_settings({})
    assert (s.orchestrator_read_timeout_s, s.orchestrator_connect_timeout_s) == (950.0, 10.0)
    assert (s.workflow_max_concurrent, s.log_store) == (8, "auto")
    assert load_settings({"WORKFLOW_MAX_CONCURRENT": "3"}).workflow_max_concurrent == 3
