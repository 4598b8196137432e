"""The embedded PostgreSQL manager and the demo dataset it is seeded with."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from psycopg2.extensions import make_dsn, parse_dsn

from datamorph_gateway.pg.demo import CUSTOMER_COUNT, ORDER_COUNT, ORDER_STATUSES, seed_demo
from datamorph_gateway.pg.server import EmbeddedPostgres, EmbeddedPostgresError

from ..fixtures.databases import throwaway_database

# Pinned on purpose: the demo data must be identical on every machine and server version.
# Change these only together with a deliberate change to the generator in pg/demo.py.
CUSTOMERS_MD5 = "3d0ba647497a36b00e49af2e74d5c1dd"
ORDERS_MD5 = "80301b8514d9099e8a2a483d1de9fc2d"

skip_external = pytest.mark.skipif(
    bool(os.environ.get("DATABASE_URL")),
    reason="restarts its own embedded server; skipped when DATABASE_URL names the server",
)


def _fetch_one(dsn: str, query: str) -> tuple[Any, ...]:
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(query)
            row = cur.fetchone()
    finally:
        conn.close()
    assert row is not None
    return row


def _assert_refused(dsn: str) -> None:
    with pytest.raises(psycopg2.OperationalError):
        psycopg2.connect(dsn, connect_timeout=3).close()


def _postmaster_pid(data_dir: Path) -> int | None:
    pid_file = data_dir / "postmaster.pid"
    return int(pid_file.read_text().split("\n", 1)[0]) if pid_file.exists() else None


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    """A PGDATA path that does not exist yet, removed afterwards (clusters are ~40 MB)."""
    path = tmp_path / "pg" / "data"
    yield path
    shutil.rmtree(tmp_path / "pg", ignore_errors=True)


@pytest.fixture
def pg(data_dir: Path) -> Iterator[EmbeddedPostgres]:
    server = EmbeddedPostgres(data_dir)
    try:
        yield server
    finally:
        server.stop()
        assert _postmaster_pid(data_dir) is None


def test_start_creates_the_cluster_and_listens_on_tcp_only(
    pg: EmbeddedPostgres, data_dir: Path
) -> None:
    assert not data_dir.exists()
    pg.start()
    assert (data_dir / "PG_VERSION").exists()
    assert pg.port > 0
    assert pg.dsn == (
        f"postgresql://postgres@127.0.0.1:{pg.port}/postgres?passfile={pg.passwords.path}"
    )
    row = _fetch_one(
        pg.dsn,
        "SELECT current_user, current_setting('is_superuser'), "
        "current_setting('listen_addresses'), current_setting('unix_socket_directories'), "
        "current_setting('server_encoding'), current_setting('port')::int",
    )
    assert row == ("postgres", "on", "127.0.0.1", "", "UTF8", pg.port)


def test_port_is_unknown_until_started(tmp_path: Path) -> None:
    server = EmbeddedPostgres(tmp_path / "data")
    with pytest.raises(EmbeddedPostgresError, match="start"):
        _ = server.port
    assert EmbeddedPostgres(tmp_path / "data", port=54999).port == 54999


def test_stop_refuses_connections_and_is_idempotent(pg: EmbeddedPostgres) -> None:
    pg.start()
    dsn = pg.dsn
    pg.stop()
    _assert_refused(dsn)
    pg.stop()
    assert pg.dsn == dsn


def test_start_twice_keeps_the_running_server(pg: EmbeddedPostgres, data_dir: Path) -> None:
    pg.start()
    pid = _postmaster_pid(data_dir)
    pg.start()
    assert _postmaster_pid(data_dir) == pid


@pytest.mark.embedded_only
@skip_external
def test_restart_answers_on_the_same_port(pg: EmbeddedPostgres) -> None:
    pg.start()
    port, dsn = pg.port, pg.dsn
    before = psycopg2.connect(dsn)
    try:
        pg.restart()
        with pytest.raises((psycopg2.OperationalError, psycopg2.InterfaceError)):
            before.cursor().execute("SELECT 1")
    finally:
        before.close()
    assert pg.port == port
    assert pg.dsn == dsn
    assert _fetch_one(dsn, "SELECT current_setting('port')::int") == (port,)


def test_initdb_happens_once_and_data_survives_a_restart(data_dir: Path) -> None:
    with EmbeddedPostgres(data_dir) as first:
        conn = psycopg2.connect(first.dsn)
        try:
            with conn, conn.cursor() as cur:
                cur.execute("CREATE TABLE kept (id int)")
                cur.execute("INSERT INTO kept VALUES (7)")
        finally:
            conn.close()
        (system_id,) = _fetch_one(first.dsn, "SELECT system_identifier FROM pg_control_system()")
    with EmbeddedPostgres(data_dir) as second:
        assert _fetch_one(second.dsn, "SELECT id FROM kept") == (7,)
        assert _fetch_one(second.dsn, "SELECT system_identifier FROM pg_control_system()") == (
            system_id,
        )


def test_a_server_left_running_on_the_same_data_dir_is_replaced(data_dir: Path) -> None:
    leftover = EmbeddedPostgres(data_dir)
    leftover.start()
    old_pid = _postmaster_pid(data_dir)
    old = psycopg2.connect(leftover.dsn)
    try:
        with EmbeddedPostgres(data_dir) as fresh:
            assert _postmaster_pid(data_dir) not in (None, old_pid)
            assert _fetch_one(fresh.dsn, "SELECT 1") == (1,)
            with pytest.raises((psycopg2.OperationalError, psycopg2.InterfaceError)):
                old.cursor().execute("SELECT 1")
    finally:
        old.close()
        leftover.stop()
    assert _postmaster_pid(data_dir) is None


def _exited_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", ""])
    proc.wait()
    return proc.pid


@pytest.mark.parametrize("owner", ["exited process", "live unrelated process"])
def test_a_stale_postmaster_pid_does_not_block_start(pg: EmbeddedPostgres, owner: str) -> None:
    pg.start()
    pg.stop()
    pid = _exited_pid() if owner == "exited process" else os.getpid()
    (pg.data_dir / "postmaster.pid").write_text(f"{pid}\n{pg.data_dir}\n0\n{pg.port}\n\n\n")
    pg.start()
    assert _fetch_one(pg.dsn, "SELECT 1") == (1,)


def test_start_fails_with_the_server_log_when_the_port_is_taken(data_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = EmbeddedPostgres(data_dir, port=taken.getsockname()[1])
        with pytest.raises(EmbeddedPostgresError, match=r"could not bind|already in use"):
            server.start()
    assert _postmaster_pid(data_dir) is None
    server.stop()


def test_refuses_to_initdb_over_unrelated_files(data_dir: Path) -> None:
    data_dir.mkdir(parents=True)
    (data_dir / "notes.txt").write_text("mine")
    with pytest.raises(EmbeddedPostgresError, match="PG_VERSION"):
        EmbeddedPostgres(data_dir).start()
    assert (data_dir / "notes.txt").read_text() == "mine"


@pytest.fixture
def fresh_database(server_url: str) -> Iterator[str]:
    """A database of this test's own, so that seeding starts from nothing."""
    with throwaway_database(server_url, "dmgw_seed") as name:
        params = parse_dsn(server_url)
        params["dbname"] = name
        yield make_dsn(**params)


def test_seed_demo_seeds_once(fresh_database: str) -> None:
    assert seed_demo(fresh_database) is True
    assert seed_demo(fresh_database) is False
    assert _fetch_one(fresh_database, "SELECT count(*) FROM customers") == (CUSTOMER_COUNT,)
    assert _fetch_one(fresh_database, "SELECT count(*) FROM orders") == (ORDER_COUNT,)
    assert _fetch_one(
        fresh_database,
        "SELECT count(*) FROM pg_constraint WHERE contype = 'f' "
        "AND conrelid = 'public.orders'::regclass AND confrelid = 'public.customers'::regclass",
    ) == (1,)
    statuses = _fetch_one(fresh_database, "SELECT array_agg(DISTINCT status) FROM orders")[0]
    assert set(statuses) == set(ORDER_STATUSES)
    assert _fetch_one(
        fresh_database,
        "SELECT count(*) FROM customers AS c WHERE lifetime_value IS DISTINCT FROM "
        "(SELECT coalesce(sum(amount), 0) FROM orders AS o "
        "WHERE o.customer_id = c.id AND o.status <> 'cancelled')",
    ) == (0,)
    assert _fetch_one(
        fresh_database,
        "SELECT reltuples::bigint FROM pg_class WHERE oid = 'public.orders'::regclass",
    ) == (ORDER_COUNT,)


def test_seed_demo_data_is_the_same_everywhere(fresh_database: str) -> None:
    seed_demo(fresh_database)
    customers = _fetch_one(
        fresh_database,
        "SELECT md5(string_agg(concat_ws('|', id, name, email, country, "
        "extract(epoch FROM created_at), lifetime_value), ',' ORDER BY id)) FROM customers",
    )
    orders = _fetch_one(
        fresh_database,
        "SELECT md5(string_agg(concat_ws('|', id, customer_id, extract(epoch FROM ordered_at), "
        "status, amount, items::text), ',' ORDER BY id)) FROM orders",
    )
    assert (customers[0], orders[0]) == (CUSTOMERS_MD5, ORDERS_MD5)


def test_concurrent_seeding_seeds_once(fresh_database: str) -> None:
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(seed_demo, [fresh_database] * 3))
    assert sorted(results) == [False, False, True]
    assert _fetch_one(fresh_database, "SELECT count(*) FROM customers") == (CUSTOMER_COUNT,)


def test_a_failed_seed_leaves_nothing_behind(fresh_database: str) -> None:
    conn = psycopg2.connect(fresh_database)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("CREATE TABLE public.orders (id int)")
    finally:
        conn.close()
    with pytest.raises(psycopg2.errors.DuplicateTable):
        seed_demo(fresh_database)
    assert _fetch_one(fresh_database, "SELECT to_regclass('public.customers')") == (None,)


def test_seed_demo_on_the_session_database(database_url: str) -> None:
    seed_demo(database_url)
    assert seed_demo(database_url) is False
    assert _fetch_one(database_url, "SELECT to_regclass('orders')::text") == ("orders",)
