"""W3C trace context on every call, when the caller traces with OpenTelemetry.

A Lambda instrumented with OpenTelemetry has ``opentelemetry-api``; then each call carries
the current span's ``traceparent`` (and ``tracestate``, ``baggage``, as the caller's
propagators write them), and the gateway's spans join the caller's trace. Without the
package, or outside a span, nothing is added. The import is tried once.
"""

from __future__ import annotations

from collections.abc import Callable

_Inject = Callable[[dict[str, str]], None]
_looked_up = False
_inject: _Inject | None = None


def trace_metadata() -> list[tuple[str, str]]:
    """The trace context of the current span as gRPC metadata ([] when there is none)."""
    inject = _injector()
    if inject is None:
        return []
    carrier: dict[str, str] = {}
    inject(carrier)
    return list(carrier.items())


def _injector() -> _Inject | None:
    global _looked_up, _inject
    if not _looked_up:
        try:
            from opentelemetry import propagate
        except ImportError:
            _inject = None
        else:
            _inject = propagate.inject
        _looked_up = True
    return _inject
