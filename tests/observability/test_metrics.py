"""What a scrape of one gateway process shows (single-process mode)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.registry import CollectorRegistry

from datamorph_gateway.observability import definitions, metrics, metrics_server

from ..fixtures.observability import Samples, scrape, touch_every_metric, value


@pytest.fixture
def served(prometheus: CollectorRegistry) -> Iterator[metrics_server.MetricsServer]:
    server = metrics_server.start_metrics_server("127.0.0.1", 0, None)
    try:
        yield server
    finally:
        server.close()


def test_every_defined_metric_is_exported_once_touched(
    served: metrics_server.MetricsServer,
) -> None:
    touch_every_metric()
    exported = {name for name, _ in scrape(served.port)}
    for definition in definitions.DEFINITIONS:
        for sample in definition.samples():
            assert sample in exported, sample
    assert {name for name in exported if name.startswith("datamorph_")} == {
        s for d in definitions.DEFINITIONS for s in d.samples()
    }
    assert value(scrape(served.port), "datamorph_build_info", version="9.9.9") == 1


def test_rpcs_are_counted_by_method_and_code_and_timed(
    served: metrics_server.MetricsServer,
) -> None:
    for _ in range(3):
        metrics.rpc_finished("GetData", "OK", 0.002)
    metrics.rpc_finished("GetData", "INVALID_ARGUMENT", 0.0004)
    metrics.rpc_finished("ExecuteQuery", "INTERNAL", 45.0)
    got = scrape(served.port)
    assert value(got, "datamorph_rpc_requests_total", method="GetData", code="OK") == 3
    assert value(got, "datamorph_rpc_requests_total", method="GetData", code="INVALID_ARGUMENT")
    assert value(got, "datamorph_rpc_duration_seconds_count", method="GetData") == 4
    bucket = "datamorph_rpc_duration_seconds_bucket"
    assert value(got, bucket, method="GetData", le="0.0005") == 1
    assert value(got, bucket, method="GetData", le="0.0025") == 4
    assert value(got, bucket, method="ExecuteQuery", le="30.0") == 0
    assert value(got, bucket, method="ExecuteQuery", le="60.0") == 1


def test_labels_stay_bounded(served: metrics_server.MetricsServer) -> None:
    metrics.rpc_finished("Get Data; DROP TABLE x", "OK", 0.001)
    metrics.rpc_finished("GetData", "NOT_A_CODE", 0.001)
    for n in range(definitions.MAX_LABEL_VALUES + 10):
        metrics.auth_failure(f"reason_{n}")
    metrics.db_error("42P01")
    metrics.db_error(None)
    metrics.db_error("not a sqlstate")
    got = scrape(served.port)
    assert value(got, "datamorph_rpc_requests_total", method="other", code="OK") == 1
    assert value(got, "datamorph_rpc_requests_total", method="GetData", code="UNKNOWN") == 1
    reasons = _label_values(got, "datamorph_auth_failures_total", "reason")
    assert len(reasons) == definitions.MAX_LABEL_VALUES + 1
    assert value(got, "datamorph_auth_failures_total", reason="other") == 10
    assert value(got, "datamorph_db_errors_total", sqlstate_class="42") == 1
    assert value(got, "datamorph_db_errors_total", sqlstate_class="none") == 2


def _label_values(got: Samples, name: str, label: str) -> set[str]:
    return {dict(labels)[label] for sample, labels in got if sample == name}


@pytest.mark.usefixtures("own_pool_totals")
def test_pool_gauges_add_up_every_pool_of_the_process(
    served: metrics_server.MetricsServer,
) -> None:
    serving, reader = metrics.pool_gauge(10), metrics.pool_gauge(4)
    serving.report(3, 2)
    reader.report(1, 0)
    metrics.pool_wait(0.003)
    got = scrape(served.port)
    assert value(got, "datamorph_db_pool_connections", state="in_use") == 4
    assert value(got, "datamorph_db_pool_connections", state="idle") == 2
    assert value(got, "datamorph_db_pool_max_connections") == 14
    assert value(got, "datamorph_db_pool_wait_seconds_count") == 1
    serving.close()
    reader.report(0, 1)
    got = scrape(served.port)
    assert value(got, "datamorph_db_pool_connections", state="in_use") == 0
    assert value(got, "datamorph_db_pool_connections", state="idle") == 1
    assert value(got, "datamorph_db_pool_max_connections") == 4
    serving.report(0, 1)  # a connection that was lent comes back to the closed pool
    serving.close()
    assert value(scrape(served.port), "datamorph_db_pool_connections", state="idle") == 1
    reader.close()


def test_workflows_running_and_their_outcomes(served: metrics_server.MetricsServer) -> None:
    for _ in range(3):
        metrics.workflow_started()
    metrics.workflow_finished("success")
    metrics.workflow_finished("timeout")
    metrics.workflow_refused()
    metrics.workflow_abandoned()
    got = scrape(served.port)
    assert value(got, "datamorph_workflows_running") == 1
    for outcome in ("success", "timeout", "refused", "abandoned"):
        assert value(got, "datamorph_workflows_total", outcome=outcome) == 1
    with pytest.raises(ValueError, match="unknown workflow outcome"):
        metrics.workflow_finished("exploded")  # type: ignore[arg-type]


def test_streamed_rows_truncation_and_rate_limits(served: metrics_server.MetricsServer) -> None:
    metrics.stream_rows("WatchLogs", 5)
    metrics.stream_rows("WatchLogs", 0)
    metrics.stream_rows("StreamQuery", 7)
    metrics.result_truncated()
    metrics.rate_limited()
    metrics.rate_limited()
    got = scrape(served.port)
    assert value(got, "datamorph_stream_rows_total", method="WatchLogs") == 5
    assert value(got, "datamorph_stream_rows_total", method="StreamQuery") == 7
    assert value(got, "datamorph_result_truncated_total") == 1
    assert value(got, "datamorph_rate_limited_total") == 2


class _Heard:
    def __init__(self) -> None:
        self.events: list[tuple[object, ...]] = []

    def rpc_finished(self, method: str, code: str, seconds: float) -> None:
        self.events.append(("rpc", method, code, seconds))

    def pool_wait(self, seconds: float) -> None:
        self.events.append(("wait", seconds))

    def pool_connections(self, in_use: int, idle: int) -> None:
        self.events.append(("pool", in_use, idle))

    def db_error(self, sqlstate_class: str) -> None:
        self.events.append(("db_error", sqlstate_class))

    def workflow_started(self) -> None:
        self.events.append(("started",))

    def workflow_ended(self, outcome: str) -> None:
        self.events.append(("ended", outcome))


@pytest.mark.usefixtures("own_pool_totals")
def test_with_prometheus_off_nothing_is_kept_but_a_listener_hears_everything() -> None:
    heard = _Heard()
    metrics.init("1", prometheus=False, listener=heard)
    try:
        assert metrics.registry() is None
        touch_every_metric()
        metrics.rpc_finished("GetData", "BOGUS", 0.5)
        with pytest.raises(RuntimeError, match="must run before"):
            metrics_server.start_metrics_server("127.0.0.1", 0, None)
    finally:
        metrics.init("", prometheus=False)
    assert heard.events == [
        ("rpc", "GetData", "OK", 0.003),
        ("wait", 0.001),
        ("db_error", "57"),
        ("pool", 0, 0),
        ("pool", 1, 1),
        ("pool", 0, 0),
        ("started",),
        ("ended", "success"),
        ("rpc", "GetData", "UNKNOWN", 0.5),
    ]


def test_a_taken_port_says_which(served: metrics_server.MetricsServer) -> None:
    with pytest.raises(metrics_server.MetricsPortInUse, match=f"127.0.0.1:{served.port}: "):
        metrics_server.start_metrics_server("127.0.0.1", served.port, None)


def test_preparing_the_directory_empties_it(tmp_path: Path) -> None:
    directory = tmp_path / "metrics"
    metrics_server.prepare_directory(directory)
    (directory / "counter_123.db").write_bytes(b"stale")
    (directory / "keep.txt").write_text("not ours")
    metrics_server.prepare_directory(directory)
    assert sorted(p.name for p in directory.iterdir()) == ["keep.txt"]
