"""The runner: run ids, idempotency keys, limits, deadlines and following a run."""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import grpc
import pytest

from datamorph_gateway.config import DatabaseSettings, LimitsSettings, WorkflowSettings
from datamorph_gateway.db.database import Database
from datamorph_gateway.errors import (
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from datamorph_gateway.logstore import LogStore, PostgresLogStore, make_entry
from datamorph_gateway.status import status_code
from datamorph_gateway.workflows import (
    LocalContext,
    LocalOrchestrator,
    WorkflowError,
    WorkflowRequest,
    WorkflowRunner,
    WorkflowTimeout,
    new_run_id,
)

from ..fixtures.roles import with_state_role
from ..fixtures.workflows import RUN_ID, timeout_detail


def test_run_ids_are_utc_time_and_eight_hex_digits() -> None:
    moment = dt.datetime(2025, 1, 13, 14, 34, 56, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    run_id = new_run_id(moment)
    assert run_id.startswith("20250113_123456_")
    assert RUN_ID.match(run_id)
    assert RUN_ID.match(new_run_id())
    assert new_run_id() != new_run_id()


class Gate:
    """A handler that logs, then blocks until released; it counts its calls."""

    def __init__(self, error: Exception | None = None) -> None:
        self.calls: list[dict[str, Any]] = []
        self.entered = threading.Semaphore(0)
        self.release = threading.Event()
        self.error = error

    def __call__(self, event: dict[str, Any], context: LocalContext) -> dict[str, Any]:
        self.calls.append(event)
        context.append_log(make_entry("start", "Starting", "waiting at the gate"))
        self.entered.release()
        if not self.release.wait(30):
            raise TimeoutError("the test never opened the gate")
        context.append_log(make_entry("end", "Completed", "through the gate"))
        if self.error is not None:
            raise self.error
        return {"statusCode": 200, "body": {"message": f"done {event['prompt']}"}}

    def wait_entered(self, count: int = 1) -> None:
        for _ in range(count):
            assert self.entered.acquire(timeout=10), "the handler was never called"


@pytest.fixture
def log_store(database_url: str) -> Iterator[LogStore]:
    db = Database(with_state_role(DatabaseSettings(), database_url), LimitsSettings(), database_url)
    store = PostgresLogStore(db.roles.own_tables, poll_interval_s=0.05)
    store.ensure_schema()
    yield store
    db.close()


@pytest.fixture
def make_runner(log_store: LogStore) -> Iterator[Callable[..., WorkflowRunner]]:
    runners: list[tuple[WorkflowRunner, Gate]] = []

    def make(gate: Gate, **overrides: Any) -> WorkflowRunner:
        settings = dataclasses.replace(WorkflowSettings(workflow_max_concurrent=2), **overrides)
        orchestrator = LocalOrchestrator(gate, name="gate", log_store=log_store)
        runner = WorkflowRunner(settings, orchestrator, log_store)
        runners.append((runner, gate))
        return runner

    yield make
    for runner, gate in runners:
        gate.release.set()
        runner.close(timeout_s=10)


@pytest.fixture
def background() -> Iterator[Callable[..., Future[Any]]]:
    with ThreadPoolExecutor(8) as pool:
        yield pool.submit


def test_same_key_while_running_waits_for_the_first_run(
    make_runner: Callable[..., WorkflowRunner], background: Callable[..., Future[Any]]
) -> None:
    gate = Gate()
    runner = make_runner(gate)
    request = WorkflowRequest("SELECT 1", target_table="t", idempotency_key="key-1")
    first = background(runner.start, request)
    gate.wait_entered()
    joined = threading.Event()
    second = background(runner.start, request, on_run_id=lambda run_id: joined.set())
    assert joined.wait(10)
    gate.release.set()
    assert first.result(10) == second.result(10)
    assert len(gate.calls) == 1
    # Finished: the answer comes back at once, still without another run.
    assert runner.start(request) == first.result()
    assert len(gate.calls) == 1
    with pytest.raises(InvalidArgument, match="idempotency_key: was already used"):
        runner.start(dataclasses.replace(request, prompt="SELECT 2"))
    # Without a key every request is a run of its own.
    runner.start(WorkflowRequest("SELECT 1"))
    runner.start(WorkflowRequest("SELECT 1"))
    assert len(gate.calls) == 3


def test_same_key_replays_the_first_runs_error(
    make_runner: Callable[..., WorkflowRunner], background: Callable[..., Future[Any]]
) -> None:
    gate = Gate(error=RuntimeError("the validator rejected the table"))
    runner = make_runner(gate)
    request = WorkflowRequest("SELECT 1", idempotency_key="key-err")
    first = background(runner.start, request)
    gate.wait_entered()
    gate.release.set()
    with pytest.raises(WorkflowError) as one:
        first.result(10)
    with pytest.raises(WorkflowError) as two:
        runner.start(request)
    assert one.value is not two.value
    assert one.value.message == two.value.message
    assert "the validator rejected the table" in two.value.message
    assert one.value.metadata["run_id"] == two.value.metadata["run_id"]
    assert len(gate.calls) == 1


def test_beyond_the_limit_is_resource_exhausted_at_once(
    make_runner: Callable[..., WorkflowRunner], background: Callable[..., Future[Any]]
) -> None:
    gate = Gate()
    runner = make_runner(gate, workflow_max_concurrent=2)
    running = [background(runner.start, WorkflowRequest(f"SELECT {i}")) for i in range(2)]
    gate.wait_entered(2)
    refused = WorkflowRequest("SELECT 3", idempotency_key="key-3")
    # timeout_s: had it been admitted, it would fail with a deadline, not hang.
    with pytest.raises(ResourceExhausted, match="2 workflows are already running") as err:
        runner.start(refused, timeout_s=5)
    assert err.value.reason == "WORKFLOWS_EXHAUSTED"
    assert len(gate.calls) == 2
    gate.release.set()
    for future in running:
        future.result(10)
    # The refused request did not take its key: retrying it runs it.
    assert runner.start(refused).message == "done SELECT 3"


def test_waiting_callers_are_bounded(
    make_runner: Callable[..., WorkflowRunner], background: Callable[..., Future[Any]]
) -> None:
    gate = Gate()
    runner = make_runner(gate, workflow_max_concurrent=1)
    request = WorkflowRequest("SELECT 1", idempotency_key="key-w")
    first = background(runner.start, request)
    gate.wait_entered()
    joined = threading.Event()
    second = background(runner.start, request, on_run_id=lambda run_id: joined.set())
    assert joined.wait(10)
    with pytest.raises(ResourceExhausted, match="2 StartWorkflow calls are already waiting"):
        runner.start(request, timeout_s=5)
    gate.release.set()
    assert first.result(10) == second.result(10)


def test_the_callers_deadline_ends_the_wait_not_the_run(
    make_runner: Callable[..., WorkflowRunner],
) -> None:
    gate = Gate()
    runner = make_runner(gate)
    request = WorkflowRequest("SELECT 1", idempotency_key="key-d")
    with pytest.raises(WorkflowTimeout) as err:
        runner.start(request, timeout_s=0.3)
    run_id = err.value.run_id
    assert err.value.metadata["run_id"] == run_id
    detail = timeout_detail(err.value)
    assert [e["title"] for e in detail["logs"]] == ["Starting"]
    assert runner.is_running(run_id)
    gate.release.set()
    assert runner.start(request).message == "done SELECT 1"
    assert len(gate.calls) == 1
    assert not runner.is_running(run_id)
    with pytest.raises(DeadlineExceeded, match="before the workflow could start"):
        runner.start(WorkflowRequest("SELECT 2"), timeout_s=0)
    assert len(gate.calls) == 1


def test_a_cancelled_caller_stops_waiting(make_runner: Callable[..., WorkflowRunner]) -> None:
    gate = Gate()
    runner = make_runner(gate)
    request = WorkflowRequest("SELECT 1", idempotency_key="key-c")
    with pytest.raises(WorkflowError) as err:
        runner.start(request, should_stop=lambda: True)
    assert status_code(err.value) == grpc.StatusCode.CANCELLED
    gate.release.set()
    assert runner.start(request).message == "done SELECT 1"


def test_watch_follows_a_run_until_its_invocation_ends(
    make_runner: Callable[..., WorkflowRunner], background: Callable[..., Future[Any]]
) -> None:
    gate = Gate()
    runner = make_runner(gate)
    started = threading.Event()
    run_ids: list[str] = []

    def remember(run_id: str) -> None:
        run_ids.append(run_id)
        started.set()

    outcome = background(runner.start, WorkflowRequest("SELECT 1"), on_run_id=remember)
    assert started.wait(10)
    watched = background(lambda: list(runner.watch(run_ids[0], timeout_s=20)))
    gate.wait_entered()
    gate.release.set()
    outcome.result(10)
    events = watched.result(20)
    assert [(e.index, e.entry["title"]) for e in events] == [(0, "Starting"), (1, "Completed")]
    # Afterwards the run is read from the store, and ends at its terminal entry.
    assert [e.index for e in runner.watch(run_ids[0], timeout_s=20)] == [0, 1]
    with pytest.raises(NotFound):
        next(runner.watch("20250113_123456_ffffffff", timeout_s=20))


def test_a_closed_runner_starts_nothing(make_runner: Callable[..., WorkflowRunner]) -> None:
    gate = Gate()
    runner = make_runner(gate)
    runner.close()
    with pytest.raises(Unavailable, match="shutting down"):
        runner.start(WorkflowRequest("SELECT 1"))
    assert gate.calls == []
