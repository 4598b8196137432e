"""METRICS_EMF: what CloudWatch reads from the log, checked against the format's rules."""

from __future__ import annotations

import io
import json
import logging
import statistics
from collections.abc import Iterator
from typing import Any

import pytest

from datamorph_gateway.observability import emf, jsonlog, metrics

UNITS = {"Count", "Milliseconds", "Seconds", "Bytes", "Percent", "None"}


class _Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def check_emf(record: dict[str, Any]) -> None:
    """The rules of CloudWatch's Embedded Metric Format specification a record must keep."""
    meta = record["_aws"]
    assert isinstance(meta["Timestamp"], int)
    assert meta["Timestamp"] > 1_000_000_000_000  # milliseconds since the epoch
    for directive in meta["CloudWatchMetrics"]:
        assert isinstance(directive["Namespace"], str)
        assert directive["Namespace"]
        for dimension_set in directive["Dimensions"]:
            assert len(dimension_set) <= 30
            for key in dimension_set:
                assert isinstance(record[key], str), key
        assert 0 < len(directive["Metrics"]) <= 100
        for metric in directive["Metrics"]:
            assert metric["Unit"] in UNITS
            found = record[metric["Name"]]
            if isinstance(found, list):
                assert 0 < len(found) <= emf.MAX_VALUES
                assert all(isinstance(v, (int, float)) for v in found)
            else:
                assert isinstance(found, (int, float))


class Written:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, line: str) -> None:
        self.lines.append(line)

    def records(self) -> list[dict[str, Any]]:
        parsed = [json.loads(line) for line in self.lines]
        for record in parsed:
            check_emf(record)
        return parsed


def by(records: list[dict[str, Any]], **dimensions: str) -> dict[str, Any]:
    (found,) = [r for r in records if all(r.get(k) == v for k, v in dimensions.items())]
    return found


@pytest.fixture
def clock() -> _Clock:
    return _Clock()


@pytest.fixture
def written() -> Written:
    return Written()


@pytest.fixture
def aggregator(written: Written, clock: _Clock) -> Iterator[emf.EmfAggregator]:
    made = emf.EmfAggregator(written, interval_s=60, clock=clock)
    metrics.init("1", prometheus=False, listener=made)
    yield made
    metrics.init("", prometheus=False)


def test_one_record_per_method_and_code_per_interval(
    aggregator: emf.EmfAggregator, written: Written
) -> None:
    for ms in (2.0, 3.0, 4.0):
        metrics.rpc_finished("GetData", "OK", ms / 1000)
    metrics.rpc_finished("GetData", "INTERNAL", 0.5)
    metrics.rpc_finished("ExecuteQuery", "INVALID_ARGUMENT", 0.001)
    assert aggregator.flush() == 4
    records = written.records()
    ok = by(records, Method="GetData", Code="OK")
    assert ok["Requests"] == 3
    assert ok["ServerErrors"] == 0
    assert ok["Duration"] == [2.0, 3.0, 4.0]
    assert ok["Service"] == "datamorph-gateway"
    assert ok["_aws"]["Timestamp"] == 1_700_000_000_000
    (directive,) = ok["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == "DataMorph/Gateway"
    assert directive["Dimensions"] == [
        ["Service", "Method", "Code"],
        ["Service", "Method"],
        ["Service"],
    ]
    assert {m["Name"]: m["Unit"] for m in directive["Metrics"]} == {
        "Requests": "Count",
        "ServerErrors": "Count",
        "Duration": "Milliseconds",
    }
    assert by(records, Method="GetData", Code="INTERNAL")["ServerErrors"] == 1
    assert by(records, Method="ExecuteQuery")["ServerErrors"] == 0


def test_each_interval_starts_afresh(
    aggregator: emf.EmfAggregator, written: Written, clock: _Clock
) -> None:
    metrics.rpc_finished("GetData", "OK", 0.002)
    aggregator.flush()
    clock.now += 60
    written.lines.clear()
    assert aggregator.flush() == 1  # the process's record only
    (process,) = written.records()
    assert "Method" not in process
    assert process["_aws"]["Timestamp"] == 1_700_000_000_000  # the interval's start
    clock.now += 60
    aggregator.flush()
    assert json.loads(written.lines[-1])["_aws"]["Timestamp"] == 1_700_000_060_000


def test_past_100_calls_duration_is_100_quantiles_close_to_the_truth(
    aggregator: emf.EmfAggregator, written: Written
) -> None:
    values_ms = [float(n) for n in range(1, 2001)]
    for ms in values_ms:
        metrics.rpc_finished("GetData", "OK", ms / 1000)
    aggregator.flush()
    record = by(written.records(), Method="GetData")
    assert record["Requests"] == 2000
    duration = record["Duration"]
    assert len(duration) == emf.MAX_VALUES
    assert duration == sorted(duration)
    cuts = statistics.quantiles(duration, n=100)
    truth = statistics.quantiles(values_ms, n=100)
    for percentile in (50, 90, 99):
        assert cuts[percentile - 1] == pytest.approx(truth[percentile - 1], rel=0.03)


@pytest.mark.usefixtures("own_pool_totals")
def test_pool_and_workflows_in_the_process_record(
    aggregator: emf.EmfAggregator, written: Written
) -> None:
    pool = metrics.pool_gauge(10)
    pool.report(4, 1)
    pool.report(2, 3)
    metrics.pool_wait(0.0)
    metrics.pool_wait(0.25)
    metrics.db_error("40P01")
    metrics.db_error("40001")
    metrics.db_error(None)
    for _ in range(2):
        metrics.workflow_started()
    metrics.workflow_finished("error")
    metrics.workflow_refused()
    metrics.workflow_abandoned()
    aggregator.flush()
    records = written.records()
    (process,) = [r for r in records if "DbPoolInUse" in r]
    assert process["DbPoolInUse"] == 2
    assert process["DbPoolInUseMax"] == 4
    assert process["DbPoolIdle"] == 3
    assert process["DbPoolWait"] == [0.0, 250.0]
    assert process["WorkflowsRunning"] == 1
    assert process["WorkflowsStarted"] == 2
    assert by(records, SqlstateClass="40")["DbErrors"] == 2
    assert by(records, SqlstateClass="none")["DbErrors"] == 1
    for outcome in ("error", "refused", "abandoned"):
        assert by(records, Outcome=outcome)["Workflows"] == 1
    pool.close()
    written.lines.clear()
    aggregator.flush()
    (process,) = written.records()
    assert process["WorkflowsRunning"] == 1  # still running: a gauge carries over
    assert process["DbPoolInUse"] == 0
    assert process["DbPoolInUseMax"] == 2  # as the interval began


def test_records_go_through_the_log_as_they_are(written: Written) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("datamorph_gateway.test_emf")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        for formatter in (
            jsonlog.make_formatter("json", "%(message)s"),
            jsonlog.make_formatter("text", "%(asctime)s %(levelname)s %(message)s"),
        ):
            handler.setFormatter(formatter)
            aggregator = emf.EmfAggregator(emf.log_writer(logger))
            aggregator.rpc_finished("GetData", "OK", 0.001)
            aggregator.flush()
    finally:
        logger.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 4
    for line in lines:
        check_emf(json.loads(line))


def test_the_interval_thread_writes_until_closed(written: Written) -> None:
    aggregator = emf.EmfAggregator(written, interval_s=0.01)
    aggregator.start()
    for _ in range(50):
        aggregator.rpc_finished("GetData", "OK", 0.001)
    aggregator.close()
    requests = sum(r.get("Requests", 0) for r in written.records())
    assert requests == 50


def test_a_stream_writer_writes_one_line_per_record() -> None:
    stream = io.StringIO()
    aggregator = emf.EmfAggregator(emf.stream_writer(stream))
    aggregator.rpc_finished("GetData", "OK", 0.001)
    aggregator.flush()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    for line in lines:
        check_emf(json.loads(line))


def test_an_interval_must_be_positive(written: Written) -> None:
    with pytest.raises(ValueError, match="positive"):
        emf.EmfAggregator(written, interval_s=0)
