"""GetData's relation cache: one statement per table, and never the wrong table."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import grpc
import psycopg2
import psycopg2.extensions
import pytest

from datamorph_client import GatewayClient, GatewayError
from datamorph_gateway.db import sampling
from datamorph_gateway.db.budget import Budget
from datamorph_gateway.db.catalog import Relation, RelationCache
from datamorph_gateway.db.names import parse_table_name
from datamorph_gateway.errors import NotFound

from ..fixtures.tracing import Tracing, traced_connection


@pytest.fixture
def schema(seeded_database: str) -> Iterator[str]:
    """A schema of one's own, dropped afterwards."""
    name = f"relcache_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(seeded_database)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f"CREATE SCHEMA {name}")
        cur.execute(
            f"CREATE TABLE {name}.t AS SELECT 'first' AS tag, g AS n FROM generate_series(1, 5) g"
        )
    try:
        yield name
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP SCHEMA {name} CASCADE")
        admin.close()


@pytest.fixture
def conn(seeded_database: str) -> Iterator[psycopg2.extensions.connection]:
    with traced_connection(seeded_database) as connection:
        yield connection


def _ddl(conn: psycopg2.extensions.connection, statement: str) -> None:
    with conn.cursor() as cur:
        cur.execute(statement)
    Tracing.sent.clear()


def _tags(conn: psycopg2.extensions.connection, cache: RelationCache | None, name: str) -> set[str]:
    [taken] = sampling.sample_tables(conn, [parse_table_name(name)], [name], 10, Budget(10), cache)
    return {row[0] for row in taken.rows}


def test_steady_state_is_one_statement_per_table(
    conn: psycopg2.extensions.connection, schema: str
) -> None:
    cache = RelationCache(ttl_s=60)
    name = f"{schema}.t"
    assert _tags(conn, cache, name) == {"first"}
    assert len(Tracing.sent) == 2  # resolve, sample
    for _ in range(3):
        Tracing.sent.clear()
        assert _tags(conn, cache, name) == {"first"}
        assert len(Tracing.sent) == 1
        assert "to_regclass" in Tracing.sent[0]


def test_a_recreated_table_is_read_not_the_old_one(
    conn: psycopg2.extensions.connection, schema: str
) -> None:
    cache = RelationCache(ttl_s=60)
    name = f"{schema}.t"
    assert _tags(conn, cache, name) == {"first"}
    _ddl(conn, f"DROP TABLE {name}")
    _ddl(conn, f"CREATE TABLE {name} AS SELECT 'second' AS tag")
    assert _tags(conn, cache, name) == {"second"}
    assert len(Tracing.sent) == 3  # the guarded sample found another oid: resolve, sample
    Tracing.sent.clear()
    assert _tags(conn, cache, name) == {"second"}
    assert len(Tracing.sent) == 1


def test_a_renamed_table_is_not_found_under_its_old_name(
    conn: psycopg2.extensions.connection, schema: str
) -> None:
    cache = RelationCache(ttl_s=60)
    name = f"{schema}.t"
    assert _tags(conn, cache, name) == {"first"}
    _ddl(conn, f"ALTER TABLE {name} RENAME TO u")
    with pytest.raises(NotFound) as err:
        _tags(conn, cache, name)
    assert name in err.value.message
    assert _tags(conn, cache, f"{schema}.u") == {"first"}


def test_a_table_moved_away_and_replaced_is_not_followed(
    conn: psycopg2.extensions.connection, schema: str
) -> None:
    """The cached oid is still alive elsewhere, but the name now means another table."""
    cache = RelationCache(ttl_s=60)
    name = f"{schema}.t"
    assert _tags(conn, cache, name) == {"first"}
    _ddl(conn, f"CREATE SCHEMA {schema}_other")
    try:
        _ddl(conn, f"ALTER TABLE {name} SET SCHEMA {schema}_other")
        _ddl(conn, f"CREATE TABLE {name} AS SELECT 'replacement' AS tag")
        assert _tags(conn, cache, name) == {"replacement"}
    finally:
        _ddl(conn, f"DROP SCHEMA {schema}_other CASCADE")


def test_a_shadowing_table_on_the_search_path_wins(
    conn: psycopg2.extensions.connection, schema: str
) -> None:
    cache = RelationCache(ttl_s=60)
    _ddl(conn, f"CREATE SCHEMA {schema}_front")
    try:
        _ddl(conn, f"SET search_path = {schema}_front, {schema}")
        assert _tags(conn, cache, "t") == {"first"}
        _ddl(conn, f"CREATE TABLE {schema}_front.t AS SELECT 'front' AS tag")
        assert _tags(conn, cache, "t") == {"front"}
    finally:
        _ddl(conn, f"DROP SCHEMA {schema}_front CASCADE")
        _ddl(conn, "RESET search_path")


def test_an_empty_table_is_resolved_each_time_and_stays_empty(
    conn: psycopg2.extensions.connection, schema: str
) -> None:
    cache = RelationCache(ttl_s=60)
    name = f"{schema}.t"
    _ddl(conn, f"TRUNCATE {name}")
    assert _tags(conn, cache, name) == set()
    Tracing.sent.clear()
    assert _tags(conn, cache, name) == set()
    assert len(Tracing.sent) == 3  # an empty guarded sample proves nothing: resolve, sample


@pytest.mark.parametrize("ttl_s", [0.0])
def test_ttl_zero_turns_the_cache_off(
    conn: psycopg2.extensions.connection, schema: str, ttl_s: float
) -> None:
    cache = RelationCache(ttl_s=ttl_s)
    for _ in range(2):
        Tracing.sent.clear()
        assert _tags(conn, cache, f"{schema}.t") == {"first"}
        assert len(Tracing.sent) == 2
    assert len(cache) == 0


def test_no_cache_inside_a_transaction(conn: psycopg2.extensions.connection, schema: str) -> None:
    cache = RelationCache(ttl_s=60)
    name = f"{schema}.t"
    assert _tags(conn, cache, name) == {"first"}
    conn.autocommit = False
    Tracing.sent.clear()
    assert _tags(conn, cache, name) == {"first"}
    assert len(Tracing.sent) == 2  # a failed guarded statement would abort the transaction
    conn.rollback()


def test_the_cache_is_bounded() -> None:
    cache = RelationCache(ttl_s=60, max_entries=2)
    for i in range(3):
        cache.put(str(i), Relation(i, "s", str(i), "r", 0, 0, 0))
    assert len(cache) == 2
    assert cache.get("0") is None
    assert cache.get("2") is not None


def test_gateway_follows_a_recreated_table(
    client: GatewayClient, seeded_database: str, schema: str
) -> None:
    name = f"{schema}.t"
    first = client.get_data([name])[name]
    assert {r["tag"] for r in first.rows} == {"first"}
    admin = psycopg2.connect(seeded_database)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(f"DROP TABLE {name}")
            cur.execute(f"CREATE TABLE {name} AS SELECT 42 AS answer")
        again = client.get_data([name])[name]
        assert again.rows == [{"answer": 42}]
        assert [(c.name, c.type) for c in again.columns] == [("answer", "int4")]
        with admin.cursor() as cur:
            cur.execute(f"DROP TABLE {name}")
        with pytest.raises(GatewayError) as err:
            client.get_data([name])
        assert err.value.code == grpc.StatusCode.NOT_FOUND
    finally:
        admin.close()


@pytest.mark.parametrize("rows", [3, 20_000])
def test_names_with_quotes_and_percent_signs(
    conn: psycopg2.extensions.connection, schema: str, rows: int
) -> None:
    """Quoting from the catalog survives ", %, spaces and case, both sampling methods."""
    quoted = f'{schema}."we""ird %s 100% Name"'
    _ddl(
        conn,
        f"CREATE TABLE {quoted} AS SELECT 'odd' AS tag, g, repeat('x', 200) AS pad"
        f" FROM generate_series(1, {rows}) g",
    )
    _ddl(conn, f"ANALYZE {quoted}")
    cache = RelationCache(ttl_s=60)
    for _ in range(2):
        assert _tags(conn, cache, quoted) == {"odd"}
    [taken] = sampling.sample_tables(
        conn, [parse_table_name(quoted)], [quoted], 10, Budget(10), cache
    )
    assert taken.relation.name == 'we"ird %s 100% Name'
    assert len(taken.rows) == min(rows, 10)
    assert (sampling.sample_percent(taken.relation, 10) is None) == (rows < 1000)
