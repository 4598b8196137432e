"""``datamorph stream``: every row, as CSV or NDJSON, progress on stderr, and a Ctrl-C
that the server sees (the call cancelled, the query gone from pg_stat_activity)."""

from __future__ import annotations

import csv
import io
import os
import pty
import signal
import uuid
from pathlib import Path

from ..fixtures.cli import Cli, busy_sessions, json_lines, plain, spawn, wait_for
from ..fixtures.envoy import EnvoyFactory
from ..fixtures.gateway import GatewayFactory

SERIES = "SELECT g AS n, g * 2 AS twice FROM generate_series(1, 25) g"


def test_stream_writes_ndjson_and_a_summary(cli: Cli) -> None:
    result = cli("stream", SERIES, "--batch-rows", "10")
    assert result.exit_code == 0
    rows = json_lines(result.stdout)
    assert rows == [{"n": n, "twice": 2 * n} for n in range(1, 26)]
    [summary] = result.stderr.splitlines()
    assert summary.startswith("25 rows  ")
    assert "rows/s" in summary
    assert summary.endswith("done")


def test_stream_writes_csv(cli: Cli) -> None:
    result = cli("stream", "SELECT g AS n, 'a,b' AS s FROM generate_series(1, $1) g", "-p", "3",
                 "--output", "csv", "--quiet")  # fmt: skip
    assert (result.exit_code, result.stderr) == (0, "")
    assert list(csv.reader(io.StringIO(result.stdout))) == [
        ["n", "s"], ["1", "a,b"], ["2", "a,b"], ["3", "a,b"],
    ]  # fmt: skip


def test_a_stream_that_fails_midway_keeps_its_rows_and_says_why(cli: Cli) -> None:
    result = cli("stream", "SELECT 10 / (5 - g) AS q FROM generate_series(1, 9) g",
                 "--batch-rows", "1")  # fmt: skip
    assert result.exit_code == 1
    assert (
        json_lines(result.stdout)
        == [{"q": 2}, {"q": 3}, {"q": 5}, {"q": 10}][: len(json_lines(result.stdout))]
    )
    assert "failed" in result.stderr
    assert "division by zero" in result.stderr
    assert "sqlstate 22012" in result.stderr


def test_progress_is_live_on_a_terminal_while_rows_go_to_a_file(cli: Cli, tmp_path: Path) -> None:
    leader, follower = pty.openpty()
    out = tmp_path / "rows.ndjson"
    sql = "SELECT g, pg_sleep(0.01) IS NULL AS slept FROM generate_series(1, 150) g"
    try:
        with out.open("w") as file:
            process = spawn(cli.address, "stream", sql, "--batch-rows", "10",
                            stdout=file, stderr=follower)  # fmt: skip
            os.close(follower)
            seen = _read_all(leader)
            assert process.wait(timeout=60) == 0
    finally:
        os.close(leader)
    shown = plain(seen.decode())
    assert "rows/s" in shown
    assert shown.rstrip().endswith("done")
    assert shown.count("rows/s") >= 2  # redrawn while it ran, then the summary
    assert len(json_lines(out.read_text())) == 150


def _read_all(fd: int) -> bytes:
    seen = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # the other side closed
            return seen
        if not chunk:
            return seen
        seen += chunk


def test_ctrl_c_cancels_the_query_on_the_server(
    make_gateway: GatewayFactory,
    make_envoy: EnvoyFactory,
    database_admin_url: str,
    tmp_path: Path,
) -> None:
    """SIGINT to the real command mid-stream, through Envoy as by default: it exits 130
    within a moment, its rows are whole lines, and PostgreSQL no longer runs the query."""
    app = f"gw-cli-{uuid.uuid4().hex[:8]}"
    gateway = make_gateway(db_application_name=app)
    sidecar = make_envoy(gateway.address)
    sql = "SELECT g, pg_sleep(0.002) IS NULL AS slept FROM generate_series(1, 1000000) g"
    out = tmp_path / "rows.ndjson"
    with out.open("w") as file:
        process = spawn(sidecar.grpc_address, "stream", sql, "--batch-rows", "50", stdout=file)
        try:
            assert wait_for(lambda: out.stat().st_size > 0, 30), "no rows came"
            assert busy_sessions(database_admin_url, app), "the query should be running"
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=10) == 130
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert process.stderr is not None
    with process.stderr:
        stderr = process.stderr.read()
    assert "stopped: the query was cancelled" in stderr
    assert "Traceback" not in stderr
    assert wait_for(lambda: not busy_sessions(database_admin_url, app), 5), busy_sessions(
        database_admin_url, app
    )
    rows = json_lines(out.read_text())  # every line whole
    assert rows[0] == {"g": 1, "slept": False}  # void IS NULL: false
    assert [r["g"] for r in rows] == list(range(1, len(rows) + 1))
    assert len(rows) < 1_000_000
