"""Several gateway processes, one /metrics: the stack's totals (prometheus-client's
multiprocess mode), as the launcher runs them. Real OS processes, each its own interpreter."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from datamorph_gateway.observability import metrics_server

from ..fixtures.observability import scrape, value

RECORDER = Path(__file__).with_name("recorder.py")


class _Recorder:
    def __init__(self, directory: Path, index: int) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(RECORDER), str(directory), str(index)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line.startswith("ready "), f"recorder {index} did not start: {line!r}"
        self.port = int(line.split()[1])

    def stop(self) -> None:
        assert self.process.stdin is not None
        if self.process.poll() is None:
            self.process.stdin.write("stop\n")
        self.process.stdin.close()
        self.process.wait(30)
        if self.process.stdout is not None:
            self.process.stdout.close()


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    made = tmp_path / "metrics"
    metrics_server.prepare_directory(made)
    return made


@pytest.fixture
def two_processes(directory: Path) -> Iterator[tuple[_Recorder, _Recorder]]:
    first = _Recorder(directory, 0)
    try:
        second = _Recorder(directory, 1)
    except BaseException:
        first.stop()
        raise
    try:
        yield first, second
    finally:
        second.stop()
        first.stop()


def test_process_zero_serves_the_totals_of_every_process(
    two_processes: tuple[_Recorder, _Recorder],
) -> None:
    first, _ = two_processes
    got = scrape(first.port)
    assert value(got, "datamorph_rpc_requests_total", method="GetData", code="OK") == 30
    assert value(got, "datamorph_rpc_requests_total", method="ExecuteQuery", code="INTERNAL") == 2
    assert value(got, "datamorph_rpc_duration_seconds_count", method="GetData") == 30
    bucket = "datamorph_rpc_duration_seconds_bucket"
    assert value(got, bucket, method="ExecuteQuery", le="0.5") == 2
    assert value(got, "datamorph_db_pool_connections", state="in_use") == 1 + 2
    assert value(got, "datamorph_db_pool_connections", state="idle") == 2 + 2
    assert value(got, "datamorph_db_pool_max_connections") == 16
    assert value(got, "datamorph_workflows_running") == 2
    assert value(got, "datamorph_build_info", version="9.9.9") == 1
    assert not any(dict(labels).get("pid") for _, labels in got)


def test_a_dead_process_leaves_its_counts_but_not_its_live_gauges(
    two_processes: tuple[_Recorder, _Recorder], directory: Path
) -> None:
    first, second = two_processes
    second.process.send_signal(signal.SIGKILL)  # no clean exit: as a crash
    second.process.wait(30)
    # Until the launcher hears of it, its gauges still count.
    assert value(scrape(first.port), "datamorph_workflows_running") == 2
    metrics_server.process_exited(second.process.pid, directory)
    got = scrape(first.port)
    assert value(got, "datamorph_workflows_running") == 1
    assert value(got, "datamorph_db_pool_connections", state="in_use") == 1
    assert value(got, "datamorph_db_pool_max_connections") == 8
    assert value(got, "datamorph_rpc_requests_total", method="GetData", code="OK") == 30
