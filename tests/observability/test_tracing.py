"""Traces: off unless OTEL_* asks, a span per RPC continuing the caller's trace, children
per statement and per AWS call, and a collector that cannot be reached never felt by a call."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import boto3
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from datamorph_gateway.observability import tracing

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


@pytest.mark.parametrize(
    ("environ", "wanted"),
    [
        ({}, False),
        ({"OTEL_SERVICE_NAME": "x", "OTEL_TRACES_SAMPLER": "always_on"}, False),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"}, False),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"}, False),
        ({"OTEL_SDK_DISABLED": "false", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"}, True),
    ],
)
def test_the_standard_variables_switch_tracing_on(environ: dict[str, str], wanted: bool) -> None:
    assert tracing.tracing_wanted(environ) is wanted


def test_off_nothing_of_opentelemetry_or_prometheus_is_even_imported() -> None:
    script = (
        "import sys\n"
        "from datamorph_gateway.observability import metrics, tracing\n"
        "assert tracing.setup_tracing({}) is False\n"
        "assert tracing.start_rpc_span('GetData', [('traceparent', 'x')]) is None\n"
        "with tracing.db_span('SELECT'):\n"
        "    assert tracing.current_ids() is None\n"
        "metrics.init('1', prometheus=False)\n"
        "metrics.rpc_finished('GetData', 'OK', 0.001)\n"
        "loaded = [m for m in sys.modules if m.startswith(('opentelemetry', 'prometheus'))]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)


def test_an_rpc_span_continues_the_callers_trace(spans: InMemorySpanExporter) -> None:
    metadata = [("traceparent", TRACEPARENT), ("x-data-bin", b"\x00\x01")]
    span = tracing.start_rpc_span("GetData", metadata)
    assert span is not None
    ids = tracing.current_ids()
    assert ids is not None
    assert ids[0] == TRACE_ID
    with tracing.db_span("select"):
        pass
    span.finish("OK", principal="etl-lambda", rows=12)
    assert tracing.current_ids() is None  # no longer current
    statement, rpc = spans.get_finished_spans()
    assert rpc.name == "datamorph.gateway.v1.DataMorphGateway/GetData"
    assert rpc.kind is SpanKind.SERVER
    assert rpc.context is not None
    assert format(rpc.context.trace_id, "032x") == TRACE_ID
    assert rpc.parent is not None
    assert format(rpc.parent.span_id, "016x") == PARENT_ID
    assert dict(rpc.attributes or {}) == {
        "rpc.system": "grpc",
        "rpc.service": "datamorph.gateway.v1.DataMorphGateway",
        "rpc.method": "GetData",
        "rpc.grpc.status_code": 0,
        "datamorph.rpc.code": "OK",
        "datamorph.principal": "etl-lambda",
        "datamorph.rows": 12,
    }
    assert rpc.status.status_code is StatusCode.UNSET
    assert rpc.resource.attributes["service.name"] == "datamorph-gateway"
    assert statement.parent is not None
    assert statement.parent.span_id == rpc.context.span_id
    assert statement.name == "SELECT"
    assert statement.kind is SpanKind.CLIENT
    assert dict(statement.attributes or {})["db.system"] == "postgresql"
    assert dict(statement.attributes or {})["db.operation"] == "SELECT"


def test_without_a_traceparent_the_rpc_starts_a_trace(spans: InMemorySpanExporter) -> None:
    span = tracing.start_rpc_span("ExecuteQuery", [("traceparent", "garbage")])
    assert span is not None
    span.finish("INTERNAL")
    (rpc,) = spans.get_finished_spans()
    assert rpc.parent is None
    assert rpc.status.status_code is StatusCode.ERROR
    assert dict(rpc.attributes or {})["rpc.grpc.status_code"] == 13


def test_a_client_error_is_not_a_span_error(spans: InMemorySpanExporter) -> None:
    span = tracing.start_rpc_span("GetData", None)
    assert span is not None
    span.finish("INVALID_ARGUMENT")
    assert spans.get_finished_spans()[0].status.status_code is StatusCode.UNSET


@pytest.mark.parametrize(
    ("kind", "recorded"),
    [
        ("SELECT", "SELECT"),
        ("copy", "COPY"),
        ("CREATE TABLE", "CREATE TABLE"),
        ("SELECT 'hunter2'", "OTHER"),
        ("SELECT * FROM customers WHERE ssn = 123", "OTHER"),
        ("", "OTHER"),
    ],
)
def test_a_statement_span_never_carries_sql_text(
    spans: InMemorySpanExporter, kind: str, recorded: str
) -> None:
    with tracing.db_span(kind):
        pass
    (statement,) = spans.get_finished_spans()
    assert statement.name == recorded
    assert dict(statement.attributes or {})["db.operation"] == recorded


def test_a_failing_statement_is_recorded_and_still_raised(spans: InMemorySpanExporter) -> None:
    with pytest.raises(ZeroDivisionError), tracing.db_span("UPDATE"):
        _ = 1 / 0
    (statement,) = spans.get_finished_spans()
    assert statement.status.status_code is StatusCode.ERROR
    assert [e.name for e in statement.events] == ["exception"]


def test_aws_calls_are_child_spans(moto_url: str, aws_session: boto3.session.Session) -> None:
    exporter = InMemorySpanExporter()
    assert tracing.setup_tracing({}, exporter=exporter, set_global=False)
    try:
        span = tracing.start_rpc_span("StartWorkflow", [("traceparent", TRACEPARENT)])
        assert span is not None
        aws_session.client("dynamodb", endpoint_url=moto_url).list_tables()
        aws_session.client("secretsmanager", endpoint_url=moto_url).list_secrets()
        span.finish("OK")
    finally:
        tracing.shutdown_tracing()
    by_service = {
        str(dict(s.attributes or {}).get("rpc.service")): s for s in exporter.get_finished_spans()
    }
    rpc = by_service["datamorph.gateway.v1.DataMorphGateway"]
    assert rpc.context is not None
    for service, method in (("DynamoDB", "ListTables"), ("Secrets Manager", "ListSecrets")):
        call = by_service[service]
        assert dict(call.attributes or {})["rpc.method"] == method
        assert call.parent is not None
        assert call.parent.span_id == rpc.context.span_id
        assert call.kind is SpanKind.CLIENT


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def otel_environ(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """OTEL_* in the process's environment (where the SDK reads them), short timeouts."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    yield os.environ  # type: ignore[misc]
    tracing.shutdown_tracing()


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_an_unreachable_collector_never_reaches_the_caller(
    otel_environ: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    closed_port: int,
    protocol: str,
) -> None:
    caplog.set_level(logging.WARNING)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{closed_port}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
    assert tracing.setup_tracing(otel_environ, set_global=False, instrument_botocore=False)
    for _ in range(20):
        span = tracing.start_rpc_span("GetData", [])
        assert span is not None
        with tracing.db_span("SELECT"):
            pass
        span.finish("OK")
    time.sleep(0.2)  # the processor tries to export meanwhile
    started = time.monotonic()
    tracing.shutdown_tracing()
    assert time.monotonic() - started < 15
    assert "Failed to export" in caplog.text  # it tried, and said so in the log only


@pytest.mark.parametrize(
    ("name", "setting"),
    [
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "carrier-pigeon"),
        ("OTEL_TRACES_EXPORTER", "zipkin"),
    ],
)
def test_a_configuration_the_sdk_refuses_leaves_tracing_off(
    otel_environ: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    name: str,
    setting: str,
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
    monkeypatch.setenv(name, setting)
    with caplog.at_level(logging.WARNING, logger="datamorph_gateway.observability.tracing"):
        assert not tracing.setup_tracing(otel_environ, set_global=False)
    assert tracing.start_rpc_span("GetData", []) is None
    assert "tracing is off" in caplog.text
    assert setting in caplog.text
