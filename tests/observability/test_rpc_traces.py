"""A call's trace through the real Envoy into the gateway: the caller's W3C ``traceparent``
(an HTTP header on REST, which Envoy passes on as gRPC metadata) is the parent of the RPC's
span, whose children are the database statements by kind, never their text. An in-process
gateway, its spans kept in memory."""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from datamorph_client import GatewayClient

from ..fixtures.envoy import EnvoyFactory
from ..fixtures.gateway import GatewayFactory

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
SERVICE = "datamorph.gateway.v1.DataMorphGateway"


def _of_trace(spans: Sequence[ReadableSpan], trace_id: str) -> list[ReadableSpan]:
    return [s for s in spans if format(s.context.trace_id, "032x") == trace_id]


def _children(spans: Sequence[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    return [s for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id]


def test_a_rest_callers_traceparent_goes_through_envoy_to_the_rpc_and_db_spans(
    spans: InMemorySpanExporter, make_gateway: GatewayFactory, make_envoy: EnvoyFactory
) -> None:
    gateway = make_gateway()
    rest = make_envoy(gateway.address).rest
    headers = {"traceparent": f"00-{TRACE_ID}-{CALLER_SPAN}-01", "tracestate": "vendor=1"}
    body = {"table_names": ["customers"], "limit": 3}
    assert rest.post("/get/data", body, headers=headers).status == 200
    traced = _of_trace(spans.get_finished_spans(), TRACE_ID)
    [call] = [s for s in traced if s.name == f"{SERVICE}/GetData"]
    assert call.parent is not None
    assert format(call.parent.span_id, "016x") == CALLER_SPAN
    assert call.parent.is_remote
    assert call.attributes is not None
    assert call.attributes["datamorph.rpc.code"] == "OK"
    assert call.attributes["datamorph.principal"] == "anonymous"
    assert call.attributes["datamorph.rows"] == 3
    statements = _children(traced, call)
    assert statements, [s.name for s in traced]
    assert {s.name for s in statements} == {"SELECT"}
    assert {s.attributes["db.system"] for s in statements if s.attributes} == {"postgresql"}


def test_a_grpc_callers_query_is_one_span_with_its_statements_by_kind_never_text(
    spans: InMemorySpanExporter, make_gateway: GatewayFactory, make_envoy: EnvoyFactory
) -> None:
    gateway = make_gateway()
    envoy = make_envoy(gateway.address)
    caller = TracerProvider().get_tracer("a-lambda")
    with (
        GatewayClient(envoy.grpc_address) as client,  # sends the current span's traceparent
        caller.start_as_current_span("handler") as handler,
    ):
        client.execute_query("SELECT 'secret-literal' AS a; SELECT 2 AS b")
    trace_id = format(handler.get_span_context().trace_id, "032x")
    traced = _of_trace(spans.get_finished_spans(), trace_id)
    [call] = [s for s in traced if s.name == f"{SERVICE}/ExecuteQuery"]
    assert call.attributes is not None
    assert call.attributes["datamorph.rows"] == 1
    children = _children(traced, call)
    assert [s.name for s in children if s.name == "SELECT"] == ["SELECT", "SELECT"]
    shown = repr([(s.name, dict(s.attributes or {})) for s in traced])
    assert "secret-literal" not in shown
