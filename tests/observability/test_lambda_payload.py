"""With tracing on, the orchestrator still gets exactly CONTRACT.md's event: the botocore
instrumentation's Lambda extension would add the trace context to Invoke's payload as a
``headers`` object, which the gateway turns off; the Invoke call is still a span (against
the Lambda stand-in of tests/fixtures/aws.py, which records the payload it was sent)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import boto3
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from datamorph_gateway.config import Settings
from datamorph_gateway.observability import tracing
from datamorph_gateway.workflows import LambdaOrchestrator

from ..fixtures.aws import LambdaStandIn, Reply


@pytest.fixture
def traced_botocore() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    assert tracing.setup_tracing({}, exporter=exporter, set_global=False)
    yield exporter
    tracing.shutdown_tracing()


def test_the_orchestrator_gets_the_contracts_event_and_the_call_is_a_span(
    traced_botocore: InMemorySpanExporter,
    lambda_stand_in: LambdaStandIn,
    aws_session: boto3.session.Session,
) -> None:
    settings = Settings.from_flat(
        orchestrator_function="datamorph-orchestrator",
        lambda_endpoint_url=lambda_stand_in.url,
        orchestrator_read_timeout_s=10,
        orchestrator_connect_timeout_s=2,
    )
    orchestrator = LambdaOrchestrator.from_settings(
        settings.workflows, settings.aws, session=aws_session
    )
    body = {"status": "completed", "message": "done"}
    lambda_stand_in.reply = Reply(payload=json.dumps({"statusCode": 200, "body": body}).encode())
    event = {
        "user_prompt": "p",
        "prompt": "p",
        "source_tables": ["customers"],
        "target_table": "t",
        "run_id": "20250113_123456_abc123",
    }
    span = tracing.start_rpc_span("StartWorkflow", ())
    assert span is not None
    try:
        orchestrator.invoke(dict(event), timeout_s=10)
    finally:
        span.finish("OK")
        orchestrator.close()
    [call] = lambda_stand_in.calls
    assert call.event == event  # no "headers", nothing else added
    invoke, rpc = traced_botocore.get_finished_spans()
    assert invoke.name == "Lambda.Invoke"
    assert invoke.parent is not None
    assert invoke.parent.span_id == rpc.context.span_id
