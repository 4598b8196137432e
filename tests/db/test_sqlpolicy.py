"""Caller SQL that the gateway refuses, as an attacker would send it: each a regression test.

Every attack here worked against the gateway before it parsed SQL with PostgreSQL's own
parser; the tests check the refusal (PERMISSION_DENIED naming the statement kind) and,
where the attack had an effect outside the answer, that the effect did not happen.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import grpc
import psycopg2
import pytest

from datamorph_client import GatewayClient, GatewayError
from datamorph_gateway.db.sqlpolicy import SqlPolicy
from datamorph_gateway.db.sqltext import parse

from ..fixtures.gateway import GatewayFactory

S = grpc.StatusCode


def refused(client: GatewayClient, sql: str, *, read_only: bool = False) -> GatewayError:
    with pytest.raises(GatewayError) as err:
        client.execute_query(sql, read_only=read_only)
    assert err.value.code == S.PERMISSION_DENIED, err.value.message
    assert err.value.reason == "STATEMENT_NOT_ALLOWED"
    assert err.value.violations[0].field == "query"
    return err.value


@pytest.mark.parametrize("read_only", [False, True])
def test_copy_to_program_runs_nothing_on_the_host(
    client: GatewayClient, tmp_path: Path, read_only: bool
) -> None:
    marker = tmp_path / "pwned"
    err = refused(client, f"COPY (SELECT 1) TO PROGRAM 'id > {marker}'", read_only=read_only)
    assert "COPY ... PROGRAM" in err.message
    assert not marker.exists()


@pytest.mark.parametrize(
    "sql",
    [
        "COPY customers TO '{out}'",
        "COPY customers FROM '/etc/passwd'",
        "COPY (SELECT 1) TO PROGRAM 'psql -c \"CREATE TABLE pwned (a int)\" > {out}'",
        "SELECT 1; COPY customers FROM PROGRAM 'cat /etc/passwd > {out}'",
    ],
)
def test_copy_with_server_files_or_programs_is_refused(
    client: GatewayClient, sql: str, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    err = refused(client, sql.format(out=out))
    assert "COPY" in err.message
    assert not out.exists()


@pytest.mark.parametrize(
    ("sql", "kind"),
    [
        ("SELECT pg_read_file('/etc/passwd')", "pg_read_file()"),
        ("SELECT pg_catalog.pg_read_binary_file('/etc/passwd')", "pg_read_binary_file()"),
        ("SELECT * FROM pg_ls_dir('.')", "pg_ls_dir()"),
        ("SELECT (pg_stat_file('postgresql.conf')).size", "pg_stat_file()"),
        ("SELECT pg_terminate_backend(pid) FROM pg_stat_activity", "pg_terminate_backend()"),
        ("SELECT PG_CANCEL_BACKEND(1)", "pg_cancel_backend()"),
        ("SELECT pg_reload_conf()", "pg_reload_conf()"),
        ("SELECT pg_rotate_logfile()", "pg_rotate_logfile()"),
        ("SELECT lo_import('/etc/passwd')", "lo_import()"),
        ("SELECT lo_export(1, '/tmp/x')", "lo_export()"),
        ("SELECT dblink('dbname=postgres', 'select 1')", "dblink()"),
        ("SELECT dblink_exec('dbname=postgres', 'select 1')", "dblink_exec()"),
        ("SELECT pg_notify('c', 'x')", "pg_notify()"),
        # Hidden deeper in the statement.
        ("SELECT 1 WHERE EXISTS (SELECT pg_read_file('/etc/passwd'))", "pg_read_file()"),
        ("WITH a AS (SELECT pg_read_file('/etc/passwd') f) SELECT * FROM a", "pg_read_file()"),
        ("SELECT 1; SELECT 2; SELECT pg_read_file('/etc/passwd')", "pg_read_file()"),
        # In a string some function runs as SQL.
        (
            "SELECT query_to_xml('select pg_read_file(''/etc/passwd'')', true, true, '')",
            "pg_read_file()|query_to_xml()",
        ),
        (
            "SELECT query_to_xml('copy (select 1) to program ''id''', true, true, '')",
            "COPY ... PROGRAM|query_to_xml()",
        ),
        # In a DO block's PL/pgSQL, seen or in a literal EXECUTE runs.
        ("DO $$ BEGIN PERFORM pg_read_file('/etc/passwd'); END $$", "pg_read_file()"),
        (
            "DO $$ DECLARE x text; BEGIN x := pg_read_file('/etc/passwd'); END $$",
            "pg_read_file()",
        ),
        ("DO $$ BEGIN EXECUTE 'SELECT pg_terminate_backend(1)'; END $$", "pg_terminate_backend()"),
        (
            "DO $$ BEGIN EXECUTE 'COPY (SELECT 1) TO PROGRAM ''id'''; END $$",
            "COPY ... PROGRAM",
        ),
        ("DO $$ BEGIN SET statement_timeout = 0; END $$", "SET statement_timeout"),
        ("DO $$ BEGIN COMMIT; END $$", "COMMIT (transaction control)"),
        # In the target of a PL/pgSQL assignment: its subscripts run too.
        (
            "DO $$ DECLARE x int[]; BEGIN x[pg_read_file('/etc/passwd')::int] := 1; END $$",
            "pg_read_file()",
        ),
        (
            "DO $$ DECLARE x int[]; "
            "BEGIN x[set_config('transaction_read_only', 'off', false)::int] := 1; END $$",
            "set_config() of transaction_read_only",
        ),
        # Code the parser cannot read (a %ROWTYPE field as a target) is not run unread.
        (
            "DO $$ DECLARE r pg_class%ROWTYPE; BEGIN r.relname := 'x'; "
            "PERFORM set_config('statement_timeout', '0', false); END $$",
            "PL/pgSQL the gateway cannot parse",
        ),
        # In a new function's body, to be called later.
        (
            "CREATE FUNCTION f() RETURNS text LANGUAGE sql AS $$ SELECT pg_read_file('/x') $$",
            "pg_read_file()",
        ),
        (
            "CREATE FUNCTION f() RETURNS text LANGUAGE plpgsql AS "
            "$$ BEGIN RETURN pg_read_file('/x'); END $$",
            "pg_read_file()",
        ),
        (
            "CREATE FUNCTION f() RETURNS text LANGUAGE sql BEGIN ATOMIC; "
            "SELECT pg_read_file('/x'); END",
            "pg_read_file()",
        ),
        # Named in code: a literal that code turns into a call.
        (
            "DO $$ BEGIN EXECUTE format('SELECT %s(%L)', 'pg_read_file', '/etc/passwd'); END $$",
            "pg_read_file()",
        ),
        (
            "CREATE FUNCTION f(text) RETURNS text LANGUAGE internal AS 'pg_read_file_all'",
            "language internal",
        ),
        # By name where a function is referenced without being called.
        (
            "CREATE OPERATOR === (LEFTARG = text, RIGHTARG = text, FUNCTION = pg_read_file)",
            "pg_read_file()",
        ),
        (
            "CREATE CAST (text AS int) WITH FUNCTION pg_stat_reset_single_table_counters(text)",
            "pg_stat_reset_single_table_counters()",
        ),
    ],
)
def test_server_file_program_and_signal_functions_are_refused(
    client: GatewayClient, sql: str, kind: str
) -> None:
    err = refused(client, sql)
    assert any(k in err.message for k in kind.split("|")), err.message


@pytest.mark.parametrize(
    ("sql", "kind"),
    [
        ("SET statement_timeout = 0; SELECT pg_sleep(0)", "SET statement_timeout"),
        ("SET LOCAL statement_timeout TO DEFAULT", "SET statement_timeout"),
        ("RESET statement_timeout", "RESET statement_timeout"),
        ("SET lock_timeout = 0", "SET lock_timeout"),
        ("SET idle_in_transaction_session_timeout = 0", "SET idle_in_transaction_session_timeout"),
        ("RESET ALL", "RESET ALL"),
        ("SELECT set_config('statement_timeout', '0', false)", "set_config() of statement_timeout"),
        ("SELECT set_config('Statement_Timeout'::text, '0', true)", "set_config()"),
        ("SELECT set_config(name, '0', true) FROM pg_settings LIMIT 1", "computed setting name"),
        ("SET ROLE postgres", "SET ROLE"),
        ("RESET ROLE", "RESET ROLE"),
        ("SET SESSION AUTHORIZATION postgres", "SET SESSION AUTHORIZATION"),
        ("SET transaction_read_only = off", "SET transaction_read_only"),
        ("SET default_transaction_read_only = off", "SET default_transaction_read_only"),
        ("SET TRANSACTION READ WRITE", "SET TRANSACTION (transaction_read_only)"),
        ("SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE", "transaction_read_only"),
        ("ALTER ROLE CURRENT_USER SET statement_timeout = 0", "ALTER ROLE ... SET"),
        ("ALTER ROLE CURRENT_USER PASSWORD 'x'", "ALTER ROLE"),
        ("ALTER USER CURRENT_USER SET search_path = evil", "ALTER ROLE ... SET"),
        ("ALTER ROLE ALL SET work_mem = '1MB'", "ALTER ROLE ... SET"),
        ("CREATE ROLE intruder LOGIN", "CREATE ROLE"),
        ("CREATE USER intruder", "CREATE ROLE"),
        ("DROP ROLE IF EXISTS intruder", "DROP ROLE"),
        ("GRANT pg_read_server_files TO CURRENT_USER", "GRANT or REVOKE of a role"),
        ("REVOKE pg_signal_backend FROM CURRENT_USER", "GRANT or REVOKE of a role"),
        ("CREATE DATABASE other", "CREATE DATABASE"),
        ("ALTER DATABASE postgres CONNECTION LIMIT 0", "ALTER DATABASE"),
        ("ALTER DATABASE postgres SET search_path = evil", "ALTER DATABASE ... SET"),
        ("DROP DATABASE IF EXISTS other", "DROP DATABASE"),
        (
            "ALTER DEFAULT PRIVILEGES REVOKE SELECT ON TABLES FROM PUBLIC",
            "ALTER DEFAULT PRIVILEGES",
        ),
        (
            "CREATE FUNCTION f() RETURNS int LANGUAGE sql SET statement_timeout = 0 AS 'select 1'",
            "SET statement_timeout",
        ),
        (
            "UPDATE pg_settings SET setting = '0' WHERE name = 'statement_timeout'",
            "UPDATE pg_settings",
        ),
        ("UPDATE pg_catalog.pg_settings SET setting = '0'", "UPDATE pg_settings"),
        ("LISTEN channel", "LISTEN"),
        ("UNLISTEN *", "UNLISTEN"),
        ("NOTIFY channel, 'x'", "NOTIFY"),
        ("LOAD 'auto_explain'", "LOAD"),
        ("ALTER SYSTEM SET work_mem = '1GB'", "ALTER SYSTEM"),
        # The server would read the next statement otherwise than the gateway did, and run
        # the SET the gateway saw inside a string.
        (
            "SET standard_conforming_strings = off; "
            "SELECT '\\', ' AS x; SET statement_timeout = 0 --'",
            "SET standard_conforming_strings",
        ),
        (
            "SET client_encoding = 'SJIS'; SELECT E'\u00c1\\' AS x; SET statement_timeout = 0 --'",
            "SET client_encoding",
        ),
        # SQL the server's PostgreSQL reads and the gateway's newer parser does not.
        (
            "DO $$ BEGIN EXECUTE 'SELECT set_config(''statement_timeout'', ''0'', false) "
            "FROM (SELECT 1) AS system_user'; END $$",
            "SQL the gateway cannot parse",
        ),
        # set_config() called by an aggregate, with a setting no check sees.
        (
            "CREATE AGGREGATE a(text, bool) (SFUNC = set_config, STYPE = text, "
            "INITCOND = 'statement_timeout'); SELECT a('0', false)",
            "set_config() bound as a function",
        ),
    ],
)
def test_settings_and_statements_that_escape_the_gateway_are_refused(
    client: GatewayClient, sql: str, kind: str
) -> None:
    err = refused(client, sql)
    assert kind in err.message


def test_do_is_refused_in_read_only_requests(client: GatewayClient) -> None:
    err = refused(client, "DO $$ BEGIN PERFORM 1; END $$", read_only=True)
    assert "DO in a read-only request" in err.message


@pytest.mark.parametrize(
    "sql",
    [
        "EXPLAIN ANALYZE CREATE TABLE {name} AS SELECT 1",
        "EXPLAIN ANALYZE SELECT 1 INTO {name}",
    ],
)
def test_read_only_requests_create_no_table(
    client: GatewayClient, seeded_database: str, sql: str
) -> None:
    """PostgreSQL's read-only transaction lets EXPLAIN ANALYZE create the table."""
    name = f"explained_{uuid.uuid4().hex[:8]}"
    err = refused(client, sql.format(name=name), read_only=True)
    assert "in a read-only request" in err.message
    with psycopg2.connect(seeded_database) as conn, conn.cursor() as cur:
        cur.execute("SELECT to_regclass(%s)", (name,))
        assert cur.fetchone() == (None,)
    conn.close()


def test_do_in_a_language_that_cannot_be_inspected_is_refused(client: GatewayClient) -> None:
    err = refused(client, "DO LANGUAGE plperlu $$ system('id') $$")
    assert "cannot inspect" in err.message


def test_harmless_do_blocks_and_settings_still_run(client: GatewayClient) -> None:
    client.execute_query("DO $$ BEGIN PERFORM 1; END $$")
    result = client.execute_query("SET LOCAL search_path = public; SELECT 1 AS one")
    assert result.rows == [{"one": 1}]
    result = client.execute_query("SELECT set_config('application_name', 'x', true) AS v")
    assert result.rows == [{"v": "x"}]
    # A literal that merely mentions a refused name is data, not a call.
    assert client.execute_query("SELECT 'pg_read_file' AS n").rows == [{"n": "pg_read_file"}]


def test_the_refusal_names_the_statement_among_several(client: GatewayClient) -> None:
    err = refused(client, "SELECT 1; SELECT pg_read_file('/etc/passwd'); SELECT 3")
    assert "(statement 2 of 3)" in err.message


def test_begin_function_does_not_smuggle_a_commit(
    client: GatewayClient, seeded_database: str
) -> None:
    """The hand-written splitter took COMMIT for part of begin()'s body and ran it all."""
    suffix = uuid.uuid4().hex[:8]
    sql = (
        f"CREATE FUNCTION begin_{suffix}() RETURNS int LANGUAGE sql BEGIN ATOMIC; SELECT 1; END; "
        f"COMMIT; CREATE TABLE smuggled_{suffix} (a int); SELECT 1/0"
    )
    err = refused(client, sql)
    assert "COMMIT (transaction control)" in err.message
    with psycopg2.connect(seeded_database) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_proc WHERE proname = %s", (f"begin_{suffix}",))
        assert cur.fetchone() == (0,)
        cur.execute("SELECT to_regclass(%s)", (f"smuggled_{suffix}",))
        assert cur.fetchone() == (None,)
    conn.close()


def test_a_failing_statement_rolls_back_every_earlier_one(
    client: GatewayClient, seeded_database: str
) -> None:
    name = f"rolled_back_{uuid.uuid4().hex[:8]}"
    with pytest.raises(GatewayError) as err:
        client.execute_query(
            f"CREATE TABLE {name} (a int); INSERT INTO {name} VALUES (1) RETURNING a; SELECT 1/0"
        )
    assert err.value.sqlstate == "22012"
    with psycopg2.connect(seeded_database) as conn, conn.cursor() as cur:
        cur.execute("SELECT to_regclass(%s)", (name,))
        assert cur.fetchone() == (None,)
    conn.close()


@pytest.mark.parametrize(
    ("sql", "what"),
    [
        ("PREPARE p AS SELECT 1; EXECUTE p", "EXECUTE of a prepared statement"),
        ("COPY customers TO STDOUT", "COPY to STDOUT or from STDIN"),
        ("COPY customers FROM STDIN", "COPY to STDOUT or from STDIN"),
    ],
)
def test_statements_the_gateway_cannot_run_are_invalid(
    client: GatewayClient, sql: str, what: str
) -> None:
    with pytest.raises(GatewayError) as err:
        client.execute_query(sql)
    assert err.value.code == S.INVALID_ARGUMENT
    assert f"{what} is not supported" in err.value.message


def test_syntax_errors_answer_like_the_server(client: GatewayClient) -> None:
    with pytest.raises(GatewayError) as err:
        client.execute_query("SELECT 1; SELEC 2")
    assert err.value.code == S.INVALID_ARGUMENT
    assert err.value.sqlstate == "42601"
    assert err.value.message == 'syntax error at or near "SELEC" at character 11'


def test_configured_functions_extend_the_list(make_gateway: GatewayFactory) -> None:
    gateway = make_gateway(sql_denied_functions="pg_sleep, Txid_Current")
    with GatewayClient(gateway.address) as c:
        assert "pg_sleep()" in refused(c, "SELECT pg_sleep(0)").message
        assert "txid_current()" in refused(c, "SELECT txid_current()").message
        assert "pg_read_file()" in refused(c, "SELECT pg_read_file('/x')").message
        assert c.execute_query("SELECT 1 AS one").rows == [{"one": 1}]


def test_policy_without_a_gateway() -> None:
    policy = SqlPolicy()
    assert policy.check(parse("SELECT 1"), read_only=True) is None
    refusal = policy.check(parse("SELECT 1; LISTEN x"), read_only=False)
    assert refusal is not None
    assert (refusal.kind, refusal.statement, refusal.unsupported) == ("LISTEN", 2, False)


# What a random statement text may answer: success or the caller's own fault, never a
# server error (INTERNAL, UNAVAILABLE, UNKNOWN).
_CALLER_CODES = {
    S.INVALID_ARGUMENT,
    S.PERMISSION_DENIED,
    S.NOT_FOUND,
    S.FAILED_PRECONDITION,
    S.ALREADY_EXISTS,
    S.ABORTED,
    S.OUT_OF_RANGE,
}


def test_random_statement_texts_never_answer_a_server_error(make_gateway: GatewayFactory) -> None:
    pytest.importorskip("hypothesis")
    import hypothesis  # typed, unlike what importorskip returns
    from hypothesis import strategies as st

    words = st.sampled_from(
        [
            "SELECT", "select", "FROM", "WHERE", "WITH", "AS", "VALUES", "TABLE", "customers",
            "orders", "(", ")", ",", ";", "*", "1", "-1", "1.5e3", "'x'", "E'\\''", "U&'d'",
            "$$", "$a$", "$1", "--", "/*", "*/", "\n", "COPY", "TO", "PROGRAM", "'id'",
            "pg_read_file", "set_config", "SET", "RESET", "statement_timeout", "=", "0",
            "BEGIN", "COMMIT", "ROLLBACK", "DO", "LANGUAGE", "plpgsql", "ATOMIC", "END",
            "FUNCTION", "RETURNS", "int", "::", "ROLE", "LISTEN", "NOTIFY", "FETCH", "ALL",
            "DECLARE", "CURSOR", "FOR", "RETURNING", "INSERT", "INTO", "LIMIT", "EXPLAIN",
            "SHOW", "query_to_xml", "\x01", "é", '"', "'",
        ]
    )  # fmt: skip
    gateway = make_gateway(statement_timeout_s=2.0)
    with GatewayClient(gateway.address, timeout_s=10) as c:

        @hypothesis.settings(max_examples=300, database=None, deadline=None)
        @hypothesis.given(st.lists(words, max_size=16), st.booleans())
        def check(parts: list[str], read_only: bool) -> None:
            sql = " ".join(parts)
            failure = None
            try:
                c.execute_query(sql, read_only=read_only, max_rows=5)
            except GatewayError as exc:
                failure = exc
            if failure is not None:
                assert failure.code in _CALLER_CODES, f"{sql!r}: {failure}"

        check()
