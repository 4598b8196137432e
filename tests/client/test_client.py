"""The client a Lambda installs: typed calls, decoded errors, health, the example handler."""

from __future__ import annotations

import importlib.util
import json
import sys
import uuid
from decimal import Decimal
from pathlib import Path

import grpc
import pytest
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2

from datamorph_client import (
    GatewayClient,
    GatewayError,
    HealthReport,
    LogEntry,
    LogEvent,
    RowBatch,
    RunLogs,
)
from datamorph_client.errors import from_rpc_error
from datamorph_gateway.app import Gateway
from datamorph_gateway.errors import ResourceExhausted
from datamorph_gateway.logstore.base import RunLog
from datamorph_gateway.status import to_status
from datamorph_gateway.workflows.base import WorkflowTimeout

from ..fixtures.envoy import Sidecar
from ..fixtures.gateway import GatewayFactory

EXAMPLE = Path(__file__).parents[2] / "clients" / "python" / "examples" / "lambda_handler.py"


def test_health_reports_healthy(client: GatewayClient) -> None:
    report = client.health()
    assert isinstance(report, HealthReport)
    assert report.status == "healthy"
    assert report.healthy
    assert report.checks["database"].status == "healthy"
    assert report.version


def test_unhealthy_report_is_returned_not_raised(make_gateway: GatewayFactory) -> None:
    gateway = make_gateway(
        database_url="postgresql://postgres@127.0.0.1:1/nowhere",
        db_pool_min=0,
        db_connect_attempts=1,
        db_connect_timeout_s=1,
    )
    with GatewayClient(gateway.address) as c:
        report = c.health()
        assert report.status == "unhealthy"
        assert not report.healthy
        assert report.checks["database"].message == "the database is unavailable"
        with pytest.raises(GatewayError) as err:
            c.get_data(["customers"])
        assert err.value.code == grpc.StatusCode.UNAVAILABLE
        assert err.value.http_status == 503


def test_answers_keep_the_order_the_tables_were_asked_in(client: GatewayClient) -> None:
    assert list(client.get_schemas(["orders", "customers"])) == ["orders", "customers"]
    assert list(client.get_schemas(["customers", "orders"])) == ["customers", "orders"]
    assert list(client.get_data(["orders", "customers"], limit=1)) == ["orders", "customers"]


def test_metadata_hook_and_api_key_are_sent(gateway: Gateway) -> None:
    sent: list[list[tuple[str, str]]] = []

    def hook() -> list[tuple[str, str]]:
        md = [("x-request-id", "from-hook-1")]
        sent.append(md)
        return md

    with GatewayClient(gateway.address, api_key="k-123", metadata_hook=hook) as c:
        with pytest.raises(GatewayError) as err:
            c.get_schemas(["nope_not_here"])
        assert err.value.request_id == "from-hook-1"
        assert err.value.code == grpc.StatusCode.NOT_FOUND
    assert sent


def test_tls_channel_to_a_plaintext_server_fails_cleanly(gateway: Gateway) -> None:
    with (
        GatewayClient(gateway.address, tls=True, timeout_s=2) as c,
        pytest.raises(GatewayError) as err,
    ):
        c.health()
    assert err.value.code == grpc.StatusCode.UNAVAILABLE


def test_example_lambda_handler(gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_ADDRESS", gateway.address)
    spec = importlib.util.spec_from_file_location("example_lambda_handler", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "example_lambda_handler", module)
    spec.loader.exec_module(module)
    try:
        answer = module.handler({"tables": ["orders"], "limit": 3}, None)
        assert answer["statusCode"] == 200
        orders = json.loads(answer["body"])["orders"]
        assert orders["primary_keys"] == ["id"]
        assert orders["columns"][0] == {"name": "id", "type": "bigint", "nullable": False}
        assert len(orders["sample"]) == 3
        # Decimals and datetimes go back to the contract's text.
        assert all(isinstance(r["amount"], str | None) for r in orders["sample"])
        assert all("T" in r["ordered_at"] for r in orders["sample"])
        bad = module.handler({"tables": ["bad name!"]}, None)
        assert bad["statusCode"] == 400
        missing = module.handler({"tables": ["no_such_table"]}, None)
        assert missing["statusCode"] == 404
        assert json.loads(missing["body"])["reason"] == "TABLE_NOT_FOUND"
    finally:
        module.client.close()


def test_stream_query_yields_batches(client: GatewayClient) -> None:
    batches = list(
        client.stream_query("SELECT g AS n FROM generate_series(1, $1) g", [7], batch_rows=3)
    )
    assert all(isinstance(b, RowBatch) for b in batches)
    assert [len(b.rows) for b in batches] == [3, 3, 1]
    assert [b.rows_sent for b in batches] == [3, 6, 7]
    assert batches[2].columns[0].type == "int4"
    assert batches[0].rows[0] == {"n": 1}
    assert type(batches[0].rows[0]["n"]) is int


def test_stream_query_rows_as_arrays(client: GatewayClient) -> None:
    [batch] = client.stream_query("SELECT 1::int8 AS a, 2.5::numeric AS a", row_format="array")
    assert batch.rows == [[1, Decimal("2.5")]]
    assert [c.key for c in batch.columns] == ["a", "a_2"]


def test_stream_query_errors_are_gateway_errors(client: GatewayClient) -> None:
    with pytest.raises(GatewayError) as err:
        list(client.stream_query("SELECT * FROM nowhere_to_stream"))
    assert err.value.code == grpc.StatusCode.NOT_FOUND


def test_watch_logs_of_a_finished_run(client: GatewayClient) -> None:
    run = client.start_workflow("SELECT 1 AS one", target_table="client_watch_target")
    assert run.details["row_count"] == 1
    assert type(run.details["row_count"]) is int
    events = list(client.watch_logs(run.run_id))
    assert all(isinstance(e, LogEvent) for e in events)
    assert [e.index for e in events] == list(range(len(events)))
    entries = [e.entry.type for e in events]
    assert entries[0] == "start"
    assert entries[-1] == "end"
    logs = client.get_logs(run.run_id)
    assert [e.type for e in logs.logs] == entries
    assert logs.log_count == len(entries)
    with pytest.raises(GatewayError) as err:
        list(client.watch_logs("20200101_000000_00000000", timeout_s=5))
    assert err.value.code == grpc.StatusCode.NOT_FOUND


def test_begin_workflow_through_envoy_names_the_run_while_it_goes_on(envoy: Sidecar) -> None:
    """What ``datamorph start --follow`` relies on, through Envoy's listener (its default)."""
    prompt = "SELECT g AS n, pg_sleep(0.3) IS NULL AS slept FROM generate_series(1, 3) g"
    with GatewayClient(envoy.grpc_address, timeout_s=20) as c:
        call = c.begin_workflow(prompt, target_table=f"client_begin_{uuid.uuid4().hex[:8]}")
        run_id = call.run_id()
        assert run_id is not None
        assert not call.done()
        first = next(c.watch_logs(run_id))
        assert (first.index, first.entry.type) == (0, "start")
        assert not call.done()  # the log is followed while the run goes on
        result = call.result()
        assert (result.run_id, result.details["row_count"]) == (run_id, 3)
        assert [e.entry.type for e in c.watch_logs(run_id)][-1] == "end"
        cancelled = c.begin_workflow(prompt, target_table=f"client_begin_{uuid.uuid4().hex[:8]}")
        assert cancelled.run_id()
        cancelled.cancel()
        with pytest.raises(GatewayError) as err:
            cancelled.result()
        assert err.value.code_name == "CANCELLED"


def test_watch_logs_refuses_a_negative_start(client: GatewayClient) -> None:
    with pytest.raises(GatewayError) as err:
        list(client.watch_logs("20200101_000000_00000000", start_index=-1))
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.violations[0].field == "start_index"


# -- errors ------------------------------------------------------------------------------


def test_a_workflow_error_names_its_run(client: GatewayClient) -> None:
    with pytest.raises(GatewayError) as err:
        client.start_workflow("SELECT 1 AS one", target_table="customers")
    assert err.value.code == grpc.StatusCode.ALREADY_EXISTS
    assert err.value.http_status == 409
    assert err.value.run_id is not None
    assert err.value.run_id == err.value.metadata["run_id"]
    assert err.value.request_id
    logs = client.get_logs(err.value.run_id)  # a run id always leads to a log
    assert [e.type for e in logs.logs][-2:] == ["error", "end"]


def test_an_error_without_a_run_has_no_run_id(client: GatewayClient) -> None:
    with pytest.raises(GatewayError) as err:
        client.get_schemas(["no_such_table"])
    assert (err.value.run_id, err.value.http_status) == (None, 404)
    assert str(err.value).startswith("NOT_FOUND: ")


class _Failed(grpc.RpcError):  # type: ignore[misc]  # grpc has no stubs
    """Stands in for grpc's failed call, carrying a status the gateway's own code made:
    these details (a run's log, a retry delay) need a timing no test can arrange reliably."""

    def __init__(self, status: grpc.Status) -> None:
        self._status = status

    def code(self) -> grpc.StatusCode:
        return self._status.code

    def details(self) -> str:
        return self._status.details  # type: ignore[no-any-return]

    def trailing_metadata(self) -> tuple[tuple[str, bytes], ...]:
        return self._status.trailing_metadata  # type: ignore[no-any-return]


def test_a_workflow_timeout_carries_the_logs_so_far() -> None:
    entry = {
        "timestamp": "2025-01-13T12:34:56Z",
        "type": "start",
        "title": "Starting",
        "description": "",
        "metadata": {"step": 1, "ratio": 0.5},
    }
    run_log = RunLog("20250113_123456_abcdef01", [entry], "2025-01-13T12:34:56Z", "later")
    timeout = WorkflowTimeout("still running", run_id=run_log.run_id, run_log=run_log)
    error = from_rpc_error(_Failed(to_status(timeout, "req-1")))
    assert (error.code, error.reason, error.run_id) == (
        grpc.StatusCode.DEADLINE_EXCEEDED,
        "WORKFLOW_TIMEOUT",
        run_log.run_id,
    )
    [logs] = error.details
    assert logs == RunLogs(
        run_id=run_log.run_id,
        log_count=1,
        logs=[LogEntry("2025-01-13T12:34:56Z", "start", "Starting", "", {"step": 1, "ratio": 0.5})],
        created_at="2025-01-13T12:34:56Z",
        updated_at="later",
        truncated=False,
    )
    assert type(logs.logs[0].metadata["step"]) is int


def test_a_limit_says_when_to_retry() -> None:
    retry = error_details_pb2.RetryInfo(
        retry_delay=duration_pb2.Duration(seconds=1, nanos=500_000_000)
    )
    limited = ResourceExhausted("slow down", reason="RATE_LIMITED", extra_details=[retry])
    error = from_rpc_error(_Failed(to_status(limited, "req-2")))
    assert (error.http_status, error.reason, error.retry_delay_s) == (429, "RATE_LIMITED", 1.5)
    assert error.details == ()
