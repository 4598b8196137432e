"""Abandoned runs end: a gateway killed mid-run, its run ended by a live one through leases.

Real parts only: PostgreSQL, gateway processes killed with SIGKILL, moto as a real HTTP
server for the DynamoDB log store. RUN_LEASE_S is 1-2 s here, so every wait is short and
bounded.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import psycopg2
import pytest
from psycopg2.extensions import make_dsn, parse_dsn

from datamorph_client import GatewayClient, GatewayError
from datamorph_gateway.config import (
    DatabaseSettings,
    LimitsSettings,
    Settings,
    load_settings,
)
from datamorph_gateway.db.database import Database
from datamorph_gateway.errors import ConfigError, DeadlineExceeded, ResourceExhausted
from datamorph_gateway.status import status_code
from datamorph_gateway.workflows import (
    RunLeases,
    WorkflowError,
    WorkflowRequest,
    WorkflowRunner,
    WorkflowTimeout,
    create_runner,
)
from datamorph_gateway.workflows.leases import AtCapacity

from ..fixtures.databases import throwaway_database
from ..fixtures.gateway import GatewayFactory
from ..fixtures.handlers import HANDLER, prompt
from ..fixtures.process import gateway_env, start, stop
from ..fixtures.roles import own_tables_dsn, with_state_role
from ..fixtures.workflows import runner_on

LEASE_S = 2.0
# Past RUN_LEASE_S: writing the entries, and a poll of whoever is waiting for them.
MARGIN_S = 3.0


def fetch(dsn: str, query: str, *args: Any) -> list[tuple[Any, ...]]:
    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(query, args)
            return cur.fetchall()
    finally:
        conn.close()


def lease_of(dsn: str, run_id: str) -> list[tuple[Any, ...]]:
    return fetch(
        dsn,
        "SELECT gateway, renewed_at FROM datamorph_gateway.run_leases WHERE run_id = %s",
        run_id,
    )


def wait_for_call(calls: Path, timeout_s: float = 30.0) -> str:
    """The run id of the handler's first call, once it is running."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if calls.exists() and calls.read_text().strip():
            return calls.read_text().split()[0]
        time.sleep(0.02)
    raise AssertionError("the orchestrator handler was never called")


@pytest.fixture(params=["postgres", "dynamodb"])
def log_store_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """The settings of the log store both gateways use; AWS's are dummies for moto."""
    if request.param == "postgres":
        return {"LOG_STORE": "postgres"}
    return {
        "LOG_STORE": "dynamodb",
        "DYNAMODB_ENDPOINT_URL": request.getfixturevalue("moto_url"),
        "DYNAMODB_TABLE": request.getfixturevalue("dynamodb_table"),
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }


def test_a_killed_gateways_run_is_ended_by_a_live_one(
    quiet_database_url: str, log_store_env: dict[str, str], tmp_path: Path
) -> None:
    """SIGKILL mid-run: within RUN_LEASE_S the live gateway writes error and end entries, a
    WatchLogs started before the kill ends, and the same key answers ABORTED/RUN_ABANDONED
    with the run id, the waiting repeat as well as a new one; the handler ran once.

    On a database of its own: a gateway of another test on the session database would
    also take the lapsed lease over, and end the run in its own log store (the PostgreSQL
    one, where the DynamoDB case's watcher never looks)."""
    calls, release = tmp_path / "calls", tmp_path / "release"
    env = {k: v for k, v in gateway_env().items() if not k.startswith("AWS_")}
    env.update(
        DATABASE_URL=quiet_database_url,
        RUN_LEASE_S=str(LEASE_S),
        LOG_POLL_INTERVAL_S="0.1",
        ORCHESTRATOR_HANDLER=HANDLER,
        **log_store_env,
    )
    request = {"prompt": prompt(calls=calls, release=release), "target_table": "t"}
    key = f"key-{uuid.uuid4().hex}"
    with (tmp_path / "doomed.log").open("wb") as doomed_log:
        doomed, doomed_address = start(env, stderr=doomed_log)
    with (tmp_path / "survivor.log").open("wb") as survivor_log:
        survivor, address = start(env, stderr=survivor_log)
    try:
        with (
            ThreadPoolExecutor(3) as pool,
            GatewayClient(doomed_address, timeout_s=30) as on_doomed,
            GatewayClient(address, timeout_s=30) as client,
        ):
            first = pool.submit(
                on_doomed.start_workflow, **request, idempotency_key=key, timeout_s=30
            )
            run_id = wait_for_call(calls)
            assert [e.type for e in client.get_logs(run_id).logs] == ["start"]
            watched = pool.submit(lambda: [e.entry.type for e in client.watch_logs(run_id)])
            repeat = pool.submit(
                client.start_workflow, **request, idempotency_key=key, timeout_s=30
            )
            time.sleep(0.3)
            assert not watched.done()
            assert not repeat.done()  # the run goes on: the repeat waits for it

            doomed.kill()
            killed_at = time.monotonic()
            assert doomed.wait(10) == -9
            with pytest.raises(GatewayError) as lost:
                first.result(10)
            assert lost.value.code == grpc.StatusCode.UNAVAILABLE

            assert watched.result(timeout=LEASE_S + MARGIN_S) == ["start", "error", "end"]
            watch_ended_s = time.monotonic() - killed_at
            with pytest.raises(GatewayError) as waited:
                repeat.result(timeout=MARGIN_S)
            repeat_answered_s = time.monotonic() - killed_at
            print(
                f"\nSIGKILL mid keyed workflow (RUN_LEASE_S={LEASE_S:g}, "
                f"{log_store_env.get('LOG_STORE', 'postgres')} log store): WatchLogs ended "
                f"{watch_ended_s:.2f} s and the waiting repeat got ABORTED "
                f"{repeat_answered_s:.2f} s after the kill"
            )
            with pytest.raises(GatewayError) as again:
                client.start_workflow(**request, idempotency_key=key, timeout_s=5)
            for err in (waited.value, again.value):
                assert err.code == grpc.StatusCode.ABORTED
                assert err.reason == "RUN_ABANDONED"
                assert err.metadata["run_id"] == run_id
                assert run_id in err.message

            logs = client.get_logs(run_id)
            assert [e.type for e in logs.logs] == ["start", "error", "end"]
            error, end = logs.logs[1:]
            assert error.title == "Error: RUN_ABANDONED"
            assert "stopped renewing its lease" in error.description
            assert error.metadata["error_type"] == "RUN_ABANDONED"
            assert error.metadata["source"] == "gateway"
            assert end.metadata["workflow_status"] == "abandoned"
            assert all(e.timestamp.endswith("Z") for e in logs.logs)
        assert calls.read_text().split() == [run_id]  # never run again
        assert lease_of(quiet_database_url, run_id) == []
    finally:
        release.touch()
        if doomed.poll() is None:
            doomed.kill()
            doomed.wait(10)
        if doomed.stdout is not None:
            doomed.stdout.close()
        assert stop(survivor) == 0


def test_a_slow_run_that_is_alive_is_never_ended(
    make_gateway: GatewayFactory, seeded_database: str, tmp_path: Path
) -> None:
    """A run lasting several RUN_LEASE_S keeps its lease renewed while another gateway looks
    for lapsed ones; it answers as usual, and its lease is gone afterwards."""
    running = make_gateway(run_lease_s=LEASE_S, orchestrator_handler=HANDLER)
    make_gateway(run_lease_s=LEASE_S, orchestrator_handler=HANDLER)  # looks for lapsed leases
    calls = tmp_path / "calls"
    with ThreadPoolExecutor(1) as pool, GatewayClient(running.address, timeout_s=30) as client:
        answer = pool.submit(
            client.start_workflow,
            prompt(calls=calls, hold_s=3 * LEASE_S + 0.5),
            idempotency_key=f"key-{uuid.uuid4().hex}",
        )
        run_id = wait_for_call(calls)
        [(gateway, renewed_at)] = lease_of(own_tables_dsn(seeded_database), run_id)
        assert gateway == running.workflows._leases.holder  # type: ignore[union-attr]
        time.sleep(LEASE_S)
        [(_, renewed_later)] = lease_of(own_tables_dsn(seeded_database), run_id)
        assert renewed_later > renewed_at
        response = answer.result(timeout=3 * LEASE_S + 20)
        assert response.message == "released"
        assert [e.type for e in client.get_logs(run_id).logs] == ["start", "end"]
    assert lease_of(own_tables_dsn(seeded_database), run_id) == []


def test_a_run_with_no_entries_yet_is_found_while_it_runs(
    make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    """A deadline answer carries the run id; GetLogs finds the run (an empty log) and
    WatchLogs on another gateway waits for its entries, until it ends. (This one writes
    none: once over, it is a run with no log, as every gateway says.)"""
    gateway = make_gateway(run_lease_s=LEASE_S, orchestrator_handler=HANDLER)
    other = make_gateway(run_lease_s=LEASE_S, orchestrator_handler=HANDLER)
    release = tmp_path / "release"
    with pytest.raises(WorkflowTimeout) as err:
        gateway.workflows.start(WorkflowRequest(prompt(release=release, log=False)), timeout_s=0.3)
    run_id = err.value.run_id
    with (
        GatewayClient(other.address, timeout_s=30) as client,
        ThreadPoolExecutor(1) as pool,
    ):
        empty = client.get_logs(run_id)
        assert (empty.run_id, empty.log_count, empty.logs) == (run_id, 0, [])
        assert empty.created_at.endswith("Z")
        watched = pool.submit(lambda: list(client.watch_logs(run_id)))
        time.sleep(0.3)
        assert not watched.done()
        release.touch()
        with pytest.raises(GatewayError) as ended:
            watched.result(timeout=20)
        assert ended.value.code == grpc.StatusCode.NOT_FOUND
        with pytest.raises(GatewayError) as gone:
            client.get_logs(run_id)
        assert gone.value.code == grpc.StatusCode.NOT_FOUND


# -- the lease table ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def quiet_database_url(database_url: str, database_admin_url: str) -> Iterator[str]:
    """A database of its own, where no other test's gateway reaper runs: the session
    database's gateways would take over and end the hand-driven leases below when they
    lapse (and, above, the killed gateway's run, in their own log store)."""
    app_role = parse_dsn(database_url)["user"]
    with throwaway_database(database_admin_url, "dmgw_leases", grant_to=app_role) as name:
        params = parse_dsn(database_url)
        params["dbname"] = name
        yield make_dsn(**params)


@pytest.fixture
def leases(quiet_database_url: str) -> Iterator[Callable[[], RunLeases]]:
    """Leases on one database as separate gateways hold them (no threads: driven by hand)."""
    db = Database(DatabaseSettings(), LimitsSettings(), quiet_database_url)

    def make() -> RunLeases:
        made = RunLeases(db.pool, lease_s=1.0, timeout_s=5)
        made.ensure_schema()
        return made

    yield make
    db.close()


def test_a_lapsed_lease_is_taken_over_once_and_its_gateway_learns_it_lost_it(
    leases: Callable[[], RunLeases],
) -> None:
    mine, theirs, third = leases(), leases(), leases()
    run_id = f"20250101_000000_{uuid.uuid4().hex[:8]}"
    mine.take(run_id, "a-key")
    assert mine.renew() == set()
    assert [lapsed.run_id for lapsed in theirs.claim_lapsed()] == []
    time.sleep(mine.ttl_s + 0.2)  # no renewal: it lapses
    assert [lapsed.run_id for lapsed in mine.claim_lapsed()] == []  # never its own
    [lapsed] = [lapsed for lapsed in theirs.claim_lapsed() if lapsed.run_id == run_id]
    assert (lapsed.gateway, lapsed.idempotency_key, lapsed.retried) == (mine.holder, "a-key", False)
    assert all(other.run_id != run_id for other in third.claim_lapsed())  # taken over: held
    assert mine.renew() == {run_id}
    time.sleep(theirs.ttl_s + 0.2)  # the taker stopped before ending it: it lapses again
    [again] = [lapsed for lapsed in third.claim_lapsed() if lapsed.run_id == run_id]
    assert again.retried
    third.ended(run_id)
    assert not third.is_held(run_id)


def test_a_finished_runs_lease_is_deleted(leases: Callable[[], RunLeases]) -> None:
    mine = leases()
    run_id = f"20250101_000000_{uuid.uuid4().hex[:8]}"
    mine.take(run_id, None)
    assert mine.is_held(run_id)
    mine.release(run_id)
    assert not mine.is_held(run_id)
    assert mine.renew() == set()


def test_a_key_claimed_without_a_lease_is_ended_as_abandoned(database_url: str) -> None:
    """A key whose run never finished nor held a lease (claimed by a gateway from before
    leases) gets a lapsed lease once it is older than the old bound, and is ended."""
    settings = Settings.from_flat(
        run_lease_s=1.0, orchestrator_read_timeout_s=1, log_poll_interval_s=0.05
    )
    db = Database(with_state_role(settings.database, database_url), settings.limits, database_url)
    runner: WorkflowRunner | None = None
    try:
        runner = runner_on(db, settings)
        key, run_id = f"key-{uuid.uuid4().hex}", f"20250101_000000_{uuid.uuid4().hex[:8]}"
        request = WorkflowRequest("SELECT 1", idempotency_key=key)
        fetch(
            own_tables_dsn(database_url),
            "INSERT INTO datamorph_gateway.idempotency_keys (key, fingerprint, run_id, claimed_at)"
            " VALUES (%s, %s, %s, now() - interval '2 minutes') RETURNING key",
            key,
            request.fingerprint(),
            run_id,
        )
        with pytest.raises(WorkflowError) as err:
            runner.start(request, timeout_s=10)
        assert status_code(err.value) == grpc.StatusCode.ABORTED
        assert err.value.reason == "RUN_ABANDONED"
        assert err.value.metadata["run_id"] == run_id
        logs = runner.get_logs(run_id).logs
        assert [e["type"] for e in logs] == ["error", "end"]
        assert "kept no lease" in logs[0]["description"]
    finally:
        if runner is not None:
            runner.close()
        db.close()


def test_a_repeat_names_no_run_before_it_started(database_url: str) -> None:
    """A key held by a run that has not started (no lease yet; it may still be refused and
    give its key back) is not announced: neither a deadline nor KEY_RELEASED names it."""
    settings = Settings.from_flat(run_lease_s=1.0, log_poll_interval_s=0.05)
    db = Database(with_state_role(settings.database, database_url), settings.limits, database_url)
    runner = runner_on(db, settings)
    announced: list[str] = []
    try:
        key, run_id = f"key-{uuid.uuid4().hex}", f"20250101_000000_{uuid.uuid4().hex[:8]}"
        request = WorkflowRequest("SELECT 1", idempotency_key=key)
        fetch(
            own_tables_dsn(database_url),
            "INSERT INTO datamorph_gateway.idempotency_keys (key, fingerprint, run_id)"
            " VALUES (%s, %s, %s) RETURNING key",
            key,
            request.fingerprint(),
            run_id,
        )
        with pytest.raises(DeadlineExceeded, match="had not started") as late:
            runner.start(request, timeout_s=0.3, on_run_id=announced.append)
        assert not isinstance(late.value, WorkflowTimeout)
        assert "run_id" not in late.value.metadata
        with ThreadPoolExecutor(1) as pool:
            following = pool.submit(runner.start, request, timeout_s=10, on_run_id=announced.append)
            time.sleep(0.3)
            fetch(
                own_tables_dsn(database_url),
                "DELETE FROM datamorph_gateway.idempotency_keys WHERE key = %s RETURNING key",
                key,
            )
            with pytest.raises(WorkflowError) as released:
                following.result(timeout=10)
        assert released.value.reason == "KEY_RELEASED"
        assert released.value.metadata == {}
        assert run_id not in released.value.message
        assert announced == []
    finally:
        runner.close()
        db.close()


def test_no_leases_with_run_lease_s_zero(database_url: str) -> None:
    db = Database(with_state_role(DatabaseSettings(), database_url), LimitsSettings(), database_url)
    try:
        for lease_s, leased in ((0.0, False), (5.0, True)):
            settings = Settings.from_flat(run_lease_s=lease_s)
            runner = runner_on(db, settings)
            try:
                assert (runner._leases is not None) is leased
            finally:
                runner.close()
    finally:
        db.close()


@pytest.mark.parametrize("value", ["0.5", "-1", "nan"])
def test_run_lease_s_is_zero_or_at_least_a_second(value: str) -> None:
    with pytest.raises(ConfigError, match="RUN_LEASE_S must be 0"):
        load_settings({"RUN_LEASE_S": value})
    assert load_settings({}).workflows.run_lease_s == 30.0
    assert load_settings({"RUN_LEASE_S": "0"}).workflows.run_lease_s == 0.0


# -- WORKFLOW_MAX_CONCURRENT across gateways ------------------------------------------------


def test_at_most_counts_the_runs_of_every_gateway(
    leases: Callable[[], RunLeases], quiet_database_url: str
) -> None:
    mine, theirs = leases(), leases()
    fetch(quiet_database_url, "DELETE FROM datamorph_gateway.run_leases RETURNING run_id")
    first, second, third = (f"20250101_000000_{uuid.uuid4().hex[:8]}" for _ in range(3))
    mine.take(first, None, at_most=2)
    theirs.take(second, None, at_most=2)
    with pytest.raises(AtCapacity) as full:
        mine.take(third, None, at_most=2)
    assert full.value.running == 2
    assert not mine.is_held(third)  # refused: no lease
    theirs.release(second)
    mine.take(third, None, at_most=2)  # a finished run frees its slot
    time.sleep(mine.ttl_s + 0.2)  # neither renewed: both lapsed, their gateways are gone
    theirs.take(second, None, at_most=1)  # a lapsed lease is no running run


def test_workflow_max_concurrent_holds_across_gateways(
    quiet_database_url: str, tmp_path: Path
) -> None:
    """Two gateways on one database, WORKFLOW_MAX_CONCURRENT=1: a run on one refuses a run
    on the other (RESOURCE_EXHAUSTED) until it ends."""
    settings = Settings.from_flat(
        run_lease_s=2.0,
        workflow_max_concurrent=1,
        grpc_max_workers=8,
        orchestrator_handler=HANDLER,
        log_poll_interval_s=0.05,
    )
    databases = [Database(settings.database, settings.limits, quiet_database_url) for _ in range(2)]
    runners = [
        create_runner(settings.workflows, settings.aws, settings.limits, db.pool)
        for db in databases
    ]
    fetch(quiet_database_url, "DELETE FROM datamorph_gateway.run_leases RETURNING run_id")
    release = tmp_path / "release"
    try:
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(
                runners[0].start, WorkflowRequest(prompt(release=release)), timeout_s=30
            )
            deadline = time.monotonic() + 10
            while not fetch(quiet_database_url, "SELECT run_id FROM datamorph_gateway.run_leases"):
                assert time.monotonic() < deadline, "the first run never took its lease"
                time.sleep(0.02)
            with pytest.raises(ResourceExhausted) as refused:
                runners[1].start(WorkflowRequest(prompt(hold_s=0)), timeout_s=10)
            assert refused.value.reason == "WORKFLOWS_EXHAUSTED"
            assert "on the gateways together" in refused.value.message
            release.touch()
            first.result(timeout=30)
        assert runners[1].start(WorkflowRequest(prompt(hold_s=0)), timeout_s=30).run_id
    finally:
        release.touch()
        for runner in runners:
            runner.close()
        for db in databases:
            db.close()
