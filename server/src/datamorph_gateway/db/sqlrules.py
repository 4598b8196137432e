"""The lists the SQL policy checks against, and the readers of parse-tree nodes it shares.

``sqlpolicy`` walks caller SQL's tree and decides; this module holds what it looks for:
the functions refused by name or by prefix, the settings a caller may not change, the
statement kinds refused outright, and the name each refused node is given in the answer.
docs/security.md lists the same, for operators.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pglast import parser

from datamorph_gateway.db.sqltext import walk

DENIED_FUNCTIONS: frozenset[str] = frozenset(
    {
        # server files
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
        # other sessions and the server itself
        "pg_terminate_backend",
        "pg_cancel_backend",
        "pg_reload_conf",
        "pg_rotate_logfile",
        "pg_promote",
        # session state that DISCARD ALL keeps: the next caller's random() sequence
        "setseed",
        "pg_notify",
        # other servers
        "dblink",
        "dblink_exec",
        "dblink_connect",
        "dblink_connect_u",
        "dblink_open",
        "dblink_fetch",
        "dblink_send_query",
        "dblink_get_result",
        # SQL given as a string, which no check on the text can follow when it is built
        "query_to_xml",
        "query_to_xml_and_xmlschema",
        "query_to_xmlschema",
        "cursor_to_xml",
        "cursor_to_xmlschema",
        "ts_stat",
        # lasting server state a caller must not leave behind (even read-only)
        "pg_switch_wal",
        "pg_create_restore_point",
        "pg_backup_start",
        "pg_backup_stop",
        "pg_log_backend_memory_contexts",
        "pg_import_system_collations",
        "pg_logical_emit_message",
        "pg_wal_replay_pause",
        "pg_wal_replay_resume",
    }
)
# Families refused by prefix: other servers, replication slots and origins, statistics.
DENIED_PREFIXES = (
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
# The languages whose bodies the policy reads; a function in any other cannot be inspected.
INSPECTED_LANGUAGES = frozenset({"sql", "plpgsql"})

# Settings a caller may not change: the limits the gateway enforces, who it is, and how
# the server reads the text that follows (with standard_conforming_strings off, '\' does
# not end a string; under a client_encoding such as SJIS, bytes psycopg2 still sends as
# UTF-8 swallow a backslash): the gateway's parser would read the next statements otherwise.
PROTECTED_SETTINGS: frozenset[str] = frozenset(
    {
        "statement_timeout",
        "lock_timeout",
        "idle_in_transaction_session_timeout",
        "idle_session_timeout",
        "transaction_timeout",
        "transaction_read_only",
        "default_transaction_read_only",
        "session_authorization",
        "role",
        "client_min_messages",
        "standard_conforming_strings",
        "client_encoding",
    }
)

# Functions refused for their arguments (sqlpolicy's _call_kind), so also wherever they are
# bound without a call whose arguments could be read: an aggregate's SFUNC = set_config
# with INITCOND = 'statement_timeout' sets it on every row.
ARGUMENT_CHECKED = frozenset({"set_config", "ts_rewrite"})

# PL/pgSQL's own transaction control, in a DO block or a procedure's body.
PLPGSQL_TRANSACTION = {"PLpgSQL_stmt_commit": "COMMIT", "PLpgSQL_stmt_rollback": "ROLLBACK"}

# EXCEPTION conditions that catch the gateway's cancel: query_canceled (57014), and its
# class, operator_intervention (57000), which a handler matches as a whole.
CANCEL_CONDITIONS = frozenset({"query_canceled", "57014", "operator_intervention", "57000"})

# The parse modes (PostgreSQL's RawParseMode) of a PL/pgSQL assignment, "target := value",
# with a target of one, two or three names; 0 is a whole statement, 2 an expression.
PLPGSQL_ASSIGN_MODES = frozenset({3, 4, 5})

# Statements that write a table, as an answer names them.
WRITES = {
    "UpdateStmt": "UPDATE",
    "InsertStmt": "INSERT INTO",
    "DeleteStmt": "DELETE FROM",
    "MergeStmt": "MERGE INTO",
}

# Statements refused wherever they appear, as an answer names them.
REFUSED_STATEMENTS = {
    "ListenStmt": "LISTEN",
    "UnlistenStmt": "UNLISTEN",
    "NotifyStmt": "NOTIFY",
    "LoadStmt": "LOAD",
    "AlterSystemStmt": "ALTER SYSTEM",
    # Roles and databases are the DBA's (deploy/sql/roles.sql): a role may change its own
    # password, which would lock the gateway's next connections out, and role or database
    # settings would reach every later session.
    "CreateRoleStmt": "CREATE ROLE",
    "AlterRoleStmt": "ALTER ROLE",
    "AlterRoleSetStmt": "ALTER ROLE ... SET",
    "DropRoleStmt": "DROP ROLE",
    "GrantRoleStmt": "GRANT or REVOKE of a role",
    "CreatedbStmt": "CREATE DATABASE",
    "AlterDatabaseStmt": "ALTER DATABASE",
    "AlterDatabaseSetStmt": "ALTER DATABASE ... SET",
    "AlterDatabaseRefreshCollStmt": "ALTER DATABASE",
    "DropdbStmt": "DROP DATABASE",
    "AlterDefaultPrivilegesStmt": "ALTER DEFAULT PRIVILEGES",
}

_TRANSACTION_KINDS = {
    "TRANS_STMT_BEGIN": "BEGIN",
    "TRANS_STMT_START": "START TRANSACTION",
    "TRANS_STMT_COMMIT": "COMMIT",
    "TRANS_STMT_ROLLBACK": "ROLLBACK",
    "TRANS_STMT_SAVEPOINT": "SAVEPOINT",
    "TRANS_STMT_RELEASE": "RELEASE SAVEPOINT",
    "TRANS_STMT_ROLLBACK_TO": "ROLLBACK TO SAVEPOINT",
    "TRANS_STMT_PREPARE": "PREPARE TRANSACTION",
    "TRANS_STMT_COMMIT_PREPARED": "COMMIT PREPARED",
    "TRANS_STMT_ROLLBACK_PREPARED": "ROLLBACK PREPARED",
}


def transaction_kind(node: dict[str, Any]) -> str:
    kind = _TRANSACTION_KINDS.get(str(node.get("kind", "")), "transaction control")
    return f"{kind} (transaction control)"


def set_kind(node: dict[str, Any]) -> str | None:
    kind = str(node.get("kind", ""))
    name = str(node.get("name", "")).lower()
    verb = "RESET" if kind.startswith("VAR_RESET") else "SET"
    if kind == "VAR_RESET_ALL":
        return "RESET ALL"
    if kind == "VAR_SET_MULTI":
        # SET TRANSACTION / SET SESSION CHARACTERISTICS AS TRANSACTION ...
        for option in def_elems(node.get("args", ())):
            if option in PROTECTED_SETTINGS:
                return f"SET {name.upper()} ({option})"
        return None
    if name == "role":
        return f"{verb} ROLE"
    if name == "session_authorization":
        return f"{verb} SESSION AUTHORIZATION"
    if name in PROTECTED_SETTINGS:
        return f"{verb} {name}"
    return None


def named_functions(node_type: str, node: dict[str, Any]) -> list[str]:
    """The functions a node calls or binds, lower case and unqualified: a call's (also in
    attribute notation, ``('x'::text).f`` being ``f('x')``), a trigger's, an operator's,
    aggregate's or type's (``FUNCTION = f``), a cast's or transform's."""
    names: list[Any] = [node.get("funcname", ())]  # FuncCall, CreateTrigStmt, CreateEventTrigStmt
    if node_type == "DefElem":
        names.append(node.get("arg", {}).get("TypeName", {}).get("names", ()))
    if node_type == "A_Indirection":
        names.extend([part] for part in node.get("indirection", ()) if "String" in part)
    for key in ("func", "fromsql", "tosql"):  # ObjectWithArgs: CREATE CAST, CREATE TRANSFORM
        if isinstance(node.get(key), dict):
            names.append(node[key].get("objname", ()))
    return [last_name(parts) for parts in names if parts]


def last_name(parts: list[Any]) -> str:
    """The last part of a qualified name (a list of ``String`` nodes), lower case."""
    return str(parts[-1].get("String", {}).get("sval", "")).lower()


def assignment_parts(query: str) -> tuple[str, ...]:
    """A PL/pgSQL assignment's target (with its subscripts) and value: the text either side
    of its ``:=`` or ``=``, the first outside the target's brackets."""
    depth = 0
    for token in parser.scan(query):
        if token.name == "ASCII_91":  # [
            depth += 1
        elif token.name == "ASCII_93":  # ]
            depth -= 1
        elif depth == 0 and token.name in ("COLON_EQUALS", "ASCII_61"):
            return query[: token.start], query[token.end + 1 :]
    return (query,)


def relname(node: dict[str, Any]) -> str:
    """The (unqualified, as parsed) name of the table a write statement targets."""
    return str(node.get("relation", {}).get("relname", ""))


def is_catalog(relation: dict[str, Any]) -> bool:
    """A system catalog or view: ``pg_*`` unqualified (pg_catalog comes first on any
    search_path) or in ``pg_catalog``."""
    schema = str(relation.get("schemaname", "")).lower()
    name = str(relation.get("relname", "")).lower()
    return schema == "pg_catalog" or (not schema and name.startswith("pg_"))


def reads_settings(node: dict[str, Any]) -> bool:
    return any(
        kind == "RangeVar" and str(fields.get("relname", "")).lower() == "pg_settings"
        for kind, fields in walk(node)
    )


def creates_table(node_type: str, node: dict[str, Any]) -> str | None:
    """``CREATE TABLE AS``, ``CREATE MATERIALIZED VIEW`` or ``SELECT INTO`` (on the leftmost
    arm of a set operation, where PostgreSQL takes it), named; else None."""
    if node_type == "CreateTableAsStmt":
        matview = node.get("objtype") == "OBJECT_MATVIEW"
        return "CREATE MATERIALIZED VIEW" if matview else "CREATE TABLE AS"
    arm: dict[str, Any] | None = node if node_type == "SelectStmt" else None
    while arm:
        if arm.get("intoClause"):
            return "SELECT INTO"
        arm = arm.get("larg")
    return None


def executed_string(node_type: str, node: dict[str, Any]) -> str | None:
    """The text of the expression a PL/pgSQL ``EXECUTE`` (``FOR ... IN EXECUTE``, ``OPEN ...
    FOR EXECUTE``, ``RETURN QUERY EXECUTE``) runs as SQL, or None for other statements."""
    key = _EXECUTED_QUERY.get(node_type)
    expr = node.get(key, {}).get("PLpgSQL_expr", {}) if key else {}
    return str(expr["query"]) if "query" in expr else None


_EXECUTED_QUERY = {
    "PLpgSQL_stmt_dynexecute": "query",
    "PLpgSQL_stmt_dynfors": "query",
    "PLpgSQL_stmt_open": "dynquery",
    "PLpgSQL_stmt_return_query": "dynquery",
}


def copy_server_side(node: dict[str, Any]) -> bool:
    return bool(node.get("is_program") or node.get("filename"))


def def_elems(items: Iterable[Any]) -> dict[str, Any]:
    """``DefElem`` options as a dict: name -> string value, list of strings, or None."""
    out: dict[str, Any] = {}
    for item in items:
        elem = item.get("DefElem") if isinstance(item, dict) else None
        if not elem:
            continue
        arg = elem.get("arg")
        value: Any = None
        if isinstance(arg, dict):
            if "String" in arg:
                value = arg["String"].get("sval", "")
            elif "List" in arg:
                value = [i.get("String", {}).get("sval", "") for i in arg["List"].get("items", ())]
                if len(value) == 1:
                    value = value[0]
        out[str(elem.get("defname", ""))] = value
    return out


def string_constant(node: Any) -> str | None:
    """The text of a string literal argument (also through a cast), else None."""
    if not isinstance(node, dict):
        return None
    if "TypeCast" in node:
        return string_constant(node["TypeCast"].get("arg"))
    const = node.get("A_Const")
    if const and "sval" in const:
        return str(const["sval"].get("sval", ""))
    return None
