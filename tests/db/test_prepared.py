"""Prepared catalog statements: planned once per connection, and never wrong about it."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg2
import psycopg2.errors
import psycopg2.extensions
import pytest

from datamorph_gateway.db.budget import Budget
from datamorph_gateway.db.prepared import Prepared, PreparingConnection

from ..fixtures.tracing import Tracing, traced_connection

ADD = Prepared("SELECT %s::int + %s::int AS total", ("int", "int"))


@pytest.fixture
def conn(database_url: str) -> Iterator[PreparingConnection]:
    with traced_connection(database_url) as connection:
        yield connection


def _add(conn: psycopg2.extensions.connection, a: int, b: int) -> int:
    with conn.cursor() as cur:
        ADD.execute(cur, (a, b), Budget(5))
        row = cur.fetchone()
    assert row is not None
    return int(row[0])


def _server_statements(conn: psycopg2.extensions.connection) -> dict[str, tuple[int, int]]:
    with conn.cursor() as cur:
        cur.execute("SELECT name, generic_plans, custom_plans FROM pg_prepared_statements")
        return {name: (generic, custom) for name, generic, custom in cur.fetchall()}


def test_prepared_once_then_only_executed(conn: PreparingConnection) -> None:
    assert [_add(conn, i, 1) for i in range(10)] == list(range(1, 11))
    prepares = [text for text in Tracing.sent if "PREPARE" in text]
    assert len(prepares) == 1
    assert ADD.name in conn.prepared
    # Always the generic plan: the default mode would keep planning it again.
    assert _server_statements(conn)[ADD.name] == (10, 0)


def test_the_statement_carries_the_time_limit(conn: PreparingConnection) -> None:
    sleep = Prepared("SELECT pg_sleep(%s)", ("float8",))
    with conn.cursor() as cur, pytest.raises(psycopg2.errors.QueryCanceled):
        sleep.execute(cur, (5,), Budget(0.05))
    # The PREPARE outlived the cancelled EXECUTE, and the connection knows it.
    assert sleep.name in _server_statements(conn)
    assert sleep.name in conn.prepared
    with conn.cursor() as cur:
        sleep.execute(cur, (0,), Budget(5))
    assert sum("PREPARE" in text for text in Tracing.sent) == 1


def test_a_statement_dropped_behind_its_back_is_prepared_again(
    conn: PreparingConnection,
) -> None:
    assert _add(conn, 1, 2) == 3
    with conn.cursor() as cur:
        cur.execute("DEALLOCATE ALL")
    assert _add(conn, 2, 2) == 4
    assert sum("PREPARE" in text for text in Tracing.sent) == 2


def test_a_statement_the_connection_forgot_is_reused(conn: PreparingConnection) -> None:
    assert _add(conn, 1, 2) == 3
    conn.forget_prepared()
    assert _add(conn, 3, 2) == 5
    assert ADD.name in conn.prepared
    assert _add(conn, 4, 2) == 6
    assert len(_server_statements(conn)) == 1


def test_inside_a_transaction_a_missing_statement_is_an_error(
    conn: PreparingConnection,
) -> None:
    assert _add(conn, 1, 2) == 3
    with conn.cursor() as cur:
        cur.execute("DEALLOCATE ALL")
    conn.autocommit = False
    # Retrying would run into the aborted transaction; the caller sees the first error.
    with pytest.raises(psycopg2.errors.InvalidSqlStatementName):
        _add(conn, 1, 1)
    conn.rollback()


def test_a_plain_connection_runs_the_sql_itself(database_url: str) -> None:
    Tracing.sent = []
    plain = psycopg2.connect(database_url, cursor_factory=Tracing)
    try:
        assert _add(plain, 20, 22) == 42
        assert _server_statements(plain) == {}
    finally:
        plain.close()
    assert not any("PREPARE" in text or "EXECUTE" in text for text in Tracing.sent)


def test_percent_signs_survive_both_paths(conn: PreparingConnection, database_url: str) -> None:
    literal = Prepared("SELECT '100%%' || %s::text", ("text",))
    plain = psycopg2.connect(database_url)
    try:
        for c in (conn, plain):
            with c.cursor() as cur:
                literal.execute(cur, ("!",))
                assert cur.fetchone() == ("100%!",)
    finally:
        plain.close()


def test_names_follow_the_text() -> None:
    assert Prepared("SELECT %s::int", ("int",)).name == Prepared("SELECT %s::int", ("int",)).name
    assert Prepared("SELECT %s::int", ("int",)).name != Prepared("SELECT %s::int8", ("int",)).name
    with pytest.raises(ValueError, match="placeholder"):
        Prepared("SELECT %s, %s", ("int",))
