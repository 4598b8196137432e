"""``python -m datamorph_gateway`` with the observability settings, as operators run it:
JSON log lines, EMF records, its own /metrics, a collector that does not answer, and a
METRICS_PORT that is taken."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest

from datamorph.gateway.v1 import gateway_pb2 as pb
from datamorph.gateway.v1 import gateway_pb2_grpc as pb_grpc

from ..fixtures.observability import free_port, scrape, value
from ..fixtures.process import gateway_env, run_with_port_taken, start, stop

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


class Served:
    """A gateway process whose stderr goes to a file; ``stop`` returns its exit code."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        with log.open("wb") as stderr:
            self.proc, self.address = start(env, stderr=stderr)

    def call(self, rpc: str, request: Any, metadata: Sequence[tuple[str, str]] = ()) -> Any:
        with grpc.insecure_channel(self.address) as channel:
            method = getattr(pb_grpc.DataMorphGatewayStub(channel), rpc)
            return method(request, metadata=tuple(metadata), timeout=20)

    def stop(self) -> int:
        return stop(self.proc)

    def lines(self) -> list[str]:
        return self.log.read_text().splitlines()


@pytest.fixture
def serve(seeded_database: str, tmp_path: Path) -> Iterator[Any]:
    started: list[Served] = []

    def make(**env: str) -> Served:
        served = Served(
            gateway_env(DATABASE_URL=seeded_database, **env), tmp_path / f"{len(started)}.log"
        )
        started.append(served)
        return served

    yield make
    for served in started:
        if served.proc.poll() is None:
            served.stop()


def _get_data(request_id: str) -> tuple[pb.GetDataRequest, list[tuple[str, str]]]:
    return pb.GetDataRequest(table_names=["customers"], limit=2), [("x-request-id", request_id)]


def test_json_lines_parse_and_carry_the_request_id_rpc_fields_and_audit_fields(
    serve: Any,
) -> None:
    port = free_port()
    served = serve(LOG_FORMAT="json", METRICS_PORT=str(port))
    served.call("GetData", *_get_data("obs-json-1"))
    query = pb.ExecuteQueryRequest(query="SELECT 'hunter2' AS a")
    served.call("ExecuteQuery", query, [("x-request-id", "obs-json-2")])
    got = scrape(port)  # one process: its own registry
    assert value(got, "datamorph_rpc_requests_total", method="GetData", code="OK") == 1
    assert value(got, "datamorph_rpc_requests_total", method="ExecuteQuery", code="OK") == 1
    assert served.stop() == 0
    records = [json.loads(line) for line in served.lines()]  # every line is one object
    assert all({"timestamp", "level", "logger", "message"} <= set(r) for r in records)
    [access] = [r for r in records if r.get("request_id") == "obs-json-1" and "rpc" in r]
    assert access["logger"] == "datamorph_gateway.access"
    assert access["rpc"] == "GetData"
    assert access["code"] == "OK"
    assert isinstance(access["duration_ms"], float)
    assert access["principal"] == "anonymous"
    assert access["peer"].startswith("ipv4:127.0.0.1:")
    assert access["message"].startswith("rpc GetData code=OK duration_ms=")
    [audit] = [r for r in records if r["logger"] == "datamorph_gateway.audit"]
    assert audit["request_id"] == "obs-json-2"
    assert audit["sql"] == "SELECT ? AS a"
    assert audit["params"] == 0
    assert audit["rows"] == 1
    assert audit["outcome"] == "ok"
    assert audit["read_only"] is False
    assert audit["principal"] == "anonymous"
    assert "hunter2" not in served.log.read_text()
    assert "trace_id" not in access  # tracing is off


def test_emf_records_name_the_metrics_and_count_the_calls(serve: Any) -> None:
    served = serve(METRICS_EMF="true", METRICS_EMF_INTERVAL_S="0.5")
    for number in range(3):
        served.call("GetData", *_get_data(f"obs-emf-{number}"))
    with pytest.raises(grpc.RpcError):
        served.call("GetData", pb.GetDataRequest(), [])
    time.sleep(0.6)  # at least one interval's records before the last ones at the stop
    assert served.stop() == 0
    records = [json.loads(line) for line in served.lines() if line.startswith('{"_aws"')]
    assert records
    for record in records:
        [directive] = record["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == "DataMorph/Gateway"
        for metric in directive["Metrics"]:
            assert metric["Name"] in record
        for dimensions in directive["Dimensions"]:
            assert set(dimensions) <= set(record)

    def requests(code: str) -> int:
        return sum(
            r["Requests"] for r in records if r.get("Method") == "GetData" and r.get("Code") == code
        )

    assert requests("OK") == 3
    assert requests("INVALID_ARGUMENT") == 1
    process = [r for r in records if "DbPoolInUse" in r]
    assert process
    assert {"DbPoolInUse", "DbPoolIdle", "WorkflowsRunning"} <= set(process[-1])


def test_a_collector_that_does_not_answer_never_fails_a_call(serve: Any) -> None:
    served = serve(
        LOG_FORMAT="json",
        OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:1",
        OTEL_EXPORTER_OTLP_TIMEOUT="1",
        OTEL_BSP_SCHEDULE_DELAY="100",
    )
    traceparent = ("traceparent", f"00-{TRACE_ID}-00f067aa0ba902b7-01")
    for number in range(5):
        request, metadata = _get_data(f"obs-otlp-{number}")
        response = served.call("GetData", request, [*metadata, traceparent])
        assert response.status == "success"
        time.sleep(0.1)  # the exporter tries meanwhile
    began = time.monotonic()
    assert served.stop() == 0
    stopped_s = time.monotonic() - began
    print(f"\nstopped {stopped_s:.1f} s after SIGTERM with an unreachable collector")
    records = [json.loads(line) for line in served.lines() if line.startswith("{")]
    access = [r for r in records if str(r.get("request_id", "")).startswith("obs-otlp-")]
    access = [r for r in access if "rpc" in r]
    assert len(access) == 5
    assert {r["trace_id"] for r in access} == {TRACE_ID}
    assert all(len(r["span_id"]) == 16 for r in access)


def test_a_metrics_port_in_use_is_one_clear_line(seeded_database: str) -> None:
    port, result = run_with_port_taken("METRICS_PORT", DATABASE_URL=seeded_database)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"datamorph-gateway: cannot serve metrics on 127.0.0.1:{port}: ")
    assert last.endswith("set METRICS_PORT to another port")
    assert "Traceback" not in result.stderr
