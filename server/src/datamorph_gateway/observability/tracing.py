"""OpenTelemetry traces: a span per RPC, a child per database statement and per AWS call.

Off, and free, unless the standard variables ask for it: OTEL_TRACES_EXPORTER (``otlp``,
``console``; ``none`` keeps it off), OTEL_EXPORTER_OTLP_ENDPOINT or
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, and OTEL_SDK_DISABLED not ``true``. Off, nothing of
OpenTelemetry is imported and ``start_rpc_span`` returns None at the cost of one test.

On, ``setup_tracing`` makes an SDK TracerProvider with a BatchSpanProcessor and the OTLP
exporter (gRPC unless OTEL_EXPORTER_OTLP[_TRACES]_PROTOCOL says ``http/protobuf``, as
Python's SDK chooses), and instruments botocore, so Lambda, DynamoDB and Secrets Manager
calls are child spans. Its Lambda extension would also write the trace context into each
Invoke's payload (a ``headers`` object); the orchestrator's event is fixed by CONTRACT.md,
so that is turned off (``_keep_lambda_payloads``): the Invoke span stays. The SDK reads
the other OTEL_* variables itself (endpoint, headers, timeout, sampler, OTEL_SERVICE_NAME,
OTEL_BSP_*), as every OpenTelemetry SDK does; ``service.name`` is ``datamorph-gateway``
unless they name it. Spans are exported from the processor's thread: an unreachable
collector costs log lines, never an error in a call.

A caller's W3C ``traceparent`` (gRPC metadata, or the HTTP header Envoy forwards as such)
makes the RPC span its child. Database spans carry the statement's kind (``SELECT``,
``COPY``), never its text, which may hold literals.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from contextvars import Token

    from opentelemetry.context.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span, Tracer

__all__ = [
    "RpcSpan",
    "current_ids",
    "db_span",
    "setup_tracing",
    "shutdown_tracing",
    "start_rpc_span",
    "statement_kind",
    "tracing_wanted",
]

log = logging.getLogger(__name__)

SERVICE_NAME = "datamorph-gateway"
RPC_SERVICE = "datamorph.gateway.v1.DataMorphGateway"
_ENDPOINTS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
_PROTOCOLS = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
# gRPC status codes by name; the server-side failures mark a span as an error
# (OpenTelemetry's semantic conventions for gRPC servers).
_CODES = {
    "OK": 0, "CANCELLED": 1, "UNKNOWN": 2, "INVALID_ARGUMENT": 3, "DEADLINE_EXCEEDED": 4,
    "NOT_FOUND": 5, "ALREADY_EXISTS": 6, "PERMISSION_DENIED": 7, "RESOURCE_EXHAUSTED": 8,
    "FAILED_PRECONDITION": 9, "ABORTED": 10, "OUT_OF_RANGE": 11, "UNIMPLEMENTED": 12,
    "INTERNAL": 13, "UNAVAILABLE": 14, "DATA_LOSS": 15, "UNAUTHENTICATED": 16,
}  # fmt: skip
_SERVER_ERRORS = frozenset(
    {"UNKNOWN", "DEADLINE_EXCEEDED", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS"}
)
_KIND = re.compile(r"^[A-Z][A-Z ]{0,39}$")
_NOTHING: contextlib.nullcontext[None] = contextlib.nullcontext()


class _Tracing:
    def __init__(self, provider: TracerProvider, tracer: Tracer, botocore: Any) -> None:
        self.provider = provider
        self.tracer = tracer
        self.botocore = botocore


_on: _Tracing | None = None


def tracing_wanted(environ: Mapping[str, str]) -> bool:
    """Whether the OTEL_* variables ask for traces (the process's, passed in)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporters == "none":
        return False
    return bool(exporters) or any(environ.get(name, "").strip() for name in _ENDPOINTS)


def setup_tracing(
    environ: Mapping[str, str],
    *,
    version: str = "",
    exporter: SpanExporter | None = None,
    set_global: bool = True,
    instrument_botocore: bool = True,
) -> bool:
    """Start tracing if the variables ask (or ``exporter`` is given); True when on.

    Never raises: a configuration the SDK refuses is logged and tracing stays off. An
    ``exporter`` (tests, tools) gets every span as it ends, without batching.
    ``set_global`` makes the provider OpenTelemetry's global one (once per process).
    """
    global _on
    if _on is not None:
        return True
    if exporter is None and not tracing_wanted(environ):
        return False
    try:
        _on = _start(environ, version, exporter, set_global, instrument_botocore)
    except Exception as exc:
        log.warning("tracing is off: %s", exc, exc_info=log.isEnabledFor(logging.DEBUG))
        return False
    return True


def _start(
    environ: Mapping[str, str],
    version: str,
    exporter: SpanExporter | None,
    set_global: bool,
    instrument_botocore: bool,
) -> _Tracing:
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    resource = Resource.create({"service.version": version} if version else {})
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": SERVICE_NAME}))
    provider = TracerProvider(resource=resource)
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        for made in _exporters(environ):
            provider.add_span_processor(BatchSpanProcessor(made))
    if set_global:
        trace.set_tracer_provider(provider)
    botocore = None
    if instrument_botocore:
        from opentelemetry.instrumentation.botocore import BotocoreInstrumentor

        botocore = BotocoreInstrumentor()
        botocore.instrument(tracer_provider=provider)
        try:
            _keep_lambda_payloads(botocore)
        except Exception:
            botocore.uninstrument()  # never rewrite an orchestrator's event
            raise
    return _Tracing(provider, provider.get_tracer("datamorph_gateway", version or None), botocore)


def _keep_lambda_payloads(instrumentor: Any) -> None:
    """Trace Lambda calls without adding the trace context to Invoke's ``Payload``.

    The instrumentation has no switch for it: its extension registry maps a service to its
    extension class, so Lambda's is replaced by one whose ``before_service_call`` (where
    the payload is rewritten, and nothing else) does nothing. Checked by
    tests/observability/test_lambda_payload.py against the installed version.
    """
    from opentelemetry.instrumentation.botocore.extensions.lmbd import _LambdaExtension

    class _KeepPayload(_LambdaExtension):
        def before_service_call(self, span: Any, instrumentor_context: Any) -> None:
            pass

    registry = instrumentor.extension_registry
    registry._extensions = {**registry._extensions, "lambda": lambda: _KeepPayload}


def _exporters(environ: Mapping[str, str]) -> list[SpanExporter]:
    names = [n.strip().lower() for n in environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",")]
    made: list[SpanExporter] = []
    for name in names:
        if name == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            made.append(ConsoleSpanExporter())
        elif name in ("otlp", "otlp_proto_grpc", "otlp_proto_http"):
            made.append(_otlp(name, environ))
        elif name not in ("", "none"):
            raise ValueError(f"OTEL_TRACES_EXPORTER names {name!r}: only otlp and console")
    return made


def _otlp(name: str, environ: Mapping[str, str]) -> SpanExporter:
    protocol = next((environ[p].strip() for p in _PROTOCOLS if environ.get(p, "").strip()), "")
    http = name == "otlp_proto_http" or (name == "otlp" and protocol == "http/protobuf")
    if name == "otlp" and protocol not in ("", "grpc", "http/protobuf"):
        raise ValueError(f"unsupported OTLP protocol {protocol!r} (grpc or http/protobuf)")
    if http:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
        OTLPSpanExporter as GrpcExporter,
    )

    return GrpcExporter()


def shutdown_tracing() -> None:
    """Export what is left (within the exporter's timeout) and turn tracing off."""
    global _on
    on, _on = _on, None
    if on is None:
        return
    if on.botocore is not None:
        on.botocore.uninstrument()
    on.provider.shutdown()


# -- spans ---------------------------------------------------------------------------------


class RpcSpan:
    """The span of one RPC, current until ``finish``."""

    __slots__ = ("_span", "_token")

    def __init__(self, span: Span, token: Token[Context]) -> None:
        self._span = span
        self._token = token

    def finish(self, code: str, *, principal: str | None = None, rows: int | None = None) -> None:
        """End it with the call's status code name, who called and the rows it returned."""
        from opentelemetry import context
        from opentelemetry.trace import Status, StatusCode

        span = self._span
        span.set_attribute("rpc.grpc.status_code", _CODES.get(code, 2))
        span.set_attribute("datamorph.rpc.code", code)
        if principal is not None:
            span.set_attribute("datamorph.principal", principal)
        if rows is not None:
            span.set_attribute("datamorph.rows", rows)
        if code in _SERVER_ERRORS:
            span.set_status(Status(StatusCode.ERROR, code))
        span.end()
        context.detach(self._token)  # logs, never raises, if another context ends it


def start_rpc_span(method: str, metadata: Iterable[tuple[str, Any]] | None) -> RpcSpan | None:
    """The RPC's span, made current, child of the caller's ``traceparent`` (None when off).

    ``metadata`` is ``context.invocation_metadata()``: (key, value) pairs.
    """
    on = _on
    if on is None:
        return None
    from opentelemetry import context, propagate, trace

    carrier = {k: v for k, v in metadata or () if isinstance(v, str)}
    parent = propagate.extract(carrier)
    span = on.tracer.start_span(
        f"{RPC_SERVICE}/{method}",
        context=parent,
        kind=trace.SpanKind.SERVER,
        attributes={"rpc.system": "grpc", "rpc.service": RPC_SERVICE, "rpc.method": method},
    )
    return RpcSpan(span, context.attach(trace.set_span_in_context(span, parent)))


def statement_kind(verb: str) -> str:
    """A statement kind fit for a span: ``SELECT``, ``CREATE TABLE``; anything else OTHER."""
    kind = verb.strip().upper()
    return kind if _KIND.match(kind) else "OTHER"


def db_span(kind: str) -> contextlib.AbstractContextManager[object]:
    """A child span around one database statement of the given kind (nothing when off).

    ``kind`` is a statement kind (``Statement.verb``, or a fixed word for the gateway's own
    statements); anything that does not look like one is recorded as OTHER.
    """
    on = _on
    if on is None:
        return _NOTHING
    from opentelemetry.trace import SpanKind

    operation = statement_kind(kind)
    return on.tracer.start_as_current_span(
        operation,
        kind=SpanKind.CLIENT,
        attributes={
            "db.system": "postgresql",
            "db.system.name": "postgresql",
            "db.operation": operation,
            "db.operation.name": operation,
        },
    )


def current_ids() -> tuple[str, str] | None:
    """The current span's trace and span ids in hex (for log lines); None when off or none."""
    if _on is None:
        return None
    from opentelemetry import trace

    found = trace.get_current_span().get_span_context()
    if not found.is_valid:
        return None
    return format(found.trace_id, "032x"), format(found.span_id, "016x")
