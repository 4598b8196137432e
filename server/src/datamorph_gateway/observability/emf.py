"""METRICS_EMF=true: RPC, pool and workflow metrics as CloudWatch Embedded Metric Format.

``EmfAggregator`` hears the same events as Prometheus (it is a ``metrics.Listener``),
keeps them in memory for an interval, then writes one EMF record (one JSON object, one
line) per dimension set: per (Method, Code) ``Requests``, ``ServerErrors`` and
``Duration``; per SQLSTATE class ``DbErrors``; per workflow outcome ``Workflows``; and one
for the process (``Service`` only): the pool's connections and waits, running workflows.
CloudWatch Logs turns each record into metrics (``_aws.CloudWatchMetrics``), rolling a
(Method, Code) record up to Method and to Service through the extra dimension sets.

A metric's value is a number or at most 100 numbers (the format's limit), each counted as
one sample. ``Duration`` and ``DbPoolWait`` are therefore the interval's own values while
there are at most 100, else 100 quantiles (0.5 %, 1.5 %, ... 99.5 %) of a log-scale
histogram (buckets 2 % wide): CloudWatch's percentiles of one record are then within a
percentile and 2 % of the truth, and ``Requests``, not Duration's sample count, is the
number of calls. Written directly rather than with ``aws-embedded-metrics``, which makes a
record per scope rather than per interval, flushes through asyncio, and brings aiohttp.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import IO, Any

from datamorph_gateway.observability.jsonlog import EMF_ATTRIBUTE

__all__ = ["EmfAggregator", "log_writer", "stream_writer"]

log = logging.getLogger(__name__)

NAMESPACE = "DataMorph/Gateway"
MAX_VALUES = 100  # numbers in one metric's array
SERVER_ERRORS = frozenset({"UNKNOWN", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "DEADLINE_EXCEEDED"})
_RUN_OUTCOMES = frozenset({"success", "error", "timeout"})  # the ends of runs that started here
_STEP = math.log(1.02)
_JOIN_S = 5.0

Writer = Callable[[str], None]


class _Distribution:
    """Values of one interval: exact up to MAX_VALUES, then a log-scale histogram."""

    __slots__ = ("buckets", "count", "values")

    def __init__(self) -> None:
        self.count = 0
        self.values: list[float] = []
        self.buckets: Counter[int] | None = None

    def add(self, value: float) -> None:
        self.count += 1
        if self.buckets is None:
            if len(self.values) < MAX_VALUES:
                self.values.append(value)
                return
            self.buckets = Counter(_bucket(v) for v in self.values)
        self.buckets[_bucket(value)] += 1

    def emf_values(self) -> list[float]:
        """At most MAX_VALUES numbers standing for the interval's values."""
        if self.buckets is None:
            return [round(v, 3) for v in self.values]
        ranked = sorted(self.buckets.items())
        out: list[float] = []
        seen, at = 0, 0
        for i in range(MAX_VALUES):
            rank = (i + 0.5) / MAX_VALUES * self.count
            while seen + ranked[at][1] < rank:
                seen += ranked[at][1]
                at += 1
            out.append(round(_middle(ranked[at][0]), 3))
        return out


def _bucket(value: float) -> int:
    return math.floor(math.log(value) / _STEP) if value > 0 else -(2**31)


def _middle(bucket: int) -> float:
    return 0.0 if bucket == -(2**31) else math.exp((bucket + 0.5) * _STEP)


class EmfAggregator:
    """Collects one interval's metrics and writes them as EMF records (``flush``).

    ``start`` flushes every ``interval_s`` from a daemon thread; ``close`` stops it and
    writes what is left. ``write`` gets each record as one line of JSON.
    """

    def __init__(
        self,
        write: Writer,
        *,
        interval_s: float = 60.0,
        namespace: str = NAMESPACE,
        service: str = "datamorph-gateway",
        clock: Callable[[], float] = time.time,
    ) -> None:
        if interval_s <= 0:
            raise ValueError("the EMF interval must be positive")
        self._write = write
        self.interval_s = interval_s
        self._namespace = namespace
        self._service = service
        self._clock = clock
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._in_use = self._idle = self._peak = self._running = 0
        self._pool_seen = False
        self._reset(clock())

    def _reset(self, now: float) -> None:
        self._started = now
        self._rpcs: dict[tuple[str, str], _Distribution] = {}
        self._waits = _Distribution()
        self._db_errors: Counter[str] = Counter()
        self._outcomes: Counter[str] = Counter()
        self._runs_started = 0
        self._peak = self._in_use

    # -- what it hears (metrics.Listener) ---------------------------------------------

    def rpc_finished(self, method: str, code: str, seconds: float) -> None:
        with self._lock:
            found = self._rpcs.get((method, code))
            if found is None:
                found = self._rpcs[(method, code)] = _Distribution()
            found.add(seconds * 1000)

    def pool_wait(self, seconds: float) -> None:
        with self._lock:
            self._waits.add(seconds * 1000)

    def pool_connections(self, in_use: int, idle: int) -> None:
        with self._lock:
            self._in_use, self._idle, self._pool_seen = in_use, idle, True
            self._peak = max(self._peak, in_use)

    def db_error(self, sqlstate_class: str) -> None:
        with self._lock:
            self._db_errors[sqlstate_class] += 1

    def workflow_started(self) -> None:
        with self._lock:
            self._running += 1
            self._runs_started += 1

    def workflow_ended(self, outcome: str) -> None:
        with self._lock:
            self._outcomes[outcome] += 1
            if outcome in _RUN_OUTCOMES:
                self._running -= 1

    # -- writing ----------------------------------------------------------------------

    def flush(self) -> int:
        """Write the interval so far, start the next; the number of records written."""
        with self._lock:
            records = self._records()
            self._reset(self._clock())
        for record in records:
            self._write(json.dumps(record, separators=(",", ":")))
        return len(records)

    def _records(self) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = []
        for (method, code), durations in sorted(self._rpcs.items()):
            errors = durations.count if code in SERVER_ERRORS else 0
            records.append(
                self._record(
                    {"Method": method, "Code": code},
                    [["Service", "Method", "Code"], ["Service", "Method"], ["Service"]],
                    {"Requests": ("Count", durations.count), "ServerErrors": ("Count", errors)},
                    {"Duration": ("Milliseconds", durations.emf_values())},
                )
            )
        for sqlstate_class, count in sorted(self._db_errors.items()):
            records.append(
                self._record(
                    {"SqlstateClass": sqlstate_class},
                    [["Service", "SqlstateClass"], ["Service"]],
                    {"DbErrors": ("Count", count)},
                )
            )
        for outcome, count in sorted(self._outcomes.items()):
            records.append(
                self._record(
                    {"Outcome": outcome},
                    [["Service", "Outcome"], ["Service"]],
                    {"Workflows": ("Count", count)},
                )
            )
        process: dict[str, tuple[str, Any]] = {
            "WorkflowsRunning": ("Count", self._running),
            "WorkflowsStarted": ("Count", self._runs_started),
        }
        if self._pool_seen:
            process["DbPoolInUse"] = ("Count", self._in_use)
            process["DbPoolInUseMax"] = ("Count", self._peak)
            process["DbPoolIdle"] = ("Count", self._idle)
        if self._waits.count:
            process["DbPoolWait"] = ("Milliseconds", self._waits.emf_values())
        records.append(self._record({}, [["Service"]], process))
        return records

    def _record(
        self,
        dimensions: dict[str, str],
        dimension_sets: list[list[str]],
        *metric_groups: dict[str, tuple[str, Any]],
    ) -> dict[str, Any]:
        metrics = {
            name: unit_value for group in metric_groups for name, unit_value in group.items()
        }
        record: dict[str, Any] = {
            "_aws": {
                "Timestamp": int(self._started * 1000),
                "CloudWatchMetrics": [
                    {
                        "Namespace": self._namespace,
                        "Dimensions": dimension_sets,
                        "Metrics": [{"Name": n, "Unit": u} for n, (u, _) in metrics.items()],
                    }
                ],
            },
            "Service": self._service,
            **dimensions,
            "pid": os.getpid(),
            "interval_s": self.interval_s,
        }
        record.update({name: value for name, (_, value) in metrics.items()})
        return record

    # -- the interval's thread --------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="emf-flush", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.flush()
            except Exception:
                log.exception("writing the EMF records failed")

    def close(self) -> None:
        """Stop the thread and write the last (partial) interval."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(_JOIN_S)
            self._thread = None
        self.flush()


def stream_writer(stream: IO[str]) -> Writer:
    """Records as lines on a stream (stdout for Lambda or ECS's awslogs driver)."""
    lock = threading.Lock()

    def write(record: str) -> None:
        with lock:
            stream.write(record + "\n")
            stream.flush()

    return write


def log_writer(logger: logging.Logger) -> Writer:
    """Records through the log (LOG_FILE, which CloudWatch's agent tails), written as they
    are by ``jsonlog``'s formatters whatever LOG_FORMAT is."""

    def write(record: str) -> None:
        logger.info("%s", record, extra={EMF_ATTRIBUTE: record})

    return write
