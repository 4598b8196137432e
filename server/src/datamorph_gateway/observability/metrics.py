"""The gateway's Prometheus metrics: the calls that record them, and ``init``.

``definitions`` names every metric once. The layers record through the functions below
(``rpc_finished``, ``pool_wait``, ...), which cost one dict look-up and the increments when
on, and nothing when off: the label children of a (method, code) pair are bound once, on
its first call, into one cached function.

A process calls ``init`` once at start, before it records. In single-process mode the
metrics live in a registry of their own. With ``multiprocess_dir`` (the launcher's N
gateway processes) prometheus-client's multiprocess mode is used: each process writes its
values to memory-mapped files in that directory (named by pid), and whichever process
serves ``/metrics`` (``metrics_server``) adds up every file there, dead processes' counters
included. The library picks its mode from ``PROMETHEUS_MULTIPROC_DIR`` when a value is
made, so ``init`` sets the variable and the value class before it makes any metric. Gauges
that say what is now (pool connections, running workflows) are ``livesum``: the sum over
live processes, a dead one's share removed by ``metrics_server.process_exited``.

Labels are bounded: RPC names and status codes, SQLSTATE classes, fixed outcome words, and
at most ``MAX_LABEL_VALUES`` values of any label (more fold into ``other``); never a table,
SQL text or run id.
"""

from __future__ import annotations

import functools
import os
import re
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from datamorph_gateway.observability.definitions import (
    DEFINITIONS,
    GRPC_CODES,
    MAX_LABEL_VALUES,
    OUTCOMES,
    Listener,
    MetricDef,
)

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = [
    "PoolGauge",
    "auth_failure",
    "db_error",
    "init",
    "pool_gauge",
    "pool_wait",
    "rate_limited",
    "registry",
    "result_truncated",
    "rpc_finished",
    "stream_rows",
    "workflow_abandoned",
    "workflow_finished",
    "workflow_refused",
    "workflow_started",
]

Finished = Literal["success", "error", "timeout"]


class _State:
    """What ``init`` made: the metric objects and the label values seen so far."""

    def __init__(self, metrics: dict[str, Any], registry: CollectorRegistry | None) -> None:
        self.metrics = metrics
        self.registry = registry
        self.children: dict[tuple[str, str], Any] = {}
        self.seen: dict[str, set[str]] = {}

    def child(self, name: str, value: str) -> Any:
        """The child of a one-label metric, made once."""
        key = (name, value)
        found = self.children.get(key)
        if found is None:
            label = _bounded(self.seen.setdefault(name, set()), value)
            found = self.children[key] = self.metrics[name].labels(label)
        return found


_state: _State | None = None
_listener: Listener | None = None
_rpc_bound: dict[tuple[str, str], Callable[[float], None]] = {}
_pool_lock = threading.Lock()
_pool_totals = [0, 0, 0]  # in use, idle, max: over every pool of this process


def init(
    version: str,
    *,
    prometheus: bool = True,
    multiprocess_dir: str | None = None,
    listener: Listener | None = None,
) -> None:
    """Make this process's metrics; call once at start, before anything records.

    ``prometheus=False`` records nothing for Prometheus (METRICS_PORT=0); ``listener``
    still hears every event. ``multiprocess_dir`` must exist (the launcher empties it).
    """
    global _state, _listener
    _listener = listener
    _rpc_bound.clear()
    if not prometheus:
        _state = None
        return
    if multiprocess_dir is not None:
        if not os.path.isdir(multiprocess_dir):
            raise ValueError(f"the metrics directory {multiprocess_dir!r} does not exist")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = multiprocess_dir
    import prometheus_client
    from prometheus_client import values

    multiprocess = getattr(values.ValueClass, "_multiprocess", False)
    if multiprocess_dir is not None and not multiprocess:
        values.ValueClass = values.MultiProcessValue()  # imported before the variable was set
    elif multiprocess_dir is None and multiprocess:
        values.ValueClass = values.MutexValue  # the environment's choice; ours is one process
    prometheus_client.disable_created_metrics()
    own = None if multiprocess_dir is not None else prometheus_client.CollectorRegistry()
    state = _State({d.name: _make(d, own) for d in DEFINITIONS}, own)
    state.metrics["datamorph_build_info"].labels(version).set(1)
    _state = state
    with _pool_lock:  # pools made before: their totals reach the gauges now
        _publish_pool_locked(with_max=True)


def registry() -> CollectorRegistry | None:
    """The single-process registry to serve (None: off, or multiprocess mode)."""
    return _state.registry if _state is not None else None


def _make(d: MetricDef, own: CollectorRegistry | None) -> Any:
    import prometheus_client as pc

    if d.kind == "counter":
        return pc.Counter(d.name, d.help, d.labels, registry=own)
    if d.kind == "histogram":
        return pc.Histogram(d.name, d.help, d.labels, registry=own, buckets=d.buckets)
    mode: Any = d.multiprocess_mode
    return pc.Gauge(d.name, d.help, d.labels, registry=own, multiprocess_mode=mode)


_LABEL_TEXT = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


def _bounded(seen: set[str], value: str) -> str:
    if not _LABEL_TEXT.match(value):
        return "other"
    if value not in seen:
        if len(seen) >= MAX_LABEL_VALUES:
            return "other"
        seen.add(value)
    return value


# -- the RPC boundary -------------------------------------------------------------------


def rpc_finished(method: str, code: str, seconds: float) -> None:
    """One answered RPC: its method (``GetData``), status code name (``OK``), duration."""
    record = _rpc_bound.get((method, code))
    if record is None:
        record = _bind_rpc(method, code)
    record(seconds)


def _bind_rpc(method: str, code: str) -> Callable[[float], None]:
    code_label = code if code in GRPC_CODES else "UNKNOWN"
    steps: list[Callable[[float], None]] = []
    if _state is not None:
        label = _bounded(_state.seen.setdefault("method", set()), method)
        count = _state.metrics["datamorph_rpc_requests_total"].labels(label, code_label).inc
        steps += [
            lambda _: count(),
            _state.metrics["datamorph_rpc_duration_seconds"].labels(label).observe,
        ]
    if _listener is not None:
        steps.append(functools.partial(_listener.rpc_finished, method, code_label))

    def record(seconds: float) -> None:
        for step in steps:
            step(seconds)

    _rpc_bound[(method, code)] = record if steps else _ignore
    return _rpc_bound[(method, code)]


def _ignore(seconds: float) -> None:
    pass


def stream_rows(method: str, rows: int) -> None:
    """Rows a streaming RPC sent (call per batch, or once at the end)."""
    if _state is not None and rows > 0:
        _state.child("datamorph_stream_rows_total", method).inc(rows)


def result_truncated() -> None:
    """An answer stopped at MAX_RESULT_ROWS or MAX_RESULT_BYTES."""
    if _state is not None:
        _state.metrics["datamorph_result_truncated_total"].inc()


def auth_failure(reason: str) -> None:
    """Credentials refused; ``reason`` is the authenticator's word (``expired``...)."""
    if _state is not None:
        _state.child("datamorph_auth_failures_total", reason).inc()


def rate_limited() -> None:
    if _state is not None:
        _state.metrics["datamorph_rate_limited_total"].inc()


# -- the database -------------------------------------------------------------------------


def pool_wait(seconds: float) -> None:
    """How long a borrower waited for a connection (0 when one was idle)."""
    if _state is not None:
        _state.metrics["datamorph_db_pool_wait_seconds"].observe(seconds)
    if _listener is not None:
        _listener.pool_wait(seconds)


_SQLSTATE_CLASS = re.compile(r"^[0-9A-Z]{2}")


def db_error(sqlstate: str | None) -> None:
    """A database error; only its SQLSTATE's class (``42``, ``57``) becomes a label."""
    match = _SQLSTATE_CLASS.match(sqlstate or "")
    sqlstate_class = match.group(0) if match else "none"
    if _state is not None:
        _state.child("datamorph_db_errors_total", sqlstate_class).inc()
    if _listener is not None:
        _listener.db_error(sqlstate_class)


class PoolGauge:
    """One pool's share of the connection gauges; ``report`` after each change."""

    def __init__(self, max_size: int) -> None:
        self._in_use = 0
        self._idle = 0
        self._max = max_size
        self._closed = False
        _add_pool(0, 0, max_size)

    def report(self, in_use: int, idle: int) -> None:
        """The pool's counts now (its lock held, so that reports keep their order)."""
        d_in_use, d_idle = in_use - self._in_use, idle - self._idle
        if (d_in_use or d_idle) and not self._closed:
            self._in_use, self._idle = in_use, idle
            _add_pool(d_in_use, d_idle, 0)

    def close(self) -> None:
        """The pool is gone: its share leaves the totals, and later reports are ignored
        (a closed pool still closes the connections that come back)."""
        if not self._closed:
            self._closed = True
            _add_pool(-self._in_use, -self._idle, -self._max)


def pool_gauge(max_size: int) -> PoolGauge:
    """A pool's handle on the gauges, made when the pool is."""
    return PoolGauge(max_size)


def _add_pool(d_in_use: int, d_idle: int, d_max: int) -> None:
    with _pool_lock:
        totals = _pool_totals
        totals[0] += d_in_use
        totals[1] += d_idle
        totals[2] += d_max
        in_use, idle = totals[0], totals[1]
        _publish_pool_locked(with_max=d_max != 0)
    if _listener is not None:
        _listener.pool_connections(in_use, idle)


def _publish_pool_locked(*, with_max: bool) -> None:
    """Set (never add to) the gauges: in multiprocess mode each process holds its sum."""
    state = _state
    if state is not None:
        in_use, idle, limit = _pool_totals
        state.child("datamorph_db_pool_connections", "in_use").set(in_use)
        state.child("datamorph_db_pool_connections", "idle").set(idle)
        if with_max:
            state.metrics["datamorph_db_pool_max_connections"].set(limit)


# -- workflows ----------------------------------------------------------------------------


def workflow_started() -> None:
    """A run of this process began (its orchestrator is being invoked)."""
    if _state is not None:
        _state.metrics["datamorph_workflows_running"].inc()
    if _listener is not None:
        _listener.workflow_started()


def workflow_finished(outcome: Finished) -> None:
    """A run that ``workflow_started`` counted ended: success, error or timeout."""
    if _state is not None:
        _state.metrics["datamorph_workflows_running"].dec()
    _ended(outcome)


def workflow_refused() -> None:
    """StartWorkflow refused at a limit: no run began."""
    _ended("refused")


def workflow_abandoned() -> None:
    """This process ended a run whose gateway stopped (it never ran here)."""
    _ended("abandoned")


def _ended(outcome: str) -> None:
    if outcome not in OUTCOMES:
        raise ValueError(f"unknown workflow outcome {outcome!r}")
    if _state is not None:
        _state.child("datamorph_workflows_total", outcome).inc()
    if _listener is not None:
        _listener.workflow_ended(outcome)
