"""Idempotency keys across gateways: two runners on one database stand for two replicas."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import psycopg2
import pytest

from datamorph_gateway.config import DatabaseSettings, LimitsSettings, Settings
from datamorph_gateway.db.database import Database
from datamorph_gateway.errors import FailedPrecondition, InvalidArgument, ResourceExhausted
from datamorph_gateway.logstore import PostgresLogStore
from datamorph_gateway.status import status_code
from datamorph_gateway.workflows import (
    LocalContext,
    LocalOrchestrator,
    WorkflowError,
    WorkflowRequest,
    WorkflowRunner,
)
from datamorph_gateway.workflows.idempotency_store import Ledger

from ..fixtures.roles import own_tables_dsn, with_state_role
from ..fixtures.workflows import runner_on

SETTINGS = Settings.from_flat(
    log_poll_interval_s=0.05, workflow_max_concurrent=1, grpc_max_workers=8
)


class Handler:
    """A local orchestrator handler that counts its invocations and can be held."""

    def __init__(self, fail: bool = False) -> None:
        self.calls = 0
        self.started = threading.Event()
        self.release = threading.Event()
        self.release.set()
        self.fail = fail

    def __call__(self, event: dict[str, Any], context: LocalContext) -> dict[str, Any]:
        self.calls += 1
        self.started.set()
        assert self.release.wait(30)
        if self.fail:
            raise WorkflowError(
                "the target table already exists",
                kind=FailedPrecondition,
                reason="TARGET_EXISTS",
            )
        return {"statusCode": 200, "body": {"message": "done", "run": event["run_id"]}}


@pytest.fixture
def replicas(database_url: str) -> Iterator[Callable[[Handler], WorkflowRunner]]:
    """Make runners that share nothing but the database, as gateway replicas do."""
    made: list[tuple[WorkflowRunner, Database]] = []

    def make(handler: Handler) -> WorkflowRunner:
        db = Database(
            with_state_role(SETTINGS.database, database_url), SETTINGS.limits, database_url
        )
        ledger = Ledger(db.roles.own_tables, ttl_s=3600, abandon_after_s=30, timeout_s=5)
        ledger.ensure_schema()
        store = PostgresLogStore(db.roles.own_tables, poll_interval_s=0.05)
        orchestrator = LocalOrchestrator(handler, name="tests.handler", pool=db.pool)
        runner = WorkflowRunner(SETTINGS.workflows, orchestrator, store, ledger)
        made.append((runner, db))
        return runner

    yield make
    for runner, db in made:
        runner.close(timeout_s=5)
        db.close()


def _request(key: str, target: str = "t") -> WorkflowRequest:
    return WorkflowRequest("SELECT 1", ("src",), target, key)


def _key() -> str:
    return f"key-{uuid.uuid4().hex}"


def test_a_repeat_on_another_replica_waits_for_the_run_and_gets_its_answer(
    replicas: Callable[[Handler], WorkflowRunner],
) -> None:
    first, second = Handler(), Handler()
    a, b = replicas(first), replicas(second)
    first.release.clear()
    key = _key()
    with ThreadPoolExecutor(2) as pool:
        on_a = pool.submit(a.start, _request(key), timeout_s=30)
        assert first.started.wait(10)
        on_b = pool.submit(b.start, _request(key), timeout_s=30)
        with pytest.raises(TimeoutError):
            on_b.result(timeout=0.3)  # waiting for a's run, not running its own
        first.release.set()
        answer_a, answer_b = on_a.result(timeout=30), on_b.result(timeout=30)
    assert answer_b == answer_a
    assert (first.calls, second.calls) == (1, 0)


def test_a_repeat_after_a_restart_replays_the_answer(
    replicas: Callable[[Handler], WorkflowRunner],
) -> None:
    first, later = Handler(), Handler()
    key = _key()
    answer = replicas(first).start(_request(key), timeout_s=30)
    again = replicas(later).start(_request(key), timeout_s=30)  # a new process, same database
    assert again == answer
    assert (first.calls, later.calls) == (1, 0)


def test_a_failed_run_is_replayed_as_the_same_error(
    replicas: Callable[[Handler], WorkflowRunner],
) -> None:
    first, later = Handler(fail=True), Handler()
    key = _key()
    with pytest.raises(WorkflowError) as original:
        replicas(first).start(_request(key), timeout_s=30)
    with pytest.raises(WorkflowError) as replayed:
        replicas(later).start(_request(key), timeout_s=30)
    codes = status_code(replayed.value), status_code(original.value)
    assert codes == (grpc.StatusCode.FAILED_PRECONDITION,) * 2
    assert replayed.value.message == original.value.message
    assert replayed.value.reason == "TARGET_EXISTS"
    assert replayed.value.metadata["run_id"] == original.value.metadata["run_id"]
    assert later.calls == 0


def test_the_key_with_a_different_request_is_refused_on_another_replica(
    replicas: Callable[[Handler], WorkflowRunner],
) -> None:
    key = _key()
    replicas(Handler()).start(_request(key), timeout_s=30)
    other = Handler()
    with pytest.raises(InvalidArgument) as err:
        replicas(other).start(_request(key, target="another_table"), timeout_s=30)
    assert err.value.violations[0].field == "idempotency_key"
    assert other.calls == 0


def test_a_run_refused_by_a_limit_gives_its_key_back(
    replicas: Callable[[Handler], WorkflowRunner],
) -> None:
    busy = Handler()
    a = replicas(busy)
    busy.release.clear()
    key = _key()
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(a.start, _request(_key()), timeout_s=30)
        assert busy.started.wait(10)
        with pytest.raises(ResourceExhausted):
            a.start(_request(key), timeout_s=30)  # the only slot is taken
        busy.release.set()
        running.result(timeout=30)
    b_handler = Handler()
    replicas(b_handler).start(_request(key), timeout_s=30)
    assert b_handler.calls == 1


def test_an_abandoned_run_is_reported_never_run_again(
    replicas: Callable[[Handler], WorkflowRunner], database_url: str
) -> None:
    runner = replicas(Handler())  # creates the table
    key = _key()
    conn = psycopg2.connect(own_tables_dsn(database_url))
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                "INSERT INTO datamorph_gateway.idempotency_keys (key, fingerprint, run_id,"
                " claimed_at) VALUES (%s, %s, %s, now() - interval '60 seconds')",
                (key, _request(key).fingerprint(), "20250101_000000_deadbeef"),
            )
    finally:
        conn.close()
    handler = Handler()
    runner = replicas(handler)
    with pytest.raises(WorkflowError) as err:
        runner.start(_request(key), timeout_s=30)
    assert status_code(err.value) == grpc.StatusCode.ABORTED
    assert err.value.reason == "RUN_ABANDONED"
    assert "20250101_000000_deadbeef" in err.value.message
    assert handler.calls == 0


def test_the_store_is_a_setting(database_url: str) -> None:
    db = Database(with_state_role(DatabaseSettings(), database_url), LimitsSettings(), database_url)
    try:
        for store, shared in (("postgres", True), ("memory", False)):
            settings = Settings.from_flat(idempotency_store=store)
            runner = runner_on(db, settings)
            try:
                assert (runner._ledger is not None) is shared
            finally:
                runner.close()
    finally:
        db.close()


def test_expired_keys_are_purged_at_start_up(
    replicas: Callable[[Handler], WorkflowRunner], database_url: str
) -> None:
    replicas(Handler())  # creates the table
    old, fresh = _key(), _key()
    conn = psycopg2.connect(own_tables_dsn(database_url))
    try:
        with conn, conn.cursor() as cur:
            for key, age in ((old, "2 hours"), (fresh, "1 minute")):
                cur.execute(
                    "INSERT INTO datamorph_gateway.idempotency_keys (key, fingerprint, run_id,"
                    " claimed_at, finished_at, outcome) VALUES (%s, 'f', 'r',"
                    " now() - %s::interval, now() - %s::interval, '{}')",
                    (key, age, age),
                )
        db = Database(
            with_state_role(SETTINGS.database, database_url), SETTINGS.limits, database_url
        )
        try:
            Ledger(db.roles.own_tables, ttl_s=3600, abandon_after_s=30, timeout_s=5).ensure_schema()
        finally:
            db.close()
        with conn, conn.cursor() as cur:
            cur.execute(
                "SELECT key FROM datamorph_gateway.idempotency_keys WHERE key IN (%s, %s)",
                (old, fresh),
            )
            assert [row[0] for row in cur.fetchall()] == [fresh]
    finally:
        conn.close()
