"""One load run's outcome, the same for every load generator (wrk, grpc.aio, psycopg2).

Throughput counts only successful requests, and errors are kept by kind: a fast run
whose answers were errors must not read as a fast run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class LoadResult:
    """Requests completed in a bounded run, their latencies and their errors."""

    tool: str
    concurrency: int
    duration_s: float
    requests: int  # completed, successful or not
    ok: int
    errors: dict[str, int] = field(default_factory=dict)
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    mean_ms: float | None = None
    max_ms: float | None = None
    # Whether the run ended because its time was up or because it reached its request cap.
    stopped_by: str = "duration"

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def throughput_rps(self) -> float:
        return self.ok / self.duration_s if self.duration_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["throughput_rps"] = self.throughput_rps
        out["error_count"] = self.error_count
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LoadResult:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def percentile(ordered: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) of sorted values, nearest-rank, as wrk and hey report it."""
    if not ordered:
        raise ValueError("no values")
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summarize(
    tool: str,
    concurrency: int,
    duration_s: float,
    latencies_s: Sequence[float],
    errors: dict[str, int],
    *,
    stopped_by: str,
) -> LoadResult:
    """A LoadResult from per-request latencies (of successful requests) and error counts."""
    ordered = sorted(latencies_s)
    result = LoadResult(
        tool=tool,
        concurrency=concurrency,
        duration_s=duration_s,
        requests=len(ordered) + sum(errors.values()),
        ok=len(ordered),
        errors=dict(errors),
        stopped_by=stopped_by,
    )
    if ordered:
        result.p50_ms = percentile(ordered, 50) * 1000
        result.p90_ms = percentile(ordered, 90) * 1000
        result.p99_ms = percentile(ordered, 99) * 1000
        result.mean_ms = sum(ordered) / len(ordered) * 1000
        result.max_ms = ordered[-1] * 1000
    return result
