"""The SQL policy without a gateway: every rule of ``sqlrules``, every path of ``sqlpolicy``.

tests/db/test_sqlpolicy.py and test_sqlpolicy_review.py send attacks through a running
gateway and check their effects; these tables call the policy itself, so that a change to
any list, kind or decision fails here in well under a second (mutation/modules.py). Each
row is a caller's text and the exact kind the answer names (``None``: allowed); the last
tests pin the answer a caller gets for a refusal, through the request validator.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import pytest

from datamorph.gateway.v1 import gateway_pb2 as pb
from datamorph_gateway.auth.policy import Principal
from datamorph_gateway.config import LimitsSettings
from datamorph_gateway.db.sqlpolicy import Refusal, SqlPolicy, first_write
from datamorph_gateway.db.sqlrules import (
    DENIED_FUNCTIONS,
    assignment_parts,
    copy_server_side,
    def_elems,
    is_catalog,
    last_name,
    named_functions,
    relname,
    set_kind,
    string_constant,
    transaction_kind,
)
from datamorph_gateway.db.sqltext import parse
from datamorph_gateway.errors import GatewayError, InvalidArgument, PermissionDenied, QueryError
from datamorph_gateway.validation import Validator

POLICY = SqlPolicy()


def kinds(
    table: Mapping[str, str | None], *, read_only: bool = False, policy: SqlPolicy = POLICY
) -> dict[str, str | None]:
    """What the policy answers for each text of a table: the refused kind, or None."""
    answers: dict[str, str | None] = {}
    for sql in table:
        refusal = policy.check(parse(sql), read_only=read_only)
        answers[sql] = None if refusal is None else refusal.kind
    return answers


def check(sql: str, *, read_only: bool = False) -> Refusal | None:
    return POLICY.check(parse(sql), read_only=read_only)


# -- refused functions --------------------------------------------------------------------

# Refused by name, wherever a call, a binding or a plain name of a function appears.
NAMES = (
    "pg_read_file",
    "pg_read_binary_file",
    "pg_ls_dir",
    "pg_stat_file",
    "pg_ls_logdir",
    "pg_ls_waldir",
    "pg_ls_tmpdir",
    "pg_ls_archive_statusdir",
    "pg_ls_logicalsnapdir",
    "pg_ls_logicalmapdir",
    "pg_ls_replslotdir",
    "pg_ls_summariesdir",
    "pg_file_write",
    "pg_file_rename",
    "pg_file_unlink",
    "pg_file_sync",
    "pg_logdir_ls",
    "lo_import",
    "lo_export",
    "pg_terminate_backend",
    "pg_cancel_backend",
    "pg_reload_conf",
    "pg_rotate_logfile",
    "pg_promote",
    "setseed",
    "pg_notify",
    "dblink",
    "dblink_exec",
    "dblink_connect",
    "dblink_connect_u",
    "dblink_open",
    "dblink_fetch",
    "dblink_send_query",
    "dblink_get_result",
    "query_to_xml",
    "query_to_xml_and_xmlschema",
    "query_to_xmlschema",
    "cursor_to_xml",
    "cursor_to_xmlschema",
    "ts_stat",
    "pg_switch_wal",
    "pg_create_restore_point",
    "pg_backup_start",
    "pg_backup_stop",
    "pg_log_backend_memory_contexts",
    "pg_import_system_collations",
    "pg_logical_emit_message",
    "pg_wal_replay_pause",
    "pg_wal_replay_resume",
)
# Refused by prefix, in calls and bindings: each prefix alone and with more after it.
PREFIXES = (
    "dblink",
    "pg_create_physical_replication_slot",
    "pg_create_logical_replication_slot",
    "pg_drop_replication_slot",
    "pg_copy_physical_replication_slot",
    "pg_copy_logical_replication_slot",
    "pg_replication_slot_advance",
    "pg_replication_origin_",
    "pg_logical_slot_",
    "pg_stat_reset",
)


def test_the_list_of_names_is_the_documented_one() -> None:
    assert frozenset(NAMES) == DENIED_FUNCTIONS


def test_every_refused_function_is_refused_when_called() -> None:
    table = {f"SELECT {name}()": f"{name}()" for name in NAMES}
    table |= {f"SELECT 1 FROM t WHERE x = pg_catalog.{name}(1)": f"{name}()" for name in NAMES}
    assert kinds(table) == table


def test_every_refused_function_is_refused_when_merely_named() -> None:
    table = {f"COMMENT ON FUNCTION {name}() IS 'x'": f"{name}()" for name in NAMES}
    assert kinds(table) == table


def test_every_prefix_is_refused_in_a_call() -> None:
    table = {f"SELECT {prefix}()": f"{prefix}()" for prefix in PREFIXES}
    table |= {f"SELECT {prefix}_more(1)": f"{prefix}_more()" for prefix in PREFIXES}
    table |= {f"SELECT s.{prefix.upper()}X()": f"{prefix}x()" for prefix in PREFIXES}
    assert kinds(table) == table


@pytest.mark.parametrize("prefix", PREFIXES)
def test_every_prefix_is_refused_where_a_function_is_bound(prefix: str) -> None:
    f = f"{prefix}_x"
    table = {
        f"CREATE OPERATOR === (LEFTARG = text, RIGHTARG = text, FUNCTION = {f})": f"{f}()",
        f"CREATE OPERATOR === (LEFTARG = int, PROCEDURE = s.{f})": f"{f}()",
        f"ALTER OPERATOR === (text, text) SET (RESTRICT = {f})": f"{f}()",
        f"CREATE AGGREGATE a(text) (SFUNC = {f}, STYPE = text)": f"{f}()",
        f"CREATE TYPE ty (INPUT = {f}, OUTPUT = textout)": f"{f}()",
        f"CREATE CAST (text AS int) WITH FUNCTION {f}(text)": f"{f}()",
        f"CREATE TRANSFORM FOR int LANGUAGE sql (FROM SQL WITH FUNCTION {f}(internal), "
        "TO SQL WITH FUNCTION g(internal))": f"{f}()",
        f"CREATE TRANSFORM FOR int LANGUAGE sql (FROM SQL WITH FUNCTION g(internal), "
        f"TO SQL WITH FUNCTION {f}(internal))": f"{f}()",
        f"CREATE TRIGGER t AFTER INSERT ON x FOR EACH ROW EXECUTE FUNCTION {f}()": f"{f}()",
        f"CREATE EVENT TRIGGER e ON ddl_command_start EXECUTE FUNCTION {f}()": f"{f}()",
    }
    assert kinds(table) == table


def test_attribute_notation_is_a_call() -> None:
    """``('bgwriter'::text).pg_stat_reset_shared`` calls pg_stat_reset_shared('bgwriter')."""
    table: dict[str, str | None] = {
        "SELECT ('bgwriter'::text).pg_stat_reset_shared": "pg_stat_reset_shared()",
        "SELECT (('o'::text)).PG_REPLICATION_ORIGIN_DROP": "pg_replication_origin_drop()",
        "SELECT ('/etc/passwd'::text).pg_read_file": "pg_read_file()",
        "SELECT (c).relname, (c).relkind FROM pg_class c": None,
        "SELECT (a[1]).x FROM t": None,
    }
    assert kinds(table) == table


def test_names_that_only_look_like_refused_ones_pass() -> None:
    table: dict[str, str | None] = {
        "SELECT pg_read_file_x()": None,  # not a prefix
        "SELECT my_pg_read_file()": None,
        "SELECT pg_stat_get_live_tuples(1)": None,
        "SELECT pg_replication_origin_status.local_id FROM pg_replication_origin_status": None,
        "SELECT dblink_id FROM t": None,  # a column: only exact names are refused as names
        "COMMENT ON FUNCTION pg_stat_reset_shared() IS 'x'": None,
        "CREATE OPERATOR === (LEFTARG = text, RIGHTARG = text, FUNCTION = texteq)": None,
        "CREATE CAST (text AS int) WITH FUNCTION f(text)": None,
        "CREATE TRIGGER t AFTER INSERT ON x FOR EACH ROW EXECUTE FUNCTION f()": None,
    }
    assert kinds(table) == table


def test_functions_refused_for_their_arguments() -> None:
    table: dict[str, str | None] = {
        "SELECT set_config('statement_timeout', '0', false)": "set_config() of statement_timeout",
        "SELECT set_config(' Statement_Timeout '::text, '0', true)": (
            "set_config() of statement_timeout"
        ),
        "SELECT pg_catalog.set_config('role', 'x', false)": "set_config() of role",
        "SELECT set_config(name, '0', true) FROM pg_settings": (
            "set_config() of a computed setting name"
        ),
        "SELECT set_config()": "set_config() of a computed setting name",
        "SELECT set_config(1, '0', true)": "set_config() of a computed setting name",
        "SELECT set_config('application_name', 'x', true)": None,
        "SELECT ts_rewrite('a'::tsquery, 'SELECT a, b FROM t')": (
            "ts_rewrite() of a query given as a string"
        ),
        "SELECT ts_rewrite('a'::tsquery, 'a'::tsquery, 'b'::tsquery)": None,
        "SELECT ts_rewrite(ARRAY['a'::tsquery])": None,
    }
    assert kinds(table) == table


def test_functions_refused_for_their_arguments_are_refused_where_bound() -> None:
    """Bound, they are called with arguments no check sees: an aggregate's state, its rows."""
    table: dict[str, str | None] = {
        "CREATE AGGREGATE a(text, bool) (SFUNC = set_config, STYPE = text, "
        "INITCOND = 'statement_timeout')": (
            "set_config() bound as a function, where its arguments cannot be seen"
        ),
        "CREATE AGGREGATE a(text, bool) (SFUNC = pg_catalog.SET_CONFIG, STYPE = text)": (
            "set_config() bound as a function, where its arguments cannot be seen"
        ),
        "CREATE AGGREGATE a(text) (SFUNC = ts_rewrite, STYPE = tsquery, INITCOND = 'a')": (
            "ts_rewrite() bound as a function, where its arguments cannot be seen"
        ),
        "CREATE AGGREGATE a(int) (SFUNC = int4pl, STYPE = int, MSFUNC = set_config, "
        "MINVFUNC = int4mi, MSTYPE = int)": (
            "set_config() bound as a function, where its arguments cannot be seen"
        ),
        "CREATE AGGREGATE a(int) (SFUNC = int4pl, STYPE = int)": None,
    }
    assert kinds(table) == table


def test_every_protected_setting() -> None:
    settings = (
        "statement_timeout",
        "lock_timeout",
        "idle_in_transaction_session_timeout",
        "idle_session_timeout",
        "transaction_timeout",
        "transaction_read_only",
        "default_transaction_read_only",
        "client_min_messages",
        "standard_conforming_strings",
        "client_encoding",
    )
    table: dict[str, str | None] = {}
    for name in settings:
        table[f"SET {name} = 0"] = f"SET {name}"
        table[f"SET LOCAL {name.upper()} TO DEFAULT"] = f"SET {name}"
        table[f"SET {name} FROM CURRENT"] = f"SET {name}"
        table[f"RESET {name}"] = f"RESET {name}"
        table[f"SELECT set_config('{name}', '0', true)"] = f"set_config() of {name}"
        table[f"ALTER FUNCTION f() SET {name} = 0"] = f"SET {name}"
    for name in ("role", "session_authorization"):
        table[f"SELECT set_config('{name}', 'x', true)"] = f"set_config() of {name}"
    assert kinds(table) == table


def test_set_and_reset() -> None:
    table: dict[str, str | None] = {
        "SET ROLE postgres": "SET ROLE",
        "SET role = 'postgres'": "SET ROLE",
        "RESET ROLE": "RESET ROLE",
        "SET SESSION AUTHORIZATION postgres": "SET SESSION AUTHORIZATION",
        "SET SESSION AUTHORIZATION DEFAULT": "SET SESSION AUTHORIZATION",
        "RESET SESSION AUTHORIZATION": "RESET SESSION AUTHORIZATION",
        "RESET ALL": "RESET ALL",
        "SET TRANSACTION READ WRITE": "SET TRANSACTION (transaction_read_only)",
        "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ WRITE": (
            "SET TRANSACTION (transaction_read_only)"
        ),
        "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY": (
            "SET SESSION CHARACTERISTICS (transaction_read_only)"
        ),
        "SET NAMES 'SJIS'": "SET client_encoding",
        "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE": None,
        "SET search_path = public": None,
        "SET LOCAL work_mem = '64MB'": None,
        "RESET work_mem": None,
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql SET lock_timeout = 0 AS 'select 1'": (
            "SET lock_timeout"
        ),
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql SET work_mem = '1MB' AS 'select 1'": None,
    }
    assert kinds(table) == table


# -- statements -----------------------------------------------------------------------------


def test_transaction_control() -> None:
    table = {
        "BEGIN": "BEGIN (transaction control)",
        "START TRANSACTION READ WRITE": "START TRANSACTION (transaction control)",
        "COMMIT": "COMMIT (transaction control)",
        "END": "COMMIT (transaction control)",
        "ROLLBACK": "ROLLBACK (transaction control)",
        "ABORT": "ROLLBACK (transaction control)",
        "SAVEPOINT s": "SAVEPOINT (transaction control)",
        "RELEASE SAVEPOINT s": "RELEASE SAVEPOINT (transaction control)",
        "ROLLBACK TO SAVEPOINT s": "ROLLBACK TO SAVEPOINT (transaction control)",
        "PREPARE TRANSACTION 'x'": "PREPARE TRANSACTION (transaction control)",
        "COMMIT PREPARED 'x'": "COMMIT PREPARED (transaction control)",
        "ROLLBACK PREPARED 'x'": "ROLLBACK PREPARED (transaction control)",
        "DO $$ BEGIN COMMIT; END $$": "COMMIT (transaction control)",
        "DO $$ BEGIN ROLLBACK AND CHAIN; END $$": "ROLLBACK (transaction control)",
        "CREATE PROCEDURE p() LANGUAGE plpgsql AS $$ BEGIN COMMIT; END $$": (
            "COMMIT (transaction control)"
        ),
    }
    assert kinds(table) == table


def test_statements_refused_wherever_they_appear() -> None:
    table: dict[str, str | None] = {
        "LISTEN channel": "LISTEN",
        "UNLISTEN *": "UNLISTEN",
        "NOTIFY channel, 'x'": "NOTIFY",
        "LOAD 'auto_explain'": "LOAD",
        "ALTER SYSTEM SET statement_timeout = 0": "ALTER SYSTEM",
        "CREATE ROLE intruder LOGIN": "CREATE ROLE",
        "CREATE USER intruder": "CREATE ROLE",
        "ALTER ROLE CURRENT_USER PASSWORD 'x'": "ALTER ROLE",
        "ALTER USER CURRENT_USER SET search_path = evil": "ALTER ROLE ... SET",
        "DROP ROLE IF EXISTS intruder": "DROP ROLE",
        "GRANT pg_read_server_files TO CURRENT_USER": "GRANT or REVOKE of a role",
        "REVOKE pg_signal_backend FROM CURRENT_USER": "GRANT or REVOKE of a role",
        "CREATE DATABASE other": "CREATE DATABASE",
        "ALTER DATABASE postgres CONNECTION LIMIT 0": "ALTER DATABASE",
        "ALTER DATABASE postgres REFRESH COLLATION VERSION": "ALTER DATABASE",
        "ALTER DATABASE postgres SET search_path = evil": "ALTER DATABASE ... SET",
        "DROP DATABASE IF EXISTS other": "DROP DATABASE",
        "ALTER DEFAULT PRIVILEGES REVOKE SELECT ON TABLES FROM PUBLIC": (
            "ALTER DEFAULT PRIVILEGES"
        ),
        "CREATE LANGUAGE atk HANDLER plpgsql_call_handler": "CREATE LANGUAGE",
        "SELECT 1; LISTEN channel": "LISTEN",
        "GRANT SELECT ON t TO PUBLIC": None,
        "CREATE TABLE t (a int)": None,
        "DROP TABLE t": None,
    }
    assert kinds(table) == table


def test_copy() -> None:
    table: dict[str, str | None] = {
        "COPY t TO '/tmp/out'": "COPY to or from a server file",
        "COPY t FROM '/etc/passwd'": "COPY to or from a server file",
        "COPY (SELECT 1) TO PROGRAM 'id'": "COPY ... PROGRAM",
        "COPY t FROM PROGRAM 'id'": "COPY ... PROGRAM",
        "DO $$ BEGIN COPY t TO '/tmp/out'; END $$": "COPY to or from a server file",
        "DO $$ BEGIN EXECUTE 'COPY t TO STDOUT'; END $$": None,  # the server refuses it
    }
    assert kinds(table) == table


def test_statements_the_gateway_cannot_run() -> None:
    assert check("EXECUTE p") == Refusal("EXECUTE of a prepared statement", 1, True)
    assert check("PREPARE p AS SELECT 1; EXECUTE p(1)") == Refusal(
        "EXECUTE of a prepared statement", 2, True
    )
    assert check("COPY t TO STDOUT") == Refusal("COPY to STDOUT or from STDIN", 1, True)
    assert check("SELECT 1; COPY t FROM STDIN") == Refusal("COPY to STDOUT or from STDIN", 2, True)


def test_the_first_refused_statement_is_named_by_its_position() -> None:
    assert check("SELECT 1") is None
    assert check("LISTEN a") == Refusal(kind="LISTEN", statement=1, unsupported=False)
    assert check("SELECT 1; SELECT 2") is None
    assert check("LISTEN a; SELECT 1") == Refusal("LISTEN", 1)
    assert check("SELECT 1; NOTIFY a; LISTEN b") == Refusal("NOTIFY", 2)
    assert check("SELECT 1; SELECT 2; SELECT pg_read_file('x')") == Refusal("pg_read_file()", 3)


def test_system_catalogs_are_not_written() -> None:
    table: dict[str, str | None] = {
        "UPDATE pg_settings SET setting = '0' WHERE name = 'statement_timeout'": (
            "UPDATE pg_settings"
        ),
        "UPDATE pg_catalog.pg_proc SET prosrc = 'x'": "UPDATE pg_proc",
        "INSERT INTO pg_catalog.pg_authid DEFAULT VALUES": "INSERT INTO pg_authid",
        "DELETE FROM pg_class": "DELETE FROM pg_class",
        "MERGE INTO pg_catalog.t USING s ON true WHEN MATCHED THEN DELETE": "MERGE INTO t",
        "WITH d AS (DELETE FROM pg_catalog.pg_authid RETURNING 1) SELECT 1": (
            "DELETE FROM pg_authid"
        ),
        "UPDATE public.pg_settings SET a = 1": None,
        "UPDATE t SET a = 1": None,
        "INSERT INTO t VALUES (1)": None,
        "DELETE FROM t": None,
        "MERGE INTO t USING s ON true WHEN MATCHED THEN DELETE": None,
    }
    assert kinds(table) == table


def test_rules_and_views() -> None:
    table: dict[str, str | None] = {
        "CREATE RULE r AS ON INSERT TO t DO INSTEAD SELECT g FROM generate_series(1, 9) g": (
            "CREATE RULE ... DO SELECT"
        ),
        "CREATE RULE r AS ON INSERT TO t DO ALSO NOTIFY c": "NOTIFY",
        "CREATE RULE r AS ON INSERT TO t DO ALSO INSERT INTO u SELECT * FROM pg_settings": (
            "a view or rule over pg_settings"
        ),
        "CREATE RULE r AS ON INSERT TO t DO INSTEAD NOTHING": None,
        "CREATE RULE r AS ON INSERT TO t DO ALSO INSERT INTO u VALUES (1)": None,
        "CREATE VIEW v AS SELECT * FROM pg_settings": "a view or rule over pg_settings",
        "CREATE VIEW v AS SELECT * FROM pg_catalog.pg_settings s, t": (
            "a view or rule over pg_settings"
        ),
        "CREATE TABLE t AS SELECT name FROM pg_settings": "a view or rule over pg_settings",
        "CREATE MATERIALIZED VIEW m AS SELECT name FROM pg_settings": (
            "a view or rule over pg_settings"
        ),
        "CREATE VIEW v AS SELECT * FROM pg_class": None,
        "CREATE TABLE t AS SELECT 1": None,
        "SELECT * FROM pg_settings": None,
    }
    assert kinds(table) == table


# -- literals that may run as SQL -------------------------------------------------------------


def test_literals_in_the_callers_statement() -> None:
    table: dict[str, str | None] = {
        # Data: the name alone, or not SQL.
        "SELECT 'pg_read_file'": None,
        "SELECT 'we select, set and update data'": None,
        "SELECT 'set ('": None,
        "SELECT 42": None,
        # A call in a literal, seen by the name and a parenthesis, in any case.
        "SELECT 'pg_read_file(1)'": "pg_read_file()",
        "SELECT 'x PG_LS_DIR  (1)'": "pg_ls_dir()",
        "SELECT 'pg_stat_reset_shared(1)'": "pg_stat_reset_shared()",
        # A literal that parses as SQL is checked as SQL, whichever word starts it.
        "SELECT 'set statement_timeout = 0'": "SET statement_timeout",
        "SELECT 'abort'": "ROLLBACK (transaction control)",
        "SELECT 'drop role x'": "DROP ROLE",
        "SELECT 'update pg_settings set setting = 1'": "UPDATE pg_settings",
        "SELECT 'values (set_config(''role'', ''x'', true))'": "set_config() of role",
        "SELECT 'select 1; select pg_read_file/**/(1)'": "pg_read_file()",
        "SELECT 'select ''pg_read_file'''": "pg_read_file()",  # inside SQL, a name is code
    }
    assert kinds(table) == table


def test_every_sql_word_makes_a_literal_parsed() -> None:
    """A literal is parsed only when it holds one of the words: each text holds one."""
    table = {
        "copy t to ''/x''": "COPY to or from a server file",
        "set role x": "SET ROLE",
        "reset role": "RESET ROLE",
        "load ''x''": "LOAD",
        "listen c": "LISTEN",
        "unlisten c": "UNLISTEN",
        "notify c": "NOTIFY",
        "alter role r login": "ALTER ROLE",
        "begin": "BEGIN (transaction control)",
        "start transaction": "START TRANSACTION (transaction control)",
        "commit": "COMMIT (transaction control)",
        "end": "COMMIT (transaction control)",
        "rollback": "ROLLBACK (transaction control)",
        "abort": "ROLLBACK (transaction control)",
        "savepoint s": "SAVEPOINT (transaction control)",
        "release s": "RELEASE SAVEPOINT (transaction control)",
        "prepare transaction ''x''": "PREPARE TRANSACTION (transaction control)",
        "do ''x''": 'PL/pgSQL the gateway cannot parse (syntax error at or near "x")',
        "create role r": "CREATE ROLE",
        "drop role r": "DROP ROLE",
        "grant r to u": "GRANT or REVOKE of a role",
        "revoke r from u": "GRANT or REVOKE of a role",
        "select set_config(''role'', ''x'', true)": "set_config() of role",
        "values (set_config(''role'', ''x'', true))": "set_config() of role",
        "insert into pg_class table t": "INSERT INTO pg_class",
        "delete from pg_class": "DELETE FROM pg_class",
        "call p(set_config(''role'', ''x'', true))": "set_config() of role",
        "execute p(set_config(''role'', ''x'', true))": "set_config() of role",
    }
    table = {f"SELECT '{literal}'": kind for literal, kind in table.items()}
    assert kinds(table) == table


def test_literals_nested_four_deep_are_read_and_deeper_ones_are_not() -> None:
    def nested(sql: str, levels: int) -> str:
        for _ in range(levels):
            sql = "SELECT '" + sql.replace("'", "''") + "'"
        return sql

    assert check(nested("LISTEN x", 4)) == Refusal("LISTEN", 1)
    assert check(nested("LISTEN x", 5)) is None
    # Names of refused functions are seen in the text at any depth.
    assert check(nested("SELECT pg_read_file(1)", 7)) == Refusal("pg_read_file()", 1)


# -- code: DO blocks and new functions --------------------------------------------------------


def test_do_blocks() -> None:
    table: dict[str, str | None] = {
        "DO $$ BEGIN PERFORM 1; END $$": None,
        "DO LANGUAGE PLPGSQL $$ BEGIN PERFORM 1; END $$": None,
        "DO LANGUAGE plperlu $$ system('id') $$": (
            "DO in language plperlu, which the gateway cannot inspect"
        ),
        "DO LANGUAGE SQL 'select 1'": "DO in language sql, which the gateway cannot inspect",
        "DO $$ BEGIN PERFORM pg_read_file('/etc/passwd'); END $$": "pg_read_file()",
        "DO $$ BEGIN PERFORM 'pg_read_file'; END $$": "pg_read_file()",
        "DO $$ BEGIN PERFORM 'DBLINK_X'; END $$": "dblink_x()",
        "DO $$ BEGIN PERFORM 'my_pg_read_file', 'pg_read_file_x'; END $$": None,
        "DO $$ BEGIN EXECUTE format('SELECT %s(%L)', 'pg_read_file', '/x'); END $$": (
            "pg_read_file()"
        ),
        "DO $$ BEGIN EXECUTE 'SELECT 1; LISTEN x'; END $$": "LISTEN",
        "DO $$ BEGIN EXECUTE 'DROP ROLE x'; END $$": "DROP ROLE",
        "DO $$ BEGIN SET statement_timeout = 0; END $$": "SET statement_timeout",
        "DO $$ BEGIN EXECUTE 'CREATE FUNCTION g() RETURNS int LANGUAGE plpgsql "
        "AS $b$ BEGIN RETURN 1; END $b$'; END $$": None,
        "DO $$ BEGIN EXECUTE 'CREATE FUNCTION g() RETURNS int LANGUAGE plpgsql "
        "AS $b$ BEGIN RETURN set_config(''role'', ''x'', true); END $b$'; END $$": (
            "set_config() of role"
        ),
    }
    assert kinds(table) == table


def test_do_is_refused_in_read_only_requests_even_in_a_literal() -> None:
    table = {
        "DO $$ BEGIN PERFORM 1; END $$": "DO in a read-only request",
        "SELECT 'do $$ begin end $$'": "DO in a read-only request",
        "DO LANGUAGE plperlu 'x'": "DO in a read-only request",
    }
    assert kinds(table, read_only=True) == table
    assert kinds({"SELECT 'do $$ begin end $$'": None}) == {"SELECT 'do $$ begin end $$'": None}


def test_code_nested_four_deep_is_refused() -> None:
    deep = (
        "DO $a$ BEGIN EXECUTE $b$DO $c$ BEGIN EXECUTE $d$DO $e$ BEGIN NULL; END $e$$d$; "
        "END $c$$b$; END $a$"
    )
    shallow = "DO $a$ BEGIN EXECUTE $b$DO $c$ BEGIN PERFORM 1; END $c$$b$; END $a$"
    assert kinds({deep: None, shallow: None}) == {
        deep: "PL/pgSQL nested too deeply to inspect",
        shallow: None,
    }


def test_new_functions() -> None:
    table: dict[str, str | None] = {
        "CREATE FUNCTION f() RETURNS text LANGUAGE sql AS $$ SELECT pg_read_file('/x') $$": (
            "pg_read_file()"
        ),
        "CREATE FUNCTION f() RETURNS text LANGUAGE SQL AS $$ SELECT 'pg_read_file' $$": (
            "pg_read_file()"
        ),
        "CREATE FUNCTION f() RETURNS text LANGUAGE sql AS $$ VALUES (set_config("
        "'statement_timeout', '0', false)) $$": "set_config() of statement_timeout",
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'select 1'": None,
        # Bodies the server refuses (two AS strings for SQL, none at all) are its to refuse.
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'pg_read_file(1)', 'x'": None,
        "CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql": None,
        "CREATE FUNCTION f() RETURNS text LANGUAGE sql BEGIN ATOMIC; "
        "SELECT pg_read_file('/x'); END": "pg_read_file()",
        "CREATE FUNCTION f() RETURNS int BEGIN ATOMIC SELECT 1; END": None,
        "CREATE FUNCTION f() RETURNS text LANGUAGE plpgsql AS "
        "$$ BEGIN RETURN pg_read_file('/x'); END $$": "pg_read_file()",
        "CREATE FUNCTION f() RETURNS SETOF int LANGUAGE plpgsql AS "
        "'BEGIN RETURN QUERY SELECT 1; END'": None,
        "CREATE FUNCTION f() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN NEW.a := 1; RETURN NEW; END $$": None,
        "CREATE FUNCTION f(text) RETURNS text LANGUAGE internal AS 'pg_read_file_all'": (
            "a function in language internal, which the gateway cannot inspect"
        ),
        "CREATE FUNCTION f() RETURNS int LANGUAGE C AS 'x.so', 'f'": (
            "a function in language c, which the gateway cannot inspect"
        ),
        "CREATE PROCEDURE p() LANGUAGE plperl AS 'return 1'": (
            "a function in language plperl, which the gateway cannot inspect"
        ),
    }
    assert kinds(table) == table


# Every part of a PL/pgSQL statement that holds SQL, each with a refused call in it.
PLPGSQL_PARTS = {
    "x[pg_read_file('/etc/passwd')::int] := 1": "pg_read_file()",
    "x[set_config('transaction_read_only', 'off', false)::int] := 1": (
        "set_config() of transaction_read_only"
    ),
    "x[1][pg_ls_dir('.')::int] = 1": "pg_ls_dir()",
    "x[1:pg_ls_dir('.')::int] := '{1}'": "pg_ls_dir()",
    "x[(1 = 1)::int] := pg_ls_dir('.')::int": "pg_ls_dir()",
    "n = 1 = (set_config('role', 'x', true) = '')::int": "set_config() of role",
    "n := pg_ls_dir('.')::int FROM t WHERE true": "pg_ls_dir()",
    "n := (SELECT 1 FROM t WHERE pg_ls_dir('.') = '')": "pg_ls_dir()",
    "<<b>> DECLARE m int; BEGIN b.m := pg_ls_dir('.')::int; END": "pg_ls_dir()",
    "PERFORM pg_ls_dir('.')": "pg_ls_dir()",
    "RAISE NOTICE '%', pg_ls_dir('.')": "pg_ls_dir()",
    "RAISE EXCEPTION USING MESSAGE = pg_ls_dir('.')": "pg_ls_dir()",
    "RAISE NOTICE 'a' USING HINT = pg_ls_dir('.')": "pg_ls_dir()",
    "FOR s IN SELECT pg_ls_dir('.') LOOP END LOOP": "pg_ls_dir()",
    "FOR i IN 1..pg_ls_dir('.')::int LOOP END LOOP": "pg_ls_dir()",
    "FOR i IN 1..2 BY pg_ls_dir('.')::int LOOP END LOOP": "pg_ls_dir()",
    "LOOP EXIT WHEN pg_ls_dir('.') = ''; END LOOP": "pg_ls_dir()",
    "LOOP CONTINUE WHEN pg_ls_dir('.') = ''; END LOOP": "pg_ls_dir()",
    "FOR s IN EXECUTE pg_ls_dir('.') LOOP END LOOP": "pg_ls_dir()",
    "OPEN c FOR SELECT pg_ls_dir('.')": "pg_ls_dir()",
    "OPEN c FOR EXECUTE 'SELECT 1' USING pg_ls_dir('.')": "pg_ls_dir()",
    "CALL p(pg_ls_dir('.'))": "pg_ls_dir()",
    "IF false THEN NULL; ELSIF pg_ls_dir('.') = '' THEN NULL; END IF": "pg_ls_dir()",
    "CASE n WHEN pg_ls_dir('.')::int THEN NULL; END CASE": "pg_ls_dir()",
    "WHILE pg_ls_dir('.') = '' LOOP END LOOP": "pg_ls_dir()",
    "FOREACH n IN ARRAY x[pg_ls_dir('.')::int:] LOOP END LOOP": "pg_ls_dir()",
    "ASSERT true, pg_ls_dir('.')": "pg_ls_dir()",
    "EXECUTE 'SELECT 1' INTO n USING pg_ls_dir('.')": "pg_ls_dir()",
    "MOVE FORWARD pg_ls_dir('.')::int IN c": "pg_ls_dir()",
    "BEGIN NULL; EXCEPTION WHEN others THEN PERFORM pg_ls_dir('.'); END": "pg_ls_dir()",
    "GET DIAGNOSTICS n = ROW_COUNT": None,
    "x[(1 = 1)::int] := 1; x[1:2] = '{1,2}'; n := 1": None,
}


def test_every_part_of_plpgsql_is_checked() -> None:
    declare = "DECLARE x int[]; n int; s text; c refcursor; "
    table = {f"DO $$ {declare}BEGIN {body}; END $$": kind for body, kind in PLPGSQL_PARTS.items()}
    table |= {
        "DO $$ DECLARE s text := pg_ls_dir('.'); BEGIN END $$": "pg_ls_dir()",
        "DO $$ DECLARE c CURSOR FOR SELECT pg_ls_dir('.'); BEGIN END $$": "pg_ls_dir()",
        "DO $$ DECLARE c CURSOR (a int) FOR SELECT a; BEGIN OPEN c(pg_ls_dir('.')::int); "
        "END $$": "pg_ls_dir()",
        "DO $$ <<b>> DECLARE r record; BEGIN b.r.f[pg_ls_dir('.')::int] := 1; END $$": (
            "pg_ls_dir()"
        ),
        "DO $$ <<b>> DECLARE r record; BEGIN b.r.f := 1; END $$": None,
        "CREATE FUNCTION f() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN NEW.y[pg_ls_dir('.')::int] := 3; RETURN NEW; END $$": "pg_ls_dir()",
        "CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS "
        "$$ BEGIN RETURN pg_ls_dir('.')::int; END $$": "pg_ls_dir()",
        "CREATE FUNCTION f() RETURNS SETOF text LANGUAGE plpgsql AS "
        "$$ BEGIN RETURN NEXT pg_ls_dir('.'); END $$": "pg_ls_dir()",
        "CREATE FUNCTION f() RETURNS SETOF text LANGUAGE plpgsql AS "
        "$$ BEGIN RETURN QUERY SELECT pg_ls_dir('.'); END $$": "pg_ls_dir()",
        "CREATE FUNCTION f() RETURNS SETOF text LANGUAGE plpgsql AS "
        "$$ BEGIN RETURN QUERY EXECUTE 'SELECT 1' USING pg_ls_dir('.'); END $$": "pg_ls_dir()",
    }
    assert kinds(table) == table


def test_handlers_that_catch_the_cancel() -> None:
    handler = "an EXCEPTION handler for query_canceled"
    table: dict[str, str | None] = {
        f"DO $$ BEGIN PERFORM 1; EXCEPTION WHEN {condition} THEN NULL; END $$": handler
        for condition in (
            "query_canceled",
            "QUERY_CANCELED",
            "SQLSTATE '57014'",
            "operator_intervention",
            "SQLSTATE '57000'",
            "division_by_zero OR query_canceled",
        )
    }
    table["DO $$ BEGIN PERFORM 1; EXCEPTION WHEN others THEN NULL; END $$"] = None
    table["DO $$ BEGIN PERFORM 1; EXCEPTION WHEN SQLSTATE '57P01' THEN NULL; END $$"] = None
    assert kinds(table) == table


def test_what_the_server_would_read_otherwise_is_refused() -> None:
    """Text the server reads another way than libpg_query: each once got past the policy.

    The first two change how the server reads the next statement ('\\' no longer ends a
    string; psycopg2 keeps sending UTF-8, and in SJIS "\u00c1" swallows the backslash), which
    then runs a SET the parser saw inside a literal. ``system_user`` is reserved in the
    parser's PostgreSQL 18 and a plain name in PostgreSQL 15, so the parser could not read
    SQL that a LANGUAGE sql body or a PL/pgSQL EXECUTE of a constant was sure to run.
    """
    hidden = "set_config(''statement_timeout'', ''0'', false) FROM (SELECT 1) AS system_user"
    unreadable = 'SQL the gateway cannot parse (syntax error at or near "system_user")'
    table: dict[str, str | None] = {
        "SET standard_conforming_strings = off; "
        "SELECT '\\', ' AS x; SET statement_timeout = 0 --'": "SET standard_conforming_strings",
        "SET client_encoding = 'SJIS'; "
        "SELECT E'\u00c1\\' AS x; SET statement_timeout = 0 --'": "SET client_encoding",
        f"DO $$ BEGIN EXECUTE 'SELECT {hidden}'; END $$": unreadable,
        f"DO $$ DECLARE r record; BEGIN FOR r IN EXECUTE E'SELECT {hidden}'::text LOOP END LOOP; "
        "END $$": unreadable,
        f"DO $$ DECLARE c refcursor; BEGIN OPEN c FOR EXECUTE ('SELECT {hidden}'); END $$": (
            unreadable
        ),
        "CREATE FUNCTION f() RETURNS SETOF text LANGUAGE plpgsql AS "
        f"$f$ BEGIN RETURN QUERY EXECUTE 'SELECT {hidden}'; END $f$": unreadable,
        f"CREATE FUNCTION f() RETURNS text LANGUAGE sql AS 'SELECT {hidden}'": unreadable,
        # Data, or SQL built at run time: as before.
        "DO $$ BEGIN RAISE NOTICE 'select it from (select 1) as system_user'; END $$": None,
        "DO $$ BEGIN EXECUTE 'SELECT 1'; EXECUTE format('SELECT %s', 1); END $$": None,
        "DO $$ DECLARE q text := 'SELECT 1'; BEGIN EXECUTE q; END $$": None,
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'": None,
        "SET client_min_messages_x.y = 1": None,
    }
    assert kinds(table) == table


def test_plpgsql_the_parser_cannot_read_is_refused() -> None:
    rowtype = (
        "DO $$ DECLARE r pg_class%ROWTYPE; BEGIN r.relname := 'x'; "
        "PERFORM set_config('statement_timeout', '0', false); END $$"
    )
    table = {
        rowtype: 'PL/pgSQL the gateway cannot parse ("r.relname" is not a known variable)',
        "DO $$ BEGIN x := ; END $$": (
            'PL/pgSQL the gateway cannot parse ("x" is not a known variable)'
        ),
        "CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$ BEGIN RETURN 1 +; END $$": (
            "PL/pgSQL the gateway cannot parse (syntax error at end of input)"
        ),
        "DO $$ BEGIN " + "BEGIN " * 600 + "NULL; " + "END; " * 600 + "END $$": (
            "PL/pgSQL the gateway cannot parse (nested too deeply)"
        ),
    }
    assert kinds(table) == table


def test_assignment_parts() -> None:
    assert assignment_parts("x := 1") == ("x ", " 1")
    assert assignment_parts("x=1") == ("x", "1")
    assert assignment_parts("x[a[1] = 2][f(b := 3)] := y = z") == (
        "x[a[1] = 2][f(b := 3)] ",
        " y = z",
    )
    assert assignment_parts("r.f[é] = 'é'") == ("r.f[é] ", " 'é'")
    assert assignment_parts("x") == ("x",)


# -- configured functions -----------------------------------------------------------------


def test_configured_functions_extend_the_list() -> None:
    policy = SqlPolicy([" Pg_Sleep ", "txid_current", "", "  "])
    assert policy.denied_functions == DENIED_FUNCTIONS | {"pg_sleep", "txid_current"}
    table: dict[str, str | None] = {
        "SELECT pg_sleep(0)": "pg_sleep()",
        "SELECT TXID_CURRENT()": "txid_current()",
        "SELECT 'pg_sleep (1)'": "pg_sleep()",
        "DO $$ BEGIN PERFORM 'txid_current'; END $$": "txid_current()",
        "COMMENT ON FUNCTION pg_sleep(float8) IS 'x'": "pg_sleep()",
        "SELECT pg_read_file('x')": "pg_read_file()",
        "SELECT 'f (1)', 'pg_sleep'": None,
        "SELECT 1": None,
    }
    assert kinds(table, policy=policy) == table
    assert kinds({"SELECT pg_sleep(0)": None}) == {"SELECT pg_sleep(0)": None}


def test_a_refusal_is_frozen() -> None:
    """Answers are remembered and shared between requests: none can be changed."""
    refusal = check("LISTEN a")
    assert refusal is not None
    with pytest.raises(dataclasses.FrozenInstanceError):
        refusal.kind = "SELECT"  # type: ignore[misc]
    assert {refusal: "hashable"}


def test_long_texts_get_the_same_answer() -> None:
    padding = "x" * 9000  # past the texts whose answer is remembered
    long_refused = f"SELECT '{padding}'; LISTEN x"
    long_allowed = f"SELECT '{padding}'"
    assert check(long_refused) == Refusal("LISTEN", 2)
    assert check(long_refused) == Refusal("LISTEN", 2)
    assert check(long_allowed) is None


# -- what a read-only principal may run -----------------------------------------------------


def test_first_write() -> None:
    table: dict[str, str | None] = {
        "SELECT 1": None,
        "VALUES (1)": None,
        "TABLE t": None,
        "SHOW work_mem": None,
        "EXPLAIN SELECT 1": None,
        "WITH a AS (SELECT 1) SELECT * FROM a": None,
        "SELECT 1; SELECT 2": None,
        "INSERT INTO t VALUES (1)": "INSERT",
        "update t set a = 1": "UPDATE",
        "SELECT 1; DELETE FROM t": "DELETE",
        "MERGE INTO t USING s ON true WHEN MATCHED THEN DELETE": "MERGE",
        "CREATE TABLE t (a int)": "CREATE TABLE",
        "  create\n  index i ON t (a)": "CREATE INDEX",
        "NOTIFY c": "NOTIFY C",  # the first two words, when the tree gives no verb
        "SELECT 1 INTO t": "SELECT INTO",
        "SELECT * FROM t FOR UPDATE": "SELECT ... FOR UPDATE/SHARE",
        "SELECT * FROM t FOR KEY SHARE": "SELECT ... FOR UPDATE/SHARE",
        "WITH a AS (UPDATE t SET a = 1 RETURNING a) SELECT * FROM a": "UPDATE",
        "WITH a AS (INSERT INTO t VALUES (1) RETURNING a) SELECT * FROM a": "INSERT INTO",
        "WITH a AS (DELETE FROM t RETURNING a) SELECT * FROM a": "DELETE FROM",
        "EXPLAIN ANALYZE DELETE FROM t": "DELETE FROM",
        "EXPLAIN ANALYZE MERGE INTO t USING s ON true WHEN MATCHED THEN DELETE": "MERGE INTO",
        # Tables EXPLAIN ANALYZE creates even in a read-only transaction (PostgreSQL 15).
        "EXPLAIN ANALYZE CREATE TABLE t AS SELECT 1": "CREATE TABLE AS",
        "EXPLAIN ANALYZE CREATE MATERIALIZED VIEW m AS SELECT 1": "CREATE MATERIALIZED VIEW",
        "EXPLAIN ANALYZE SELECT 1 INTO t": "SELECT INTO",
        "SELECT 1 INTO t UNION SELECT 2 UNION SELECT 3": "SELECT INTO",
        "EXPLAIN SELECT 1 UNION SELECT 2": None,
    }
    assert {sql: first_write(parse(sql)) for sql in table} == table


def test_read_only_requests_create_no_table() -> None:
    table: dict[str, str | None] = {
        "EXPLAIN ANALYZE CREATE TABLE t AS SELECT 1": "CREATE TABLE AS in a read-only request",
        "EXPLAIN (ANALYZE) CREATE MATERIALIZED VIEW m AS SELECT 1": (
            "CREATE MATERIALIZED VIEW in a read-only request"
        ),
        "EXPLAIN ANALYZE SELECT 1 INTO t": "SELECT INTO in a read-only request",
        "(SELECT 1 INTO t) UNION SELECT 2": "SELECT INTO in a read-only request",
        "EXPLAIN ANALYZE SELECT 1 UNION SELECT 2": None,
        "SELECT 1": None,
    }
    assert kinds(table, read_only=True) == table
    assert kinds(dict.fromkeys(table)) == dict.fromkeys(table)


# -- the readers of parse-tree nodes --------------------------------------------------------


def test_readers_of_nodes_without_the_fields_they_look_for() -> None:
    assert transaction_kind({}) == "transaction control (transaction control)"
    assert set_kind({}) is None
    assert set_kind({"kind": "VAR_SET_MULTI"}) is None
    assert set_kind({"kind": "VAR_SET_MULTI", "args": [_elem("transaction_read_only")]}) == (
        "SET  (transaction_read_only)"
    )
    assert set_kind({"kind": "VAR_RESET", "name": "ROLE"}) == "RESET ROLE"
    assert relname({}) == ""
    assert relname({"relation": {"relname": "T"}}) == "T"
    assert last_name([{"A_Star": {}}]) == ""
    assert last_name([{"String": {}}]) == ""
    assert named_functions("DefElem", {}) == []
    assert named_functions("DefElem", {"arg": {"Integer": {"ival": 1}}}) == []
    assert named_functions("TypeCast", {"arg": {"TypeName": {"names": [_str("f")]}}}) == []
    assert named_functions("X", {"func": "f", "funcname": [_str("A"), _str("B")]}) == ["b"]
    assert named_functions("X", {"func": {}, "fromsql": {"objname": [_str("F")]}}) == ["f"]


def test_is_catalog() -> None:
    table = {
        ("pg_catalog", "t"): True,
        ("PG_CATALOG", "t"): True,
        ("", "pg_settings"): True,
        ("", "PG_X"): True,
        ("public", "pg_settings"): False,
        ("", "t"): False,
        ("", "xpg_t"): False,
    }
    found = {
        (schema, name): is_catalog(
            {"schemaname": schema, "relname": name} if schema else {"relname": name}
        )
        for schema, name in table
    }
    assert found == table
    assert is_catalog({}) is False


def test_copy_server_side() -> None:
    assert copy_server_side({"is_program": True}) is True
    assert copy_server_side({"filename": "/x"}) is True
    assert copy_server_side({"filename": ""}) is False
    assert copy_server_side({}) is False


def test_def_elems() -> None:
    items: list[Any] = [
        "not a node",
        {"String": {"sval": "x"}},
        {"DefElem": {}},
        {"DefElem": {"defname": "s", "arg": {"String": {"sval": "v"}}}},
        {"DefElem": {"defname": "empty", "arg": {"String": {}}}},
        {"DefElem": {"defname": "one", "arg": {"List": {"items": [_str("a")]}}}},
        {"DefElem": {"defname": "two", "arg": {"List": {"items": [_str("a"), _str("b")]}}}},
        {"DefElem": {"defname": "odd", "arg": {"List": {"items": [{"Integer": {}}, _str("b")]}}}},
        {"DefElem": {"defname": "none", "arg": {"List": {}}}},
        {"DefElem": {"defname": "int", "arg": {"Integer": {"ival": 1}}}},
        {"DefElem": {"defname": "bare"}},
        {"DefElem": {"arg": {"String": {"sval": "w"}}}},
    ]
    assert def_elems(items) == {
        "s": "v",
        "empty": "",
        "one": "a",
        "two": ["a", "b"],
        "odd": ["", "b"],
        "none": [],
        "int": None,
        "bare": None,
        "": "w",
    }


def test_string_constant() -> None:
    text = {"A_Const": {"sval": {"sval": "x"}}}
    assert string_constant(text) == "x"
    assert string_constant({"TypeCast": {"arg": {"TypeCast": {"arg": text}}}}) == "x"
    assert string_constant({"A_Const": {"sval": {}}}) == ""
    assert string_constant({"A_Const": {"ival": {"ival": 1}}}) is None
    assert string_constant({"A_Const": {}}) is None
    assert string_constant({"TypeCast": {}}) is None
    assert string_constant({"ColumnRef": {}}) is None
    assert string_constant([text]) is None
    assert string_constant(None) is None


def _str(sval: str) -> dict[str, Any]:
    return {"String": {"sval": sval}}


def _elem(name: str) -> dict[str, Any]:
    return {"DefElem": {"defname": name}}


# -- what the caller gets ------------------------------------------------------------------------

VALIDATOR = Validator(LimitsSettings())
WRITER = Principal(name="etl", allow=frozenset({"ExecuteQuery"}))
READER = Principal(name="reader", allow=frozenset({"ExecuteQuery"}), read_only_queries=True)


def answer(sql: str, principal: Principal = WRITER, *, read_only: bool = False) -> GatewayError:
    request = pb.ExecuteQueryRequest(query=sql, read_only=read_only)
    with pytest.raises(GatewayError) as err:
        VALIDATOR.execute_query(request, principal)
    return err.value


def test_a_refusal_as_the_caller_gets_it() -> None:
    err = answer("SELECT 1; SELECT pg_read_file('/etc/passwd'); SELECT 3")
    assert type(err) is PermissionDenied
    assert err.message == (
        "query: pg_read_file() is not allowed through the gateway (statement 2 of 3)"
    )
    assert err.reason == "STATEMENT_NOT_ALLOWED"
    assert err.metadata == {"statement_kind": "pg_read_file()", "statement": "2"}
    assert [(v.field, v.description) for v in err.violations] == [
        ("query", "pg_read_file() is not allowed through the gateway (statement 2 of 3)")
    ]
    err = answer("DO $$ DECLARE x int[]; BEGIN x[pg_read_file('/etc/passwd')::int] := 1; END $$")
    assert err.message == "query: pg_read_file() is not allowed through the gateway"


def test_a_statement_the_gateway_cannot_run_as_the_caller_gets_it() -> None:
    err = answer("EXECUTE p")
    assert type(err) is InvalidArgument
    assert [(v.field, v.description) for v in err.violations] == [
        ("query", "EXECUTE of a prepared statement is not supported through the gateway")
    ]


def test_read_only_requests_as_the_caller_gets_them() -> None:
    err = answer("DO $$ BEGIN PERFORM 1; END $$", read_only=True)
    assert err.message == "query: DO in a read-only request is not allowed through the gateway"
    err = answer("SELECT 1; SELECT 2", read_only=True)
    assert type(err) is InvalidArgument
    assert [(v.field, v.description) for v in err.violations] == [
        ("query", "a read_only query must be a single statement")
    ]
    err = answer("DELETE FROM t", READER)
    assert type(err) is PermissionDenied
    assert err.reason == "WRITES_NOT_ALLOWED"
    assert err.message == (
        "query: principal 'reader' may only read (ExecuteQuery:read), and DELETE writes"
    )
    checked = VALIDATOR.execute_query(pb.ExecuteQueryRequest(query="SELECT 1"), READER)
    assert checked.read_only is True


def test_text_nested_too_deeply_to_read_is_the_callers_error() -> None:
    """Python's JSON reader stops before the parser does: a bad request, not a crash."""
    err = answer("SELECT " + " || ".join(["'x'"] * 600))
    assert type(err) is QueryError
    assert err.kind is InvalidArgument
    assert err.message == "statement nested too deeply for the gateway to read"
