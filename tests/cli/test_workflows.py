"""``datamorph start`` and ``logs`` on real workflows (the built-in orchestrator, which
materializes a SQL prompt): the log live while the run goes on, the exit code by outcome,
and Ctrl-C that stops the watching but not the run."""

from __future__ import annotations

import json
import signal
import time
import uuid

import pytest

from datamorph_client.cli.workflows import Outcome
from datamorph_client.models import JsonValue, LogEntry

from ..fixtures.cli import Cli, json_lines, plain, spawn, wait_for

SLOW = "SELECT g AS n, pg_sleep(0.5) IS NULL AS slept FROM generate_series(1, 3) g"


def table() -> str:
    return f"cli_run_{uuid.uuid4().hex[:8]}"


def test_start_follow_piped_prints_entries_then_the_answer(cli: Cli) -> None:
    target = table()
    result = cli("start", "SELECT 1 AS one", "--target-table", target, "--follow")
    assert result.exit_code == 0, result.stderr
    *events, answer = json_lines(result.stdout)
    assert [e["index"] for e in events] == list(range(len(events)))
    types = [e["entry"]["type"] for e in events]
    assert (types[0], types[-1]) == ("start", "end")
    assert answer["status"] == "success"
    assert answer["run_id"] == events[0]["run_id"]
    assert answer["details"]["row_count"] == 1
    assert target in answer["message"]


def test_start_follow_shows_the_run_live(cli: Cli) -> None:
    """The real command, piped: the first entry arrives while the run still goes on."""
    process = spawn(cli.address, "start", SLOW, "--target-table", table(), "--follow")
    assert process.stdout is not None
    with process:
        started = time.monotonic()
        first = json.loads(process.stdout.readline())
        assert first["entry"]["type"] == "start"
        assert process.poll() is None, "the run should still be going"
        rest = [json.loads(line) for line in process.stdout]
        took = time.monotonic() - started
        assert process.wait(timeout=30) == 0
    assert rest[-1]["status"] == "success"
    assert rest[-2]["entry"]["type"] == "end"
    assert took > 1.0  # the entries came over the run's 1.5 s, not all at its end


def test_start_follow_on_a_terminal(cli: Cli) -> None:
    result = cli("start", "SELECT 2 AS two", "-t", table(), "-f", terminal=True)
    assert result.exit_code == 0
    text = plain(result.stdout)
    assert "Starting Development Orchestrator" in text
    assert "Workflow Completed Successfully" in text
    assert "success  run " in text
    assert "materialized into" in text


def test_start_without_follow_prints_the_answer(cli: Cli) -> None:
    result = cli("start", "SELECT 3 AS three", "--target-table", table(), "--key", "k-" + table())
    assert result.exit_code == 0
    [answer] = json_lines(result.stdout)
    assert answer["status"] == "success"
    assert answer["details"]["row_count"] == 1


def test_a_failed_run_exits_1_and_names_its_run(cli: Cli) -> None:
    result = cli("start", "SELECT 1 AS one", "--target-table", "customers", "--follow")
    assert result.exit_code == 1
    events = json_lines(result.stdout)
    assert [e["entry"]["type"] for e in events][-2:] == ["error", "end"]
    [line] = result.stderr.splitlines()
    assert "(ALREADY_EXISTS, reason TARGET_TABLE_EXISTS, run id " + events[0]["run_id"] in line
    assert "request id " in line
    refused = cli("start", "copy the customers somewhere", "--follow")
    assert refused.exit_code == 1
    assert "orchestrator" in refused.stderr


def test_logs_follow_of_a_failed_run_exits_1(cli: Cli) -> None:
    """``logs --follow && next`` must not go on after a failed run (as ``start --follow``)."""
    failed = cli("start", "SELECT 1 AS one", "--target-table", "customers")
    assert failed.exit_code == 1
    run_id = failed.stderr.split("run id ")[1].split(",")[0].split(")")[0]
    result = cli("logs", run_id, "--follow")
    assert result.exit_code == 1
    events = json_lines(result.stdout)
    assert [e["entry"]["type"] for e in events][-2:] == ["error", "end"]
    assert result.stderr.strip() == f"run {run_id} failed: Error: TARGET_TABLE_EXISTS"
    assert cli("logs", run_id).exit_code == 0  # without --follow: the log, as asked


@pytest.mark.parametrize(
    ("entries", "failure"),
    [
        ([], None),
        ([("start", {}), ("success", {}), ("end", {"workflow_status": "completed"})], None),
        ([("start", {}), ("end", {})], None),
        ([("error", {}), ("end", {"workflow_status": "failed"})], 0),
        ([("start", {}), ("end", {"workflow_status": "failed"})], 1),
        ([("error", {}), ("end", {})], 0),
        ([("error", {})], 0),
        ([("error", {}), ("success", {}), ("end", {})], None),
        ([("success", {}), ("end", {"workflow_status": "abandoned"})], 1),
        ([("error", {}), ("end", {"workflow_status": "SUCCESS"})], None),
        ([("success", {}), ("end", {"workflow_status": "timed_out"})], 1),
        ([("error", {}), ("end", {"workflow_status": 3})], 0),
    ],
)
def test_what_a_followed_log_says_of_the_run(
    entries: list[tuple[str, dict[str, JsonValue]]], failure: int | None
) -> None:
    log = [
        LogEntry(f"t{i}", kind, f"title {i}", "", meta) for i, (kind, meta) in enumerate(entries)
    ]
    outcome = Outcome()
    for entry in log:
        outcome.see(entry)
    assert outcome.failure is (None if failure is None else log[failure])


def test_logs_of_a_run(cli: Cli) -> None:
    [answer] = json_lines(cli("start", "SELECT 4 AS four", "-t", table()).stdout)
    run_id = answer["run_id"]
    logs = json.loads(cli("logs", run_id).stdout)
    assert logs["run_id"] == run_id
    assert logs["log_count"] == len(logs["logs"])
    assert logs["logs"][-1]["type"] == "end"
    followed = json_lines(cli("logs", run_id, "--follow").stdout)
    assert [e["entry"] for e in followed] == logs["logs"]
    text = plain(cli("logs", run_id, terminal=True).stdout)
    assert "Completed Development Orchestrator" in text
    assert f"entries, run {run_id}" in text
    missing = cli("logs", "20200101_000000_00000000")
    assert missing.exit_code == 1
    assert "(NOT_FOUND" in missing.stderr


def test_ctrl_c_stops_watching_not_the_run(cli: Cli) -> None:
    process = spawn(cli.address, "start", SLOW, "--target-table", table(), "--follow")
    assert process.stdout is not None
    assert process.stderr is not None
    with process:
        first = json.loads(process.stdout.readline())
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 130
        stderr = process.stderr.read()
    run_id = first["run_id"]
    assert f"datamorph logs {run_id} --follow" in stderr
    assert "Traceback" not in stderr

    def ended() -> bool:
        logs = json.loads(cli("logs", run_id).stdout)
        return bool(logs["logs"]) and logs["logs"][-1]["type"] == "end"

    assert wait_for(ended, 15)
    types = [e["type"] for e in json.loads(cli("logs", run_id).stdout)["logs"]]
    assert "success" in types  # the run went on to its end
