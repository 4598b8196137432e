"""The gateway outlives its database: restarts, killed sessions, an outage."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import psycopg2
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from datamorph_client import GatewayClient, GatewayError
from datamorph_gateway.app import Gateway
from datamorph_gateway.pg.server import EmbeddedPostgres

from .fixtures import roles
from .fixtures.gateway import GatewayFactory, gateway_settings


def wait_for(predicate: Callable[[], object], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


def health_status(address: str) -> int:
    with grpc.insecure_channel(address) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        return int(stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status)


def test_sessions_killed_under_the_pool_are_replaced(
    make_gateway: GatewayFactory, database_admin_url: str
) -> None:
    gateway = make_gateway(db_pool_max=4, db_application_name="gw-kill-test")
    with GatewayClient(gateway.address) as c:
        for _ in range(4):
            c.get_data(["customers"], limit=1)
        admin = psycopg2.connect(database_admin_url)  # only a superuser may end the sessions
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE application_name = 'gw-kill-test'"
            )
            row = cur.fetchone()
            assert row is not None
            assert row[0] >= 1
        admin.close()
        # Every request succeeds: dead idle connections are detected and replaced.
        for _ in range(6):
            assert c.get_data(["customers"], limit=1)["customers"].rows
            assert c.execute_query("SELECT 1 AS one").rows == [{"one": 1}]


@pytest.mark.embedded_only
def test_database_restart_and_outage(tmp_path: Path) -> None:
    with EmbeddedPostgres(tmp_path / "pg") as pg:
        made = roles.provision(pg.dsn, "dmgw_restart", tmp_path / "pgpass")
        settings = gateway_settings(
            made.app_dsn,
            db_connect_attempts=2,
            db_connect_backoff_s=0.05,
            db_connect_timeout_s=1,
            health_poll_interval_s=0.2,
        )
        gateway = Gateway(settings)
        gateway.start()
        try:
            with GatewayClient(gateway.address, timeout_s=10) as c:
                c.execute_query("CREATE TABLE t (a int); INSERT INTO t VALUES (1)")
                assert c.execute_query("SELECT a FROM t").rows == [{"a": 1}]

                pg.restart()
                assert c.execute_query("SELECT a FROM t").rows == [{"a": 1}]
                assert c.health().status == "healthy"

                pg.stop()
                with pytest.raises(GatewayError) as err:
                    c.execute_query("SELECT a FROM t")
                assert err.value.code == grpc.StatusCode.UNAVAILABLE
                assert pg.dsn not in err.value.message
                report = c.health()
                assert report.status == "unhealthy"
                assert report.checks["database"].status == "unhealthy"
                wait_for(
                    lambda: (
                        health_status(gateway.address) == health_pb2.HealthCheckResponse.NOT_SERVING
                    )
                )

                pg.start()
                assert c.execute_query("SELECT a FROM t").rows == [{"a": 1}]
                wait_for(
                    lambda: health_status(gateway.address) == health_pb2.HealthCheckResponse.SERVING
                )
        finally:
            gateway.stop(0)


def test_pool_exhaustion_is_resource_exhausted(make_gateway: GatewayFactory) -> None:
    import threading

    gateway = make_gateway(db_pool_max=1, db_pool_timeout_s=0.3)
    with GatewayClient(gateway.address, timeout_s=10) as c:
        blocker = threading.Thread(target=c.execute_query, args=("SELECT pg_sleep(1.5)",))
        blocker.start()
        try:
            pool = gateway.database.pool
            wait_for(lambda: pool.stats()["open"] == 1 and pool.stats()["idle"] == 0)
            with pytest.raises(GatewayError) as err:
                c.execute_query("SELECT 1")
            assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "busy" in err.value.message
        finally:
            blocker.join()
        assert c.execute_query("SELECT 1 AS ok").rows == [{"ok": 1}]


@pytest.mark.embedded_only
def test_a_database_restart_under_load_costs_few_calls(tmp_path: Path) -> None:
    """8 callers read in a loop while PostgreSQL restarts: at most 10 calls fail, and calls
    succeed again within 2 s of the server being back. Prints its figures."""
    callers, run_s = 8, 6.0
    with EmbeddedPostgres(tmp_path / "pg") as pg:
        made = roles.provision(pg.dsn, "dmgw_restart_load", tmp_path / "pgpass")
        # The default connect attempts and backoff (a call waits about 0.7 s for the server).
        settings = gateway_settings(made.app_dsn, db_pool_max=8)
        gateway = Gateway(settings)
        gateway.start()
        stop_at = time.monotonic() + run_s
        outcomes: list[tuple[float, bool]] = []  # (when it ended, succeeded)
        lock = threading.Lock()

        def read() -> None:
            with GatewayClient(gateway.address, timeout_s=10) as client:
                while time.monotonic() < stop_at:
                    try:
                        client.execute_query("SELECT a FROM t", read_only=True)
                        ok = True
                    except GatewayError:
                        ok = False
                    with lock:
                        outcomes.append((time.monotonic(), ok))

        try:
            with GatewayClient(gateway.address) as setup:
                setup.execute_query("CREATE TABLE t (a int); INSERT INTO t VALUES (1)")
            with ThreadPoolExecutor(callers) as pool:
                loads = [pool.submit(read) for _ in range(callers)]
                time.sleep(1.5)
                down_at = time.monotonic()
                pg.restart()
                up_at = time.monotonic()
                for load in loads:
                    load.result()
        finally:
            gateway.stop(0)
    failed = [when for when, ok in outcomes if not ok]
    after = [when for when, ok in outcomes if ok and when > max(failed, default=down_at)]
    recovered_s = (min(after) - up_at) if after else float("inf")
    print(
        f"\nPostgreSQL restart under load ({callers} callers, {run_s:g} s): "
        f"{len(outcomes)} calls, {len(failed)} failed; the restart took {up_at - down_at:.2f} s; "
        f"calls succeeded again {max(recovered_s, 0.0):.2f} s after it was back"
    )
    assert len(failed) <= 10
    assert recovered_s <= 2.0
    assert len(outcomes) - len(failed) > 100  # it was under load before and after
