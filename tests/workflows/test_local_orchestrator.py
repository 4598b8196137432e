"""The local adapter: a handler in this process with a Lambda-like context, and which
orchestrator the settings choose."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from datamorph_gateway.config import (
    AwsSettings,
    DatabaseSettings,
    LimitsSettings,
    WorkflowSettings,
)
from datamorph_gateway.db.database import Database
from datamorph_gateway.errors import ConfigError
from datamorph_gateway.logstore import PostgresLogStore
from datamorph_gateway.status import status_code
from datamorph_gateway.workflows import (
    DEV_HANDLER,
    LocalContext,
    LocalOrchestrator,
    WorkflowError,
    WorkflowRequest,
    create_orchestrator,
)
from datamorph_gateway.workflows.handler_orchestrator import load_handler

from ..fixtures.roles import with_state_role

NOT_CALLABLE = 42


def echo_handler(event: dict[str, Any], context: LocalContext) -> dict[str, Any]:
    """A handler importable as ``tests.workflows.test_local_orchestrator:echo_handler``."""
    return {"statusCode": 200, "body": {"message": "echo", "event": event}}


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
    assert load_handler("tests.workflows.test_local_orchestrator:echo_handler") is echo_handler
    assert load_handler("tests.workflows.test_local_orchestrator.echo_handler") is echo_handler
    cases = {
        "nothing": "must look like package.module:function",
        "no_such_module_here:handler": "cannot import no_such_module_here: ModuleNotFoundError",
        "tests.workflows.test_local_orchestrator:missing": "has no attribute 'missing'",
        "tests.workflows.test_local_orchestrator:NOT_CALLABLE": "is not callable",
    }
    for spec, message in cases.items():
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_handler(spec)


def test_orchestrator_choice(database_url: str) -> None:
    db = Database(with_state_role(DatabaseSettings(), database_url), LimitsSettings(), database_url)
    store = PostgresLogStore(db.roles.own_tables)
    try:
        dev = create_orchestrator(WorkflowSettings(), AwsSettings(), store, db.pool)
        assert isinstance(dev, LocalOrchestrator)
        assert dev.name == DEV_HANDLER
        mine = create_orchestrator(
            WorkflowSettings(
                orchestrator_handler="tests.workflows.test_local_orchestrator:echo_handler"
            ),
            AwsSettings(),
            store,
            db.pool,
        )
        assert isinstance(mine, LocalOrchestrator)
        assert mine.name == "tests.workflows.test_local_orchestrator:echo_handler"
        nope = WorkflowSettings(orchestrator_handler="nope:x")
        with pytest.raises(ConfigError, match="ORCHESTRATOR_HANDLER"):
            create_orchestrator(nope, AwsSettings(), store, db.pool)
    finally:
        db.close()


def test_a_handlers_session_changes_do_not_reach_other_requests(database_url: str) -> None:
    db = Database(DatabaseSettings(db_pool_min=0, db_pool_max=1), LimitsSettings(), database_url)

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
