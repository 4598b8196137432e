"""``make run`` with two gateway processes: process 0's /metrics counts every call of both,
by method and code, exactly; and the dashboard and the alert rules name only what that real
scrape shows."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from datamorph.gateway.v1 import gateway_pb2 as pb
from datamorph.gateway.v1 import gateway_pb2_grpc as pb_grpc
from datamorph_client import GatewayClient, GatewayError
from datamorph_gateway.auth.keys import key_hash, new_key

from ..fixtures.envoy import Rest
from ..fixtures.launcher import Launched, running_launcher
from ..fixtures.observability import delta, free_port, scrape
from .test_dashboards import every_name

REQUESTS = "datamorph_rpc_requests_total"
DURATIONS = "datamorph_rpc_duration_seconds_count"


@dataclasses.dataclass
class Stack:
    launched: Launched
    metrics_port: int
    api_key: str
    stderr: Path

    @property
    def rest(self) -> Rest:
        return Rest(*self.launched.addresses["REST"])

    def process(self, index: int) -> str:
        host, port = self.launched.grpc[index]
        return f"{host}:{port}"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    key = new_key()
    directory = tmp_path_factory.mktemp("metrics-stack")
    policy = directory / "policy.yaml"
    policy.write_text(f'principals:\n  - name: etl\n    api_keys: ["{key_hash(key)}"]\n'
                      '    allow: ["*"]\n')  # fmt: skip
    port = free_port()
    env = {"GATEWAY_PROCESSES": "2", "METRICS_PORT": str(port), "AUTH_POLICY_FILE": str(policy)}
    stderr = directory / "stderr"
    with running_launcher(directory / "data", stderr, **env) as launched:
        assert any(f"metrics   http://127.0.0.1:{port}/metrics" in line for line in launched.stdout)
        yield Stack(launched, port, key, stderr)


def _get_data(address: str, key: str, tables: list[str]) -> grpc.StatusCode:
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.DataMorphGatewayStub(channel)
        try:
            stub.GetData(
                pb.GetDataRequest(table_names=tables, limit=1),
                metadata=(("x-api-key", key),),
                timeout=20,
            )
        except grpc.RpcError as exc:
            code: grpc.StatusCode = exc.code()
            return code
    return grpc.StatusCode.OK


def test_process_zero_counts_every_call_of_both_processes_by_method_and_code(
    stack: Stack,
) -> None:
    before = scrape(stack.metrics_port)
    # Process 1 alone: its calls reach process 0's /metrics.
    for _ in range(4):
        assert _get_data(stack.process(1), stack.api_key, ["customers"]) == grpc.StatusCode.OK
    for _ in range(3):
        assert _get_data(stack.process(1), stack.api_key, []) == grpc.StatusCode.INVALID_ARGUMENT
    middle = scrape(stack.metrics_port)
    assert delta(middle, before, REQUESTS, method="GetData", code="OK") == 4
    assert delta(middle, before, REQUESTS, method="GetData", code="INVALID_ARGUMENT") == 3
    assert delta(middle, before, DURATIONS, method="GetData") == 7
    # Through Envoy (REST), round robin over both; and process 0 directly.
    body = {"table_names": ["customers"], "limit": 1}
    for _ in range(6):
        answer = stack.rest.post("/get/data", body, headers={"x-api-key": stack.api_key})
        assert answer.status == 200
    assert _get_data(stack.process(0), stack.api_key, ["customers"]) == grpc.StatusCode.OK
    assert stack.rest.post("/get/data", body).status == 401  # no key
    after = scrape(stack.metrics_port)
    assert delta(after, middle, REQUESTS, method="GetData", code="OK") == 7
    assert delta(after, middle, REQUESTS, method="GetData", code="UNAUTHENTICATED") == 1
    assert delta(after, middle, DURATIONS, method="GetData") == 8
    bucket = "datamorph_rpc_duration_seconds_bucket"
    assert delta(after, before, bucket, method="GetData", le="+Inf") == 15
    reason = "datamorph_auth_failures_total"
    assert delta(after, middle, reason, reason="no_credentials") == 1
    assert delta(after, before, "datamorph_db_pool_max_connections") == 0
    assert after[("datamorph_db_pool_max_connections", frozenset())] == 2 * 16  # DB_POOL_MAX each


def test_the_dashboard_and_alerts_name_only_what_the_stacks_metrics_show(stack: Stack) -> None:
    """Every labelled family shows once something recorded into it: make those calls."""
    with GatewayClient(stack.process(0), api_key=stack.api_key, timeout_s=60) as client:
        table = f"obs_{uuid.uuid4().hex[:8]}"
        client.start_workflow("SELECT 1 AS one", target_table=table)
        assert sum(len(b.rows) for b in client.stream_query("SELECT generate_series(1, 3)")) == 3
        with pytest.raises(GatewayError):
            client.execute_query("SELECT * FROM no_such_table_for_metrics")
    got = scrape(stack.metrics_port)
    assert got[("datamorph_workflows_total", frozenset({("outcome", "success")}))] >= 1
    assert got[("datamorph_stream_rows_total", frozenset({("method", "StreamQuery")}))] >= 3
    assert got[("datamorph_db_errors_total", frozenset({("sqlstate_class", "42")}))] >= 1
    scraped = {name for name, _ in got}
    named = {n for n in every_name() if n.startswith("datamorph_")}
    assert named - scraped == set()
    assert "Traceback" not in stack.stderr.read_text()
