"""The client a Lambda installs: typed calls, decoded errors, health, the example handler."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import grpc
import pytest

from datamorph_client import GatewayClient, GatewayError

EXAMPLE = Path(__file__).parents[1] / "clients" / "python" / "examples" / "lambda_handler.py"


def test_health_reports_healthy(client: GatewayClient) -> None:
    report = client.health()
    assert report.status == "healthy"
    assert report.checks["database"].status == "healthy"
    assert report.version


def test_unhealthy_report_is_returned_not_raised(make_gateway) -> None:  # type: ignore[no-untyped-def]
    gateway = make_gateway(
        database_url="postgresql://postgres@127.0.0.1:1/nowhere",
        db_pool_min=0,
        db_connect_attempts=1,
        db_connect_timeout_s=1,
    )
    with GatewayClient(gateway.address) as c:
        report = c.health()
        assert report.status == "unhealthy"
        assert report.checks["database"].message == "the database is unavailable"
        with pytest.raises(GatewayError) as err:
            c.get_data(["customers"])
        assert err.value.code == grpc.StatusCode.UNAVAILABLE


def test_metadata_hook_and_api_key_are_sent(gateway) -> None:  # type: ignore[no-untyped-def]
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


def test_tls_channel_to_a_plaintext_server_fails_cleanly(gateway) -> None:  # type: ignore[no-untyped-def]
    with (
        GatewayClient(gateway.address, tls=True, timeout_s=2) as c,
        pytest.raises(GatewayError) as err,
    ):
        c.health()
    assert err.value.code == grpc.StatusCode.UNAVAILABLE


def test_example_lambda_handler(gateway, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
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
        orders = answer["body"]["orders"]
        assert orders["primary_keys"] == ["id"]
        assert len(orders["sample"]) == 3
        bad = module.handler({"tables": ["bad name!"]}, None)
        assert bad["statusCode"] == 400
    finally:
        module.client.close()


def test_stream_query_yields_batches(client: GatewayClient) -> None:
    batches = list(
        client.stream_query("SELECT g AS n FROM generate_series(1, $1) g", [7], batch_rows=3)
    )
    assert [len(b) for b in batches] == [3, 3, 1]
    assert batches[0][0] == {"n": 1}


def test_stream_query_errors_are_gateway_errors(client: GatewayClient) -> None:
    with pytest.raises(GatewayError) as err:
        list(client.stream_query("SELECT * FROM nowhere_to_stream"))
    assert err.value.code == grpc.StatusCode.NOT_FOUND


def test_watch_logs_of_a_finished_run(client: GatewayClient) -> None:
    run = client.start_workflow("SELECT 1 AS one", target_table="client_watch_target")
    entries = [e.entry.type for e in client.watch_logs(run.run_id)]
    assert entries[0] == "start"
    assert entries[-1] == "end"
    with pytest.raises(GatewayError) as err:
        list(client.watch_logs("20200101_000000_00000000", timeout_s=5))
    assert err.value.code == grpc.StatusCode.NOT_FOUND


def test_watch_logs_refuses_a_negative_start(client: GatewayClient) -> None:
    with pytest.raises(GatewayError) as err:
        list(client.watch_logs("20200101_000000_00000000", start_index=-1))
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.violations[0].field == "start_index"
