"""Every metric of the gateway, named once: what ``metrics`` makes, what the dashboard and
the alert rules may name (``tests/observability/test_dashboards.py`` checks them against
``DEFINITIONS``), and the bounded label values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

__all__ = [
    "DEFINITIONS",
    "GRPC_CODES",
    "MAX_LABEL_VALUES",
    "METRIC_NAMES",
    "OUTCOMES",
    "Listener",
    "MetricDef",
]

Kind = Literal["counter", "gauge", "histogram"]

# 0.5 ms to 60 s (the longest a call may take); the pool's wait up to its 10 s timeout.
RPC_BUCKETS_S: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
)  # fmt: skip
POOL_WAIT_BUCKETS_S: tuple[float, ...] = (
    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
)  # fmt: skip
MAX_LABEL_VALUES = 64
OUTCOMES = ("success", "error", "timeout", "abandoned", "refused")
GRPC_CODES = (
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
    "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
    "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
    "UNAUTHENTICATED",
)  # fmt: skip


@dataclass(frozen=True)
class MetricDef:
    """One metric as exposed: ``name`` is the family (counters end in ``_total``)."""

    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()
    multiprocess_mode: str = ""  # gauges: how processes' values are combined
    buckets: tuple[float, ...] = ()

    def samples(self) -> tuple[str, ...]:
        """The sample names a scrape shows for it."""
        if self.kind == "histogram":
            return tuple(self.name + s for s in ("_bucket", "_sum", "_count"))
        return (self.name,)


DEFINITIONS: tuple[MetricDef, ...] = (
    MetricDef("datamorph_rpc_requests_total", "counter", "RPCs answered, by method and status "
              "code.", ("method", "code")),
    MetricDef("datamorph_rpc_duration_seconds", "histogram", "Time from a call's arrival to "
              "its answer, by method.", ("method",), buckets=RPC_BUCKETS_S),
    MetricDef("datamorph_db_pool_connections", "gauge", "Database connections of the pools, "
              "lent (in_use) or waiting to be (idle).", ("state",), "livesum"),
    MetricDef("datamorph_db_pool_max_connections", "gauge", "The pools' limit on open "
              "connections.", (), "livesum"),
    MetricDef("datamorph_db_pool_wait_seconds", "histogram", "Time a call waited for a pooled "
              "connection.", buckets=POOL_WAIT_BUCKETS_S),
    MetricDef("datamorph_db_errors_total", "counter", "Database errors, by SQLSTATE class "
              "(none: the connection failed without one).", ("sqlstate_class",)),
    MetricDef("datamorph_workflows_running", "gauge", "Workflows this gateway is running.",
              (), "livesum"),
    MetricDef("datamorph_workflows_total", "counter", "Workflows ended or refused, by outcome.",
              ("outcome",)),
    MetricDef("datamorph_stream_rows_total", "counter", "Rows sent in streamed answers, by "
              "method.", ("method",)),
    MetricDef("datamorph_result_truncated_total", "counter", "Answers cut short at the row or "
              "byte limit."),
    MetricDef("datamorph_auth_failures_total", "counter", "Calls whose credentials were "
              "refused, by reason.", ("reason",)),
    MetricDef("datamorph_rate_limited_total", "counter", "Calls refused by a principal's rate "
              "limit."),
    MetricDef("datamorph_build_info", "gauge", "Always 1; the gateway's version as a label.",
              ("version",), "livemax"),
)  # fmt: skip
METRIC_NAMES: tuple[str, ...] = tuple(d.name for d in DEFINITIONS)


class Listener(Protocol):
    """Another sink for the same events (``emf.EmfAggregator``)."""

    def rpc_finished(self, method: str, code: str, seconds: float) -> None: ...
    def pool_wait(self, seconds: float) -> None: ...
    def pool_connections(self, in_use: int, idle: int) -> None: ...
    def db_error(self, sqlstate_class: str) -> None: ...
    def workflow_started(self) -> None: ...
    def workflow_ended(self, outcome: str) -> None: ...
