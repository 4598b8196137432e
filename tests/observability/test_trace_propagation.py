"""A traced caller's trace continues in the gateway: datamorph_client sends the current
span's ``traceparent``, and the RPC span takes it from the call's metadata (a real gRPC
server in this process; its one method stands in for the gateway's ``@rpc`` boundary)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from datamorph.gateway.v1 import gateway_pb2 as pb
from datamorph.gateway.v1 import gateway_pb2_grpc as pb_grpc
from datamorph_client import GatewayClient
from datamorph_gateway.observability import tracing


class _Traced(pb_grpc.DataMorphGatewayServicer):
    def Health(self, request: pb.HealthRequest, context: grpc.ServicerContext) -> pb.HealthResponse:
        span = tracing.start_rpc_span("Health", context.invocation_metadata())
        assert span is not None
        span.finish("OK")
        return pb.HealthResponse(status="healthy", version="test")


@pytest.fixture
def address() -> Iterator[str]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    pb_grpc.add_DataMorphGatewayServicer_to_server(_Traced(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(None)


def test_the_gateways_span_joins_the_callers_trace(
    spans: InMemorySpanExporter, address: str
) -> None:
    caller = TracerProvider().get_tracer("a-lambda")
    with GatewayClient(address) as client:
        with caller.start_as_current_span("handler") as handler:
            assert client.health().status == "healthy"
        client.health()  # outside any span: a trace of its own
    joined, alone = spans.get_finished_spans()
    context = handler.get_span_context()
    assert joined.parent is not None
    assert joined.parent.trace_id == context.trace_id
    assert joined.parent.span_id == context.span_id
    assert alone.parent is None
