"""Workflows end to end on the embedded default: REST through Envoy, gRPC, the dev orchestrator."""

from __future__ import annotations

import http.client
import json
import re
import threading
import time
import uuid
from typing import Any

import grpc
import psycopg2
import pytest

from datamorph.gateway.v1 import gateway_pb2 as pb
from datamorph.gateway.v1 import gateway_pb2_grpc as pb_grpc

from ..fixtures.envoy import EnvoyFactory, Rest
from ..fixtures.gateway import GatewayFactory
from ..fixtures.roles import own_tables_dsn

RUN_ID = re.compile(r"^\d{8}_\d{6}_[0-9a-f]{8}$")


def target() -> str:
    return f"wf_{uuid.uuid4().hex[:10]}"


def ndjson(rest: Rest, path: str) -> list[dict[str, Any]]:
    response = rest.get(path, timeout_s=60)
    assert response.status == 200, response
    return [json.loads(line) for line in response.body.decode().splitlines() if line.strip()]


def test_start_materializes_the_query_and_its_logs_can_be_read_and_streamed(rest: Rest) -> None:
    table = target()
    started = rest.post(
        "/start",
        {
            "prompt": "SELECT id, name FROM customers WHERE id <= 5",
            "source_tables": ["customers"],
            "target_table": table,
        },
    )
    assert started.status == 200, started
    body = started.json()
    assert body["status"] == "success"
    assert RUN_ID.match(body["run_id"])
    assert isinstance(body["details"], dict)
    assert body["message"]

    rows = rest.post("/execute/query", {"query": f"SELECT count(*) AS n FROM {table}"}).json()
    assert rows["rows"] == [{"n": 5}]

    logs = rest.get(f"/get/logs/{body['run_id']}").json()
    assert logs["status"] == "success"
    assert logs["run_id"] == body["run_id"]
    assert logs["log_count"] == len(logs["logs"]) >= 4
    types = [entry["type"] for entry in logs["logs"]]
    assert types[0] == "start"
    assert "success" in types
    assert types[-1] == "end"
    assert all(
        set(e) == {"timestamp", "type", "title", "description", "metadata"} for e in logs["logs"]
    )
    assert logs["created_at"]
    assert logs["updated_at"]

    streamed = ndjson(rest, f"/watch/logs/{body['run_id']}")
    assert [line["entry"]["type"] for line in streamed] == types
    assert [line["index"] for line in streamed] == list(range(len(types)))
    resumed = ndjson(rest, f"/watch/logs/{body['run_id']}?start_index=2")
    assert [line["index"] for line in resumed] == list(range(2, len(types)))


def find_run(seeded_database: str, marker: str, timeout_s: float = 10.0) -> str:
    """The run whose log mentions marker (its target table), once it has one."""
    deadline = time.monotonic() + timeout_s
    conn = psycopg2.connect(own_tables_dsn(seeded_database))
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            while time.monotonic() < deadline:
                cur.execute(
                    "SELECT run_id FROM datamorph_gateway.workflow_log_entries"
                    " WHERE entry::text LIKE %s LIMIT 1",
                    (f"%{marker}%",),
                )
                row = cur.fetchone()
                if row:
                    return str(row[0])
                time.sleep(0.05)
    finally:
        conn.close()
    raise AssertionError(f"no run mentions {marker}")


def test_logs_stream_while_the_run_is_going(rest: Rest, seeded_database: str) -> None:
    table = target()
    answer: dict[str, Any] = {}
    prompt = "SELECT g AS n, pg_sleep(0.5) IS NULL AS slept FROM generate_series(1, 3) g"
    start = threading.Thread(
        target=lambda: answer.update(
            response=rest.post("/start", {"prompt": prompt, "target_table": table})
        )
    )
    start.start()
    try:
        run_id = find_run(seeded_database, table)
        connection = http.client.HTTPConnection(rest.host, rest.port, timeout=30)
        try:
            connection.request("GET", f"/watch/logs/{run_id}")
            response = connection.getresponse()
            assert response.status == 200
            first = json.loads(response.readline())
            assert "response" not in answer, "the stream should start while the run goes on"
            rest_of_stream = [json.loads(line) for line in response.read().splitlines() if line]
        finally:
            connection.close()
    finally:
        start.join()
    assert answer["response"].status == 200
    assert answer["response"].json()["run_id"] == run_id
    types = [line["entry"]["type"] for line in [first, *rest_of_stream]]
    assert types[0] == "start"
    assert types[-1] == "end"


def test_natural_language_prompt_needs_an_orchestrator(rest: Rest) -> None:
    response = rest.post("/start", {"prompt": "copy the big customers into a new table"})
    assert response.status == 400
    message = response.json()["message"]
    assert "orchestrator" in message


def test_existing_target_is_refused_without_side_effects(rest: Rest) -> None:
    response = rest.post("/start", {"prompt": "SELECT 1 AS one", "target_table": "customers"})
    assert response.status == 409
    count = rest.post("/execute/query", {"query": "SELECT count(*) AS n FROM customers"}).json()
    assert count["rows"][0]["n"] == 1000


def test_unknown_run_is_404(rest: Rest) -> None:
    assert rest.get("/get/logs/20200101_000000_deadbeef").status == 404
    too_long = rest.get("/get/logs/" + "r" * 300)
    assert too_long.status == 400
    assert "run_id" in too_long.json()["message"]


def test_concurrent_workflows_beyond_the_limit_are_429_while_reads_go_on(
    make_gateway: GatewayFactory, make_envoy: EnvoyFactory, seeded_database: str
) -> None:
    gateway = make_gateway(workflow_max_concurrent=1, grpc_max_workers=8)
    table = target()
    sidecar = make_envoy(gateway.address)
    with grpc.insecure_channel(gateway.address) as channel:
        stub = pb_grpc.DataMorphGatewayStub(channel)
        slow = stub.StartWorkflow.future(
            pb.StartWorkflowRequest(
                prompt="SELECT pg_sleep(2) IS NULL AS slept", target_table=table
            ),
            timeout=60,
        )
        find_run(seeded_database, table)  # admitted: from now on the one slot is taken
        with pytest.raises(grpc.RpcError) as refused:
            stub.StartWorkflow(
                pb.StartWorkflowRequest(prompt="SELECT 1 AS x", target_table=target()), timeout=5
            )
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        over = sidecar.rest.post("/start", {"prompt": "SELECT 2 AS y", "target_table": target()})
        assert over.status == 429
        sample = sidecar.rest.post("/get/data", {"table_names": ["customers"], "limit": 2})
        assert sample.status == 200
        assert not slow.done()
        assert slow.result().status == "success"
