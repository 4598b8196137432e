"""Bypasses an attacker's review found in the first parser-based policy: each a regression test.

Every request here got past the gateway's checks before the fix (reproduced against a
real PostgreSQL): it read files, wrote server state, outlived the time limit or smuggled
a value into the SQL text.
"""

from __future__ import annotations

import uuid

import grpc
import psycopg2
import pytest

from datamorph_client import GatewayClient, GatewayError

S = grpc.StatusCode


def refused(client: GatewayClient, sql: str, *, read_only: bool = False) -> str:
    with pytest.raises(GatewayError) as err:
        client.execute_query(sql, read_only=read_only)
    assert err.value.code == S.PERMISSION_DENIED, err.value.message
    return err.value.message


@pytest.mark.parametrize(
    ("sql", "kind"),
    [
        # SQL given as a string, built where no check can follow it.
        (
            "SELECT word FROM ts_stat('VALUES (to_tsvector(''simple'', "
            "pg_read_file/**/(''/etc/passwd'')))') LIMIT 5",
            "ts_stat()",
        ),
        (
            "SELECT word FROM ts_stat(format('SELECT to_tsvector(%L, %s(%L))', 'simple', "
            "'pg_read_file', '/etc/hostname'))",
            "ts_stat()",
        ),
        (
            "SELECT query_to_xml('VALUES (pg_terminate_backend/**/(pg_backend_pid()))', "
            "true, false, '')",
            "query_to_xml()",
        ),
        ("SELECT ts_rewrite('a'::tsquery, 'SELECT a, b FROM t')", "ts_rewrite()"),
        # Lasting server state.
        ("SELECT pg_create_physical_replication_slot('s', true)", "replication_slot"),
        ("SELECT pg_replication_origin_create('o')", "pg_replication_origin_create()"),
        ("SELECT pg_logical_emit_message(false, 'a', 'x')", "pg_logical_emit_message()"),
        ("SELECT pg_switch_wal()", "pg_switch_wal()"),
        ("SELECT pg_stat_reset()", "pg_stat_reset()"),
        ("SELECT pg_log_backend_memory_contexts(1)", "pg_log_backend_memory_contexts()"),
        ("SELECT pg_import_system_collations('pg_catalog')", "pg_import_system_collations()"),
        # Languages the gateway cannot read, and new ones.
        (
            "CREATE LANGUAGE atk_pl HANDLER plpgsql_call_handler "
            "INLINE plpgsql_inline_handler VALIDATOR plpgsql_validator",
            "CREATE LANGUAGE",
        ),
        (
            "CREATE FUNCTION atk_exp(oid, text) RETURNS int LANGUAGE internal STRICT "
            "AS 'be_lo_export'",
            "language internal",
        ),
        ("CREATE FUNCTION f() RETURNS int LANGUAGE c AS 'x.so', 'f'", "language c"),
        ("CREATE FUNCTION f() RETURNS int LANGUAGE plperl AS 'return 1'", "language plperl"),
        # The catalogs: rebinding a function to another symbol, views over pg_settings.
        (
            "UPDATE pg_proc SET prosrc = 'pg_read_file_all' WHERE proname = 'atk_x'",
            "UPDATE pg_proc",
        ),
        ("DELETE FROM pg_catalog.pg_authid", "DELETE FROM pg_authid"),
        ("CREATE VIEW atk_settings AS SELECT * FROM pg_settings", "over pg_settings"),
        # A rule that makes a plain INSERT return rows without limit.
        (
            "CREATE RULE r AS ON INSERT TO t DO INSTEAD SELECT g FROM generate_series(1, 1e6) g",
            "CREATE RULE ... DO SELECT",
        ),
        # Code that would swallow the gateway's cancel.
        (
            "DO $$ BEGIN PERFORM pg_sleep(1); EXCEPTION WHEN query_canceled THEN NULL; END $$",
            "EXCEPTION handler for query_canceled",
        ),
        (
            "CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$ BEGIN PERFORM 1; "
            "EXCEPTION WHEN SQLSTATE '57014' THEN NULL; END $$",
            "EXCEPTION handler for query_canceled",
        ),
        (
            "DO $$ BEGIN PERFORM pg_sleep(1); EXCEPTION WHEN operator_intervention THEN NULL; "
            "END $$",
            "EXCEPTION handler for query_canceled",
        ),
    ],
)
def test_review_bypasses_are_refused(client: GatewayClient, sql: str, kind: str) -> None:
    assert kind in refused(client, sql)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT pg_create_physical_replication_slot('atk_slot', true)",
        "SELECT word FROM ts_stat('VALUES (to_tsvector(''simple'', ''x''))')",
    ],
)
def test_read_only_requests_are_refused_them_too(client: GatewayClient, sql: str) -> None:
    refused(client, sql, read_only=True)


def test_a_cursor_name_never_carries_a_value_into_the_sql(
    client: GatewayClient, seeded_database: str
) -> None:
    """A FETCH's text is made from the tree: "%(p1)s" in its cursor name stays text."""
    table = f"fetch_inj_{uuid.uuid4().hex[:8]}"
    client.execute_query(f"CREATE TABLE {table} (v text)")
    declare = 'DECLARE "x\'" CURSOR FOR SELECT 1; '
    fetch = 'FETCH ABSOLUTE 1 FROM "x%(p1)s"'
    with pytest.raises(GatewayError) as err:
        client.execute_query(
            declare + "SELECT $1::text; " + fetch,
            ['"; SELECT pg_read_file($q$/etc/hostname$q$) AS leaked --'],
        )
    assert err.value.code == S.INVALID_ARGUMENT  # cursor "x%(p1)s" does not exist
    with pytest.raises(GatewayError) as err:
        client.execute_query(
            declare + f"INSERT INTO {table} VALUES ($1); " + fetch + "; SELECT 1/0",
            ['"; COMMIT; --'],
        )
    assert err.value.code == S.INVALID_ARGUMENT
    for portal in ("x%d", "x%(zz)s"):
        with pytest.raises(GatewayError) as err:
            client.execute_query(f'SELECT $1::text; FETCH ABSOLUTE 1 FROM "{portal}"', ["a"])
        assert err.value.code == S.INVALID_ARGUMENT  # not an INTERNAL formatting error
    with psycopg2.connect(seeded_database) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT count(*) FROM {table}")
        assert cur.fetchone() == (0,)
    conn.close()


def test_recursive_with_clauses_are_hoisted(client: GatewayClient) -> None:
    table = f"rec_{uuid.uuid4().hex[:8]}"
    client.execute_query(f"CREATE TABLE {table} (id int PRIMARY KEY, v int)")
    result = client.execute_query(
        f"WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < 5) "
        f"INSERT INTO {table} SELECT i, i FROM r ON CONFLICT (id) DO UPDATE SET v = EXCLUDED.v "
        "RETURNING id",
        max_rows=3,
    )
    assert (result.row_count, result.truncated, result.rows_affected) == (3, True, 5)
    earlier = client.execute_query(
        f"WITH RECURSIVE x AS (DELETE FROM {table} WHERE id = 1 RETURNING *) SELECT * FROM x; "
        "SELECT 1 AS one"
    )
    assert earlier.rows == [{"one": 1}]
