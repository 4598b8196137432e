"""The development orchestrator on a real PostgreSQL: a query's result materialized into a table."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import psycopg2
import pytest

from datamorph_gateway.config import Settings
from datamorph_gateway.db.database import Database
from datamorph_gateway.errors import FailedPrecondition, GatewayError, InvalidArgument, QueryError
from datamorph_gateway.status import status_code
from datamorph_gateway.workflows import (
    WorkflowError,
    WorkflowRequest,
    WorkflowRunner,
)

from ..fixtures.roles import with_state_role
from ..fixtures.workflows import RUN_ID, runner_on


@pytest.fixture
def dev_runner(seeded_database: str) -> Iterator[WorkflowRunner]:
    """The embedded default: dev orchestrator, logs in PostgreSQL, the gateway's own pool."""
    settings = Settings.from_flat(database_url=seeded_database)
    db = Database(
        with_state_role(settings.database, seeded_database), settings.limits, seeded_database
    )
    runner = runner_on(db, settings)
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


@pytest.mark.parametrize(
    "prompt",
    [
        "Join customers and orders and compute the total per customer",  # prose
        "Select the best customers for me",  # prose that starts like SQL
        "DELETE FROM orders",
        "SELECT 1; SELECT 2",
        "WITH d AS (DELETE FROM orders WHERE false RETURNING id) SELECT id FROM d",
        "SELECT FROM customers",  # no columns
        "SELECT 1\x00",
    ],
)
def test_every_refused_prompt_says_what_is_accepted_and_how_to_configure_more(
    dev_runner: WorkflowRunner, prompt: str
) -> None:
    target = f"dev_{uuid.uuid4().hex[:8]}"
    with pytest.raises(GatewayError) as err:
        dev_runner.start(WorkflowRequest(prompt, target_table=target))
    assert "materializes a single SQL query (SELECT, WITH, VALUES or TABLE)" in err.value.message
    assert "set ORCHESTRATOR_FUNCTION to a DataMorph orchestrator Lambda" in err.value.message
    assert "ORCHESTRATOR_HANDLER" in err.value.message


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
