"""The pool's two shares and the health check's own connection, on a real PostgreSQL."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import psycopg2
import pytest

from datamorph_gateway.db.connection_budget import ConnectionBudget
from datamorph_gateway.db.health import HealthProbe
from datamorph_gateway.db.pool import ConnectionPool
from datamorph_gateway.errors import ResourceExhausted, Unavailable

# Long enough that a test finishing well inside it shows nobody waited for it.
LONG_WAIT_S = 10.0


@pytest.fixture
def make_pool(database_url: str) -> Iterator[Callable[..., ConnectionPool]]:
    pools: list[ConnectionPool] = []

    def make(dsn: str = database_url, **kwargs: Any) -> ConnectionPool:
        kwargs.setdefault("acquire_timeout_s", LONG_WAIT_S)
        pool = ConnectionPool(dsn, min_size=0, **kwargs)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.close()


def wait_for(predicate: Callable[[], object], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def test_caller_sql_holds_only_its_share_and_reads_use_the_rest(
    make_pool: Callable[..., ConnectionPool],
) -> None:
    pool = make_pool(max_size=3, reserved=1)
    with ExitStack() as held:
        held.enter_context(pool.connection())
        held.enter_context(pool.connection())
        assert pool.stats()["shared_busy"] == 2
        with pytest.raises(ResourceExhausted) as err, pool.connection(0.1):
            pass
        assert "all 2 database connections for caller SQL are busy" in err.value.message
        assert err.value.reason == "POOL_EXHAUSTED"
        start = time.monotonic()
        with pool.connection(reserved=True) as conn, conn.cursor() as cur:
            cur.execute("SELECT 1")
            assert cur.fetchone() == (1,)
        assert time.monotonic() - start < LONG_WAIT_S / 2
        stats = pool.stats()
        assert (stats["open"], stats["busy"], stats["shared_busy"]) == (3, 2, 2)
    stats = pool.stats()
    assert (stats["open"], stats["idle"], stats["busy"], stats["shared_busy"]) == (3, 3, 0, 0)


def test_reads_can_hold_every_connection(make_pool: Callable[..., ConnectionPool]) -> None:
    pool = make_pool(max_size=2, reserved=1)
    with pool.connection(reserved=True), pool.connection(reserved=True):
        assert pool.stats()["busy"] == 2
        assert pool.stats()["shared_busy"] == 0
        busy = "all 2 database connections are busy"
        with pytest.raises(ResourceExhausted, match=busy), pool.connection(0.1, reserved=True):
            pass


def test_queue_of_caller_sql_is_bounded_and_answers_at_once(
    make_pool: Callable[..., ConnectionPool],
) -> None:
    pool = make_pool(max_size=2, reserved=1)  # caller SQL: one connection, one waiter
    got: list[str] = []
    with pool.connection():

        def waiter() -> None:
            with pool.connection():
                got.append("served")

        thread = threading.Thread(target=waiter)
        thread.start()
        wait_for(lambda: pool.stats()["shared_waiting"] == 1)
        start = time.monotonic()
        with pytest.raises(ResourceExhausted), pool.connection():
            pass
        assert time.monotonic() - start < LONG_WAIT_S / 2  # refused, not timed out
    thread.join(LONG_WAIT_S)
    assert got == ["served"]  # the one that queued was served once the connection came back
    assert pool.stats()["shared_waiting"] == 0


def test_a_freed_read_connection_wakes_a_waiting_read_not_only_caller_sql(
    make_pool: Callable[..., ConnectionPool],
) -> None:
    pool = make_pool(max_size=2, reserved=1)
    order: list[str] = []
    with pool.connection():  # caller SQL's whole share
        read = pool.connection(reserved=True)
        read.__enter__()  # the pool is full now

        def borrow(name: str, reserved: bool) -> None:
            with pool.connection(reserved=reserved):
                order.append(name)

        caller_sql = threading.Thread(target=borrow, args=("caller sql", False))
        caller_sql.start()
        wait_for(lambda: pool.stats()["shared_waiting"] == 1)
        second_read = threading.Thread(target=borrow, args=("read", True))
        second_read.start()
        time.sleep(0.1)
        start = time.monotonic()
        read.__exit__(None, None, None)
        second_read.join(LONG_WAIT_S / 2)
        assert order == ["read"]
        assert time.monotonic() - start < LONG_WAIT_S / 2
    caller_sql.join(LONG_WAIT_S)
    assert order == ["read", "caller sql"]


def test_accounting_survives_errors_in_the_block_and_in_connect(
    make_pool: Callable[..., ConnectionPool],
) -> None:
    pool = make_pool(max_size=2, reserved=1)
    with pytest.raises(ZeroDivisionError), pool.connection():
        1 / 0  # noqa: B018
    with (
        pytest.raises(psycopg2.errors.DivisionByZero),
        pool.connection() as conn,
        conn.cursor() as cur,
    ):
        cur.execute("SELECT 1/0")
    with pytest.raises(psycopg2.InterfaceError), pool.connection() as conn:  # noqa: PT012
        conn.close()  # a connection that broke under its borrower is dropped
        conn.cursor()
    stats = pool.stats()
    assert (stats["busy"], stats["shared_busy"], stats["shared_waiting"]) == (0, 0, 0)

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dead = make_pool(
        f"postgresql://nobody@127.0.0.1:{port}/nothing",
        max_size=2,
        reserved=1,
        connect_attempts=1,
        connect_timeout_s=1,
    )
    for reserved in (False, True):
        with pytest.raises(Unavailable), dead.connection(reserved=reserved):
            pass
    stats = dead.stats()
    assert (stats["open"], stats["busy"], stats["shared_busy"]) == (0, 0, 0)


def test_shares_hold_under_concurrent_borrowers(make_pool: Callable[..., ConnectionPool]) -> None:
    pool = make_pool(max_size=4, reserved=1)
    lock = threading.Lock()
    now = {"shared": 0, "all": 0}
    most = {"shared": 0, "all": 0}
    errors: list[BaseException] = []

    def borrow(reserved: bool, rounds: int) -> None:
        try:
            for i in range(rounds):
                try:
                    with pool.connection(reserved=reserved) as conn:
                        with lock:
                            now["all"] += 1
                            now["shared"] += not reserved
                            for key in most:
                                most[key] = max(most[key], now[key])
                        with conn.cursor() as cur:
                            cur.execute("SELECT pg_sleep(0.002)")
                        with lock:
                            now["all"] -= 1
                            now["shared"] -= not reserved
                        if i % 7 == 3:
                            raise KeyError("a borrower's own error")
                except (KeyError, ResourceExhausted):
                    pass
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=borrow, args=(i % 3 == 0, 30)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    assert most["shared"] <= 3
    assert most["all"] <= 4
    stats = pool.stats()
    assert (stats["busy"], stats["shared_busy"], stats["shared_waiting"]) == (0, 0, 0)


def test_reserved_must_leave_caller_sql_a_connection(database_url: str) -> None:
    with pytest.raises(ValueError, match="less than max_size"):
        ConnectionPool(database_url, max_size=2, reserved=2)


# -- the health check's connection ------------------------------------------------------


def backends(database_url: str, application_name: str) -> int:
    conn = psycopg2.connect(database_url)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                (application_name,),
            )
            row = cur.fetchone()
            assert row is not None
            return int(row[0])
    finally:
        conn.close()


def test_health_probe_keeps_one_connection_and_reopens_it(
    database_url: str, database_admin_url: str
) -> None:
    name = "gw-health-probe-test"
    probe = HealthProbe(database_url, connect_kwargs={"application_name": name})
    try:
        assert backends(database_url, name) == 0  # opened on the first check only
        threads = [threading.Thread(target=probe.check, args=(5.0,)) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        probe.check(5.0)
        assert backends(database_url, name) == 1  # concurrent checks shared it

        admin = psycopg2.connect(database_admin_url)  # only a superuser may end the sessions
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = %s",
                (name,),
            )
        admin.close()
        wait_for(lambda: backends(database_url, name) == 0)
        probe.check(5.0)  # a new connection, not an error
        assert backends(database_url, name) == 1
    finally:
        probe.close()
    wait_for(lambda: backends(database_url, name) == 0)


def test_health_probe_reports_an_unreachable_database(database_url: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    probe = HealthProbe(f"postgresql://nobody@127.0.0.1:{port}/nothing")
    with pytest.raises(Unavailable, match="the database is unavailable"):
        probe.check(2.0)
    probe.close()


# -- several pools, one budget ----------------------------------------------------------------


def test_pools_sharing_a_budget_never_open_more_than_it(
    make_pool: Callable[..., ConnectionPool],
) -> None:
    budget = ConnectionBudget(3, reserved=1)
    first = make_pool(max_size=3, reserved=1, budget=budget)
    second = make_pool(max_size=3, budget=budget)
    # Reads in the first pool open all three, then go idle.
    with (
        first.connection(reserved=True),
        first.connection(reserved=True),
        first.connection(reserved=True),
    ):
        assert budget.stats()["open"] == 3
    assert first.stats()["idle"] == 3
    # The second pool needs two: it closes the first pool's idle ones instead of going over.
    with second.connection(), second.connection():
        assert budget.stats()["open"] == 3
        assert second.stats()["open"] == 2
        assert first.stats()["open"] == 1
        # Caller SQL of both pools together holds at most limit - reserved = 2: one more
        # waits (then gives up) although the first pool alone would have room.
        started = time.monotonic()
        with pytest.raises(ResourceExhausted), first.connection(timeout_s=0.3):
            pass
        assert time.monotonic() - started >= 0.25
        # Reads still get the reserved one.
        with first.connection(reserved=True) as conn, conn.cursor() as cur:
            cur.execute("SELECT 1")
    assert budget.stats() == {"open": 3, "limit": 3, "caller_busy": 0}


def test_a_pool_waiting_on_the_budget_gets_a_connection_freed_in_another(
    make_pool: Callable[..., ConnectionPool],
) -> None:
    budget = ConnectionBudget(1)
    first = make_pool(max_size=1, budget=budget)
    second = make_pool(max_size=1, budget=budget)
    got = threading.Event()
    with first.connection():

        def borrow() -> None:
            with second.connection(timeout_s=5):
                got.set()

        thread = threading.Thread(target=borrow)
        thread.start()
        time.sleep(0.2)
        assert not got.is_set()  # the budget is spent and nothing is idle
    thread.join(5)
    assert got.is_set()  # the first pool's connection went idle and was closed for it
    assert budget.stats()["open"] == 1
