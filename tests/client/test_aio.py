"""``AsyncGatewayClient``: every method against the real gateway, answers as the sync client's.

Each test runs its own event loop (``asyncio.run``): grpc.aio channels belong to the loop
that made them, so every client is made inside the coroutine.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import TypeVar

import grpc
import psycopg2
import pytest

from datamorph_client import (
    GatewayClient,
    GatewayError,
    HealthReport,
    LogEvent,
    Row,
    RowBatch,
)
from datamorph_client.aio import AsyncGatewayClient
from datamorph_gateway.app import Gateway

from ..fixtures.gateway import GatewayFactory

T = TypeVar("T")


def run(gateway: Gateway, body: Callable[[AsyncGatewayClient], Awaitable[T]]) -> T:
    async def main() -> T:
        async with AsyncGatewayClient(gateway.address, timeout_s=20) as client:
            return await body(client)

    return asyncio.run(main())


def test_health(gateway: Gateway) -> None:
    report = run(gateway, lambda c: c.health())
    assert isinstance(report, HealthReport)
    assert report.healthy
    assert report.checks["database"].status == "healthy"


def test_an_unhealthy_report_is_returned(make_gateway: GatewayFactory) -> None:
    down = make_gateway(
        database_url="postgresql://postgres@127.0.0.1:1/nowhere",
        db_pool_min=0,
        db_connect_attempts=1,
        db_connect_timeout_s=1,
    )
    report = run(down, lambda c: c.health())
    assert (report.status, report.healthy) == ("unhealthy", False)


def test_get_schemas_and_get_data_answer_as_the_sync_client(
    gateway: Gateway, client: GatewayClient
) -> None:
    async def body(c: AsyncGatewayClient) -> None:
        schemas = await c.get_schemas(["orders"])
        assert schemas == client.get_schemas(["orders"])
        assert schemas["orders"].primary_keys == ["id"]
        samples = await c.get_data(["customers"], limit=3)
        assert len(samples["customers"].rows) == 3
        assert [col.name for col in samples["customers"].columns][:2] == ["id", "name"]
        values = [r["lifetime_value"] for r in samples["customers"].rows]
        assert all(isinstance(v, Decimal) for v in values)

    run(gateway, body)


def test_execute_query_decodes_and_takes_params(gateway: Gateway) -> None:
    async def body(c: AsyncGatewayClient) -> None:
        big = 2**62 + 1
        result = await c.execute_query(
            "SELECT $1::int8 AS big, 1.10::numeric AS exact, 7::int2 AS small", [big]
        )
        assert result.rows == [{"big": big, "exact": Decimal("1.10"), "small": 7}]
        assert (result.row_count, result.command, result.truncated) == (1, "SELECT", False)
        arrays = await c.execute_query("SELECT 1 AS a, 2 AS a", row_format="array")
        assert arrays.rows == [[1, 2]]
        assert [col.key for col in arrays.columns] == ["a", "a_2"]
        with pytest.raises(GatewayError) as err:
            await c.execute_query("SELECT * FROM no_such_table_here")
        assert (err.value.http_status, err.value.reason) == (404, "QUERY_FAILED")
        assert err.value.request_id

    run(gateway, body)


def test_stream_query_yields_every_batch(gateway: Gateway) -> None:
    async def body(c: AsyncGatewayClient) -> list[RowBatch[Row]]:
        sql = "SELECT g AS n FROM generate_series(1, $1) g"
        return [b async for b in c.stream_query(sql, [7], batch_rows=3)]

    batches = run(gateway, body)
    assert [len(b.rows) for b in batches] == [3, 3, 1]
    assert [b.rows_sent for b in batches] == [3, 6, 7]
    assert batches[0].rows[0] == {"n": 1}


def test_stream_query_rows_as_arrays_and_errors(gateway: Gateway) -> None:
    async def body(c: AsyncGatewayClient) -> None:
        batches = [b async for b in c.stream_query("SELECT 1::int8 AS a", row_format="array")]
        assert [b.rows for b in batches] == [[[1]]]
        with pytest.raises(GatewayError) as err:
            async for _ in c.stream_query("SELECT * FROM nowhere_to_stream"):
                pass
        assert err.value.code == grpc.StatusCode.NOT_FOUND

    run(gateway, body)


def test_leaving_a_stream_early_cancels_its_query(
    gateway: Gateway, database_admin_url: str
) -> None:
    marker = f"aio_cancel_{uuid.uuid4().hex[:8]}"
    sql = f"SELECT /* {marker} */ g, pg_sleep(0.05) FROM generate_series(1, 100000) g"

    async def body(c: AsyncGatewayClient) -> None:
        stream = c.stream_query(sql, batch_rows=5)
        first = await anext(stream)
        assert first.rows_sent == 5
        await stream.aclose()

    run(gateway, body)
    assert wait_gone(database_admin_url, marker)


def wait_gone(admin_url: str, marker: str, timeout_s: float = 5.0) -> bool:
    """Whether no session runs a query mentioning ``marker`` within the time."""
    conn = psycopg2.connect(admin_url)
    conn.autocommit = True
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE query LIKE %s"
                    " AND state <> 'idle' AND pid <> pg_backend_pid()",
                    (f"%{marker}%",),
                )
                row = cur.fetchone()
            if row is not None and row[0] == 0:
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
    finally:
        conn.close()


def test_start_workflow_get_logs_and_watch_logs(gateway: Gateway) -> None:
    table = f"aio_target_{uuid.uuid4().hex[:8]}"

    async def body(c: AsyncGatewayClient) -> None:
        result = await c.start_workflow("SELECT 1 AS one", target_table=table)
        assert result.details["row_count"] == 1
        logs = await c.get_logs(result.run_id)
        events = [e async for e in c.watch_logs(result.run_id)]
        assert all(isinstance(e, LogEvent) for e in events)
        assert [e.entry for e in events] == logs.logs
        assert logs.logs[0].type == "start"
        assert logs.logs[-1].type == "end"
        with pytest.raises(GatewayError) as err:
            await c.get_logs("20200101_000000_00000000")
        assert err.value.http_status == 404
        with pytest.raises(GatewayError) as err:
            await c.start_workflow("SELECT 1 AS one", target_table="customers")
        assert err.value.http_status == 409
        assert err.value.run_id

    run(gateway, body)


def test_begin_workflow_gives_the_run_id_before_the_end(gateway: Gateway) -> None:
    table = f"aio_begin_{uuid.uuid4().hex[:8]}"
    prompt = "SELECT g AS n, pg_sleep(0.3) IS NULL AS slept FROM generate_series(1, 3) g"

    async def body(c: AsyncGatewayClient) -> None:
        call = c.begin_workflow(prompt, target_table=table)
        run_id = await call.run_id()
        assert run_id is not None
        assert not call.done()  # the id came while the run was going on
        types = [e.entry.type async for e in c.watch_logs(run_id)]
        assert types[0] == "start"
        assert types[-1] == "end"
        result = await call.result()
        assert result.run_id == run_id
        assert result.details["row_count"] == 3
        # A prompt the orchestrator refuses still makes a run, with its log.
        failing = c.begin_workflow("not sql at all", target_table=table + "_x")
        failed_id = await failing.run_id()
        with pytest.raises(GatewayError) as err:
            await failing.result()
        assert (err.value.http_status, err.value.run_id) == (400, failed_id)
        # A request refused before any run has no run id.
        refused = c.begin_workflow("")
        assert await refused.run_id() is None
        with pytest.raises(GatewayError) as err:
            await refused.result()
        assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
        cancelled = c.begin_workflow(prompt, target_table=table + "_c")
        assert await cancelled.run_id()
        cancelled.cancel()
        with pytest.raises(GatewayError) as err:
            await cancelled.result()
        assert err.value.code == grpc.StatusCode.CANCELLED

    run(gateway, body)
