"""The layers record what they did: a truncated answer, a rate-limited call, the pool's
connections and waits (an in-process gateway; this process's registry)."""

from __future__ import annotations

import json

import grpc
import pytest
from prometheus_client.registry import CollectorRegistry

from datamorph.gateway.v1 import gateway_pb2 as pb
from datamorph.gateway.v1 import gateway_pb2_grpc as pb_grpc
from datamorph_client import GatewayClient
from datamorph_gateway.auth.keys import key_hash, new_key

from ..fixtures.gateway import GatewayFactory


def _sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    found = registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


@pytest.mark.usefixtures("own_pool_totals")
def test_a_truncated_answer_and_the_pools_books(
    prometheus: CollectorRegistry, make_gateway: GatewayFactory
) -> None:
    gateway = make_gateway(max_result_rows=2, db_pool_max=5)
    assert _sample(prometheus, "datamorph_db_pool_max_connections") == 5
    waits = _sample(prometheus, "datamorph_db_pool_wait_seconds_count")
    with GatewayClient(gateway.address, timeout_s=20) as client:
        result = client.execute_query("SELECT generate_series(1, 5) AS n")
        assert result.truncated
        assert len(client.execute_query("SELECT 1 AS n").rows) == 1
    assert _sample(prometheus, "datamorph_result_truncated_total") == 1
    assert _sample(prometheus, "datamorph_db_pool_wait_seconds_count") >= waits + 2
    assert _sample(prometheus, "datamorph_db_pool_connections", state="in_use") == 0
    assert _sample(prometheus, "datamorph_db_pool_connections", state="idle") >= 1
    gateway.stop(0)  # its pools are gone from the books
    assert _sample(prometheus, "datamorph_db_pool_max_connections") == 0
    assert _sample(prometheus, "datamorph_db_pool_connections", state="in_use") == 0
    assert _sample(prometheus, "datamorph_db_pool_connections", state="idle") == 0


def test_a_rate_limited_call_is_counted(
    prometheus: CollectorRegistry, make_gateway: GatewayFactory
) -> None:
    key = new_key()
    principal = {"name": "slow", "api_keys": [key_hash(key)], "allow": ["*"]}
    policy = {"principals": [{**principal, "rate_limit_per_s": 1}]}
    gateway = make_gateway(auth_policy=json.dumps(policy))
    codes = []
    with grpc.insecure_channel(gateway.address) as channel:
        stub = pb_grpc.DataMorphGatewayStub(channel)
        for _ in range(4):  # a burst of two, then refusals
            try:
                stub.GetData(
                    pb.GetDataRequest(table_names=["customers"], limit=1),
                    metadata=(("x-api-key", key),),
                    timeout=10,
                )
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as exc:
                codes.append(exc.code())
    refused = codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert refused >= 1
    assert _sample(prometheus, "datamorph_rate_limited_total") == refused
    counted = _sample(
        prometheus, "datamorph_rpc_requests_total", method="GetData", code="RESOURCE_EXHAUSTED"
    )
    assert counted == refused


def test_a_workflow_is_counted_by_how_it_ended(
    prometheus: CollectorRegistry, make_gateway: GatewayFactory
) -> None:
    gateway = make_gateway()
    with GatewayClient(gateway.address, timeout_s=60) as client:
        client.start_workflow("SELECT 1 AS one", target_table="obs_recorded_wf")
        client.execute_query("DROP TABLE IF EXISTS obs_recorded_wf")
    assert _sample(prometheus, "datamorph_workflows_total", outcome="success") == 1
    assert _sample(prometheus, "datamorph_workflows_running") == 0
