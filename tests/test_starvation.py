"""Slow callers cannot starve the rest (issue 9): the pg_sleep attack, scaled down.

Once, 40 concurrent ``SELECT pg_sleep(20)`` calls took every pooled connection: ``/health``
answered 503 for 20 s, GetData and GetSchemas took seconds. Here a gateway with 8
connections (2 kept for reads, so 6 for caller SQL, and 3 queries per caller) gets 6
sleeping queries from two callers, one through Envoy and one over gRPC, and everything
else must still answer while they sleep.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from datamorph.gateway.v1 import gateway_pb2 as pb
from datamorph.gateway.v1 import gateway_pb2_grpc as pb_grpc
from datamorph_gateway.identity import SIDECAR_HEADER

from .fixtures.envoy import EnvoyFactory
from .fixtures.gateway import SIDECAR_SECRET, GatewayFactory

SLEEP_S = 4.0
# "At once": far below SLEEP_S, so nothing answered by waiting for a sleeper, and generous
# enough for a loaded 2-core machine running Envoy, the gateway and PostgreSQL.
PROMPT_S = 1.5
SLEEP_SQL = f"SELECT pg_sleep({SLEEP_S})"


def timed(call: Callable[[], Any]) -> tuple[Any, float]:
    start = time.monotonic()
    result = call()
    return result, time.monotonic() - start


def wait_for(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def forwarded(address: str) -> tuple[tuple[str, str], ...]:
    """Metadata as our Envoy would send it for a client at ``address``."""
    return (("x-forwarded-for", address), (SIDECAR_HEADER, SIDECAR_SECRET))


def retry_info(error: grpc.RpcError) -> error_details_pb2.RetryInfo:
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            for detail in status_pb2.Status.FromString(value).details:
                info = error_details_pb2.RetryInfo()
                if detail.Unpack(info):
                    return info
    raise AssertionError("no RetryInfo in the status")


def test_slow_queries_do_not_starve_health_reads_or_other_callers(
    make_gateway: GatewayFactory, make_envoy: EnvoyFactory
) -> None:
    gateway = make_gateway(db_pool_max=8, max_concurrent_queries_per_caller=3)
    sidecar = make_envoy(gateway.address)
    rest = sidecar.rest
    pool = gateway.database.pool
    assert (pool.reserved, pool.shared_max) == (2, 6)

    rest_statuses: list[int] = []
    grpc_answers: list[pb.ExecuteQueryResponse] = []
    with grpc.insecure_channel(gateway.address) as channel:
        stub = pb_grpc.DataMorphGatewayStub(channel)

        def grpc_query(caller: str, timeout_s: float = 30) -> None:
            request = pb.ExecuteQueryRequest(query=SLEEP_SQL)
            grpc_answers.append(
                stub.ExecuteQuery(request, metadata=forwarded(caller), timeout=timeout_s)
            )

        def rest_query() -> None:
            rest_statuses.append(rest.post("/execute/query", {"query": SLEEP_SQL}).status)

        # Caller 127.0.0.1 (REST: Envoy appends the address it saw) and caller 192.0.2.10.
        sleepers = [threading.Thread(target=rest_query) for _ in range(3)]
        sleepers += [threading.Thread(target=grpc_query, args=("192.0.2.10",)) for _ in range(3)]
        for thread in sleepers:
            thread.start()
        wait_for(lambda: pool.stats()["shared_busy"] == 6)
        # A third caller is under its own limit: it queues for caller SQL's share.
        queued = threading.Thread(target=grpc_query, args=("192.0.2.11",))
        queued.start()
        wait_for(lambda: pool.stats()["shared_waiting"] == 1)
        started = time.monotonic()

        # Health: healthy (HTTP 200), the pool degraded, at once.
        response, elapsed = timed(lambda: rest.get("/health"))
        assert response.status == 200, response
        body = response.json()
        assert body["status"] == "healthy"
        assert body["checks"]["database"]["status"] == "healthy"
        assert body["checks"]["pool"] == {
            "status": "degraded",
            "latency_ms": 0,
            "message": "6 of 6 connections for caller SQL busy (2 kept for reads); "
            "1 queries waiting",
        }
        assert elapsed < PROMPT_S
        health = health_pb2_grpc.HealthStub(channel)
        serving = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=PROMPT_S)
        assert serving.status == health_pb2.HealthCheckResponse.SERVING

        # Reads are served from the reserved share, at once.
        response, elapsed = timed(lambda: rest.post("/get/data", {"table_names": ["customers"]}))
        assert response.status == 200, response
        assert len(response.json()["data"]["customers"]) == 10
        assert elapsed < PROMPT_S
        schemas = {"table_names": ["orders", "customers"]}
        response, elapsed = timed(lambda: rest.post("/get/schemas", schemas))
        assert response.status == 200, response
        assert set(response.json()["schemas"]) == {"orders", "customers"}
        assert elapsed < PROMPT_S

        # One more query from a caller at its limit: 429 at once, with RetryInfo.
        response, elapsed = timed(lambda: rest.post("/execute/query", {"query": "SELECT 1"}))
        assert response.status == 429, response
        body = response.json()
        assert body["code"] == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
        assert "MAX_CONCURRENT_QUERIES_PER_CALLER" in body["message"]
        assert "3 queries" in body["message"]
        retry = [d for d in body["details"] if d["@type"].endswith("google.rpc.RetryInfo")]
        assert retry == [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retry_delay": "1s"}]
        assert elapsed < PROMPT_S

        request = pb.ExecuteQueryRequest(query="SELECT 1")
        start = time.monotonic()
        with pytest.raises(grpc.RpcError) as err:
            stub.ExecuteQuery(request, metadata=forwarded("192.0.2.10"), timeout=30)
        assert time.monotonic() - start < PROMPT_S
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert retry_info(err.value).retry_delay.seconds == 1

        # All of that happened while the sleepers slept.
        assert time.monotonic() - started < SLEEP_S - 1
        for thread in [*sleepers, queued]:
            thread.join(30)

    # Every sleeper was served, and so was the queued query once a connection came back.
    assert rest_statuses == [200, 200, 200]
    assert [a.row_count for a in grpc_answers] == [1, 1, 1, 1]
    after = gateway.servicer.check_health()
    assert after.checks["pool"].status == "healthy"
    stats = pool.stats()
    assert (stats["busy"], stats["shared_busy"], stats["shared_waiting"]) == (0, 0, 0)


def test_forty_sleepers_as_in_the_report(
    make_gateway: GatewayFactory, make_envoy: EnvoyFactory
) -> None:
    """The attack as reported: 40 concurrent sleepers through REST, default pool and limits.

    Sixteen connections, four kept for reads, eight queries per caller: the sleepers
    beyond eight are refused at once, and /health, GetData and GetSchemas answer at once.
    """
    gateway = make_gateway(db_pool_max=16, db_pool_reserved_reads=-1)
    rest = make_envoy(gateway.address).rest
    statuses: list[int] = []
    sleepers = [
        threading.Thread(
            target=lambda: statuses.append(rest.post("/execute/query", {"query": SLEEP_SQL}).status)
        )
        for _ in range(40)
    ]
    for thread in sleepers:
        thread.start()
    wait_for(lambda: gateway.database.pool.stats()["shared_busy"] == 8)
    wait_for(lambda: statuses.count(429) == 32)
    started = time.monotonic()
    response, elapsed = timed(lambda: rest.get("/health"))
    assert (response.status, response.json()["status"]) == (200, "healthy")
    assert elapsed < 1.0
    for path, body in (
        ("/get/data", {"table_names": ["customers"]}),
        ("/get/schemas", {"table_names": ["orders"]}),
    ):
        response, elapsed = timed(functools.partial(rest.post, path, body))
        assert response.status == 200, response
        assert elapsed < PROMPT_S
    assert time.monotonic() - started < SLEEP_S - 1
    for thread in sleepers:
        thread.join(30)
    assert sorted(statuses) == [200] * 8 + [429] * 32
