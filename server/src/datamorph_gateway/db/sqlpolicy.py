"""What caller SQL may not do through the gateway, decided on the parse tree.

This is defence in depth, not the boundary. The boundary is the database role the
gateway serves as (no superuser, none of the file, program or signal roles): a
check on text can only refuse what it can see, and ``EXECUTE`` of a string built
at run time is out of its sight. What it does see, it refuses everywhere:

- transaction control (the gateway owns the transaction: one per request, committed
  or rolled back whole), in any statement of the text;
- ``COPY ... PROGRAM`` and ``COPY`` to or from a server file;
- ``SET``/``RESET``/``set_config()`` of the limits the gateway enforces and of the
  identity it runs as, ``RESET ALL``, ``SET ROLE``, ``SET SESSION AUTHORIZATION``, also
  inside ``ALTER ROLE/DATABASE/FUNCTION ... SET``;
- ``LISTEN``/``NOTIFY``/``UNLISTEN``, ``LOAD``, ``ALTER SYSTEM``;
- role and database administration: ``CREATE/ALTER/DROP ROLE`` (a role may change its
  own password), ``GRANT``/``REVOKE`` of roles, ``CREATE/ALTER/DROP DATABASE``,
  ``ALTER DEFAULT PRIVILEGES``;
- calls of the server's file, program, signal and large-object functions
  (``DENIED_FUNCTIONS``, extended by the ``SQL_DENIED_FUNCTIONS`` setting) by name,
  wherever the name appears: in the statement, in a ``DO`` block's PL/pgSQL, in a new
  function's body, and in string literals that a function such as ``query_to_xml``
  or a PL/pgSQL ``EXECUTE`` would run as SQL;
- ``DO`` blocks in read-only requests, and in languages other than PL/pgSQL.

docs/security.md lists the same, for operators.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from pglast import parser

from datamorph_gateway.db.sqltext import Script, walk

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
        "pg_file_write",
        "pg_file_rename",
        "pg_file_unlink",
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
_DENIED_PREFIXES = (
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
_INSPECTED_LANGUAGES = frozenset({"sql", "plpgsql"})

# Settings a caller may not change: the limits the gateway enforces and who it is.
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
    }
)

# Words that make a string literal worth parsing as SQL: it may be run as SQL by a
# function (query_to_xml, PL/pgSQL EXECUTE) and hide a statement refused here.
_SQL_WORDS = re.compile(
    r"\b(copy|set|reset|load|listen|notify|alter|begin|start|commit|end|rollback|abort|"
    r"savepoint|release|prepare|do|create|select)\b",
    re.IGNORECASE,
)
_MAX_DEPTH = 4
_CACHED_TEXT_CHARS = 8192


@dataclass(frozen=True)
class Refusal:
    """A statement the policy refuses: what it is (for the message) and which one."""

    kind: str
    statement: int
    """1-based position of the statement in the caller's text."""
    unsupported: bool = False
    """True when the gateway cannot run it at all (not a matter of permission)."""


class SqlPolicy:
    """The refusal list, with the functions the configuration adds."""

    def __init__(self, extra_denied_functions: Iterable[str] = ()) -> None:
        extra = {name.strip().lower() for name in extra_denied_functions if name.strip()}
        self.denied_functions = DENIED_FUNCTIONS | extra
        self._check_cached = lru_cache(maxsize=512)(self._check)
        names = "|".join(sorted(re.escape(n) for n in self.denied_functions))
        prefixes = "|".join(rf"{re.escape(p)}\w*" for p in _DENIED_PREFIXES)
        self._denied_text = re.compile(rf"\b({names}|{prefixes})\s*\(", re.IGNORECASE)
        # Inside code (a DO block, a function body) a literal that merely names a refused
        # function is refused too: EXECUTE format('SELECT %s(...)', 'pg_read_file').
        self._denied_name = re.compile(rf"\b({names}|{prefixes})\b", re.IGNORECASE)

    def check(self, script: Script, *, read_only: bool) -> Refusal | None:
        """The first refused statement of the script, or None.

        Remembered for short texts, like their parse: a Lambda sends the same few
        statements over and over.
        """
        if sum(len(statement.text) for statement in script.statements) <= _CACHED_TEXT_CHARS:
            return self._check_cached(script, read_only)
        return self._check(script, read_only)

    def _check(self, script: Script, read_only: bool) -> Refusal | None:
        for number, statement in enumerate(script.statements, 1):
            if statement.node_type == "ExecuteStmt":
                return Refusal("EXECUTE of a prepared statement", number, unsupported=True)
            if statement.node_type == "CopyStmt" and not _copy_server_side(statement.node):
                return Refusal("COPY to STDOUT or from STDIN", number, unsupported=True)
            tree = {statement.node_type: statement.node}
            for kind in self._refused(tree, read_only, 0, source=statement.text):
                return Refusal(kind, number)
        return None

    def _refused(
        self, tree: Any, read_only: bool, depth: int, source: str | None = None
    ) -> Iterator[str]:
        """Refused kinds found in a tree; ``source`` is its text, when it is one statement."""
        for node_type, node in walk(tree):
            if node_type == "CreateFunctionStmt":
                kind = self._function_body_kind(node, read_only, depth, source)
            else:
                kind = self._refused_node(node_type, node, read_only, depth)
            if kind:
                yield kind

    def _refused_node(
        self, node_type: str, node: dict[str, Any], read_only: bool, depth: int
    ) -> str | None:
        if node_type == "TransactionStmt":
            return _transaction_kind(node)
        if node_type == "CopyStmt" and _copy_server_side(node):
            if node.get("is_program"):
                return "COPY ... PROGRAM"
            return "COPY to or from a server file"
        if node_type == "VariableSetStmt":
            return _set_kind(node)
        if node_type in _REFUSED_STATEMENTS:
            return _REFUSED_STATEMENTS[node_type]
        if node_type in _WRITES and _is_catalog(node.get("relation", {})):
            # The system catalogs, and pg_settings, whose update rule calls set_config().
            return f"{_WRITES[node_type]} {_relname(node)}"
        if node_type == "RuleStmt" and any("SelectStmt" in a for a in node.get("actions", ())):
            # A DO INSTEAD SELECT rule makes an INSERT or UPDATE return rows without limit.
            return "CREATE RULE ... DO SELECT"
        if node_type in ("ViewStmt", "RuleStmt", "CreateTableAsStmt") and _reads_settings(node):
            return "a view or rule over pg_settings"
        if node_type == "CreatePLangStmt":
            return "CREATE LANGUAGE"
        if node_type == "FuncCall":
            return self._call_kind(node)
        if node_type == "String":
            name = str(node.get("sval", "")).lower()
            if name in self.denied_functions:  # a function named in CREATE CAST, ALTER ...
                return f"{name}()"
        if node_type == "A_Const" and "sval" in node:
            return self._literal_kind(str(node["sval"].get("sval", "")), read_only, depth)
        if node_type == "DoStmt":
            return self._do_kind(node, read_only, depth)
        return None

    def _denied_call(self, name: str) -> bool:
        return name in self.denied_functions or name.startswith(_DENIED_PREFIXES)

    def _call_kind(self, node: dict[str, Any]) -> str | None:
        names = [part.get("String", {}).get("sval", "") for part in node.get("funcname", ())]
        name = str(names[-1]).lower() if names else ""
        if self._denied_call(name):
            return f"{name}()"
        if name == "ts_rewrite" and len(node.get("args", ())) == 2:
            return "ts_rewrite() of a query given as a string"
        if name == "set_config":
            args = node.get("args", ())
            setting = _string_constant(args[0]) if args else None
            if setting is None:
                return "set_config() of a computed setting name"
            if setting.strip().lower() in PROTECTED_SETTINGS:
                return f"set_config() of {setting.strip().lower()}"
        return None

    def _literal_kind(self, text: str, read_only: bool, depth: int) -> str | None:
        """A string literal that names a refused function or parses as a refused statement."""
        found = (self._denied_name if depth else self._denied_text).search(text)
        if found:
            return f"{found.group(1).lower()}()"
        if depth < _MAX_DEPTH and _SQL_WORDS.search(text):
            try:
                tree = json.loads(parser.parse_sql_json(text))
            except parser.ParseError:
                return None
            for kind in self._refused(tree, read_only, depth + 1):
                return kind
        return None

    def _do_kind(self, node: dict[str, Any], read_only: bool, depth: int) -> str | None:
        if read_only:
            return "DO in a read-only request"
        options = _def_elems(node.get("args", ()))
        language = str(options.get("language", "plpgsql")).lower()
        if language != "plpgsql":
            return f"DO in language {language}, which the gateway cannot inspect"
        body = str(options.get("as", ""))
        return self._plpgsql_kind("DO " + _dollar_quote(body), read_only, depth)

    def _function_body_kind(
        self, node: dict[str, Any], read_only: bool, depth: int, source: str | None
    ) -> str | None:
        options = _def_elems(node.get("options", ()))
        language = str(options.get("language", "sql")).lower()
        body = options.get("as")
        if language not in _INSPECTED_LANGUAGES:
            # internal and C bind to any server symbol (be_lo_export, pg_read_file_all);
            # other languages cannot be read here.
            return f"a function in language {language}, which the gateway cannot inspect"
        if body is None or isinstance(body, list):
            return None  # a BEGIN ATOMIC body is part of the tree, walked already
        if language == "sql":
            return self._literal_kind(str(body), read_only, depth)
        if language == "plpgsql":
            # PL/pgSQL is parsed with its signature (RETURN depends on the result type):
            # the statement's own text when the caller wrote it, else a stand-in header.
            if source is None:
                header = "CREATE FUNCTION dmgw_check() RETURNS void LANGUAGE plpgsql AS "
                source = header + _dollar_quote(str(body))
            return self._plpgsql_kind(source, read_only, depth, str(body))
        return None

    def _plpgsql_kind(
        self, source: str, read_only: bool, depth: int, body: str | None = None
    ) -> str | None:
        """Every SQL expression and statement of a PL/pgSQL body, checked like the caller's."""
        if depth >= _MAX_DEPTH:
            return "PL/pgSQL nested too deeply to inspect"
        try:
            tree = json.loads(parser.parse_plpgsql_json(source))
        except parser.ParseError:
            # The server will refuse a body that does not compile; until it does, read
            # what can be read of it.
            found = self._denied_text.search(body if body is not None else source)
            return f"{found.group(1).lower()}()" if found else None
        for node_type, node in walk(tree):
            if node_type in _PLPGSQL_TRANSACTION:
                return f"{_PLPGSQL_TRANSACTION[node_type]} (transaction control)"
            if node_type == "PLpgSQL_condition" and str(node.get("condname", "")).lower() in (
                "query_canceled",
                "57014",
            ):
                # Catching the cancel would outlast every time limit.
                return "an EXCEPTION handler for query_canceled"
            if node_type != "PLpgSQL_expr":
                continue
            query = str(node.get("query", ""))
            kind = self._embedded_sql_kind(query, int(node.get("parseMode", 0)), read_only, depth)
            if kind:
                return kind
        return None

    def _embedded_sql_kind(
        self, query: str, parse_mode: int, read_only: bool, depth: int
    ) -> str | None:
        candidates = [query] if parse_mode == 0 else [f"SELECT {query}"]
        if parse_mode and ":=" in query:
            candidates.append("SELECT " + query.split(":=", 1)[1])
        for text in candidates:
            try:
                tree = json.loads(parser.parse_sql_json(text))
            except parser.ParseError:
                continue
            for kind in self._refused(tree, read_only, depth + 1):
                return kind
            return None
        found = self._denied_text.search(query)
        return f"{found.group(1).lower()}()" if found else None


_PLPGSQL_TRANSACTION = {"PLpgSQL_stmt_commit": "COMMIT", "PLpgSQL_stmt_rollback": "ROLLBACK"}

_WRITES = {
    "UpdateStmt": "UPDATE",
    "InsertStmt": "INSERT INTO",
    "DeleteStmt": "DELETE FROM",
    "MergeStmt": "MERGE INTO",
}

_REFUSED_STATEMENTS = {
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


def _transaction_kind(node: dict[str, Any]) -> str:
    kind = _TRANSACTION_KINDS.get(str(node.get("kind", "")), "transaction control")
    return f"{kind} (transaction control)"


def _set_kind(node: dict[str, Any]) -> str | None:
    kind = str(node.get("kind", ""))
    name = str(node.get("name", "")).lower()
    verb = "RESET" if kind.startswith("VAR_RESET") else "SET"
    if kind == "VAR_RESET_ALL":
        return "RESET ALL"
    if kind == "VAR_SET_MULTI":
        # SET TRANSACTION / SET SESSION CHARACTERISTICS AS TRANSACTION ...
        for option in _def_elems(node.get("args", ())):
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


def _relname(node: dict[str, Any]) -> str:
    """The (unqualified, as parsed) name of the table a write statement targets."""
    return str(node.get("relation", {}).get("relname", ""))


def _is_catalog(relation: dict[str, Any]) -> bool:
    """A system catalog or view: ``pg_*`` unqualified (pg_catalog comes first on any
    search_path) or in ``pg_catalog``."""
    schema = str(relation.get("schemaname", "")).lower()
    name = str(relation.get("relname", "")).lower()
    return schema == "pg_catalog" or (not schema and name.startswith("pg_"))


def _reads_settings(node: dict[str, Any]) -> bool:
    return any(
        kind == "RangeVar" and str(fields.get("relname", "")).lower() == "pg_settings"
        for kind, fields in walk(node)
    )


def _copy_server_side(node: dict[str, Any]) -> bool:
    return bool(node.get("is_program") or node.get("filename"))


def _def_elems(items: Iterable[Any]) -> dict[str, Any]:
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


def _string_constant(node: Any) -> str | None:
    """The text of a string literal argument (also through a cast), else None."""
    if not isinstance(node, dict):
        return None
    if "TypeCast" in node:
        return _string_constant(node["TypeCast"].get("arg"))
    const = node.get("A_Const")
    if const and "sval" in const:
        return str(const["sval"].get("sval", ""))
    return None


def _dollar_quote(body: str) -> str:
    tag = "dmgw"
    while f"${tag}$" in body:
        tag += "_"
    return f"${tag}${body}${tag}$"


# What a read-only principal may run: queries, SHOW and EXPLAIN of them.
_READING_STATEMENTS = frozenset({"SelectStmt", "VariableShowStmt", "ExplainStmt"})


def first_write(script: Script) -> str | None:
    """The first statement of ``script`` that writes (or may), named; None if all only read.

    Decided on the tree, for a principal allowed only ``ExecuteQuery:read``: a statement
    that is not a query, ``SELECT ... INTO``, ``FOR UPDATE/SHARE``, and a data-modifying
    ``WITH`` or ``EXPLAIN`` of a write. A function that writes is stopped by the database
    itself: such requests run in a read-only transaction (as the reader role when one is
    configured).
    """
    for statement in script.statements:
        if statement.node_type not in _READING_STATEMENTS:
            return statement.verb or " ".join(statement.text.split()[:2]).upper()
        if statement.node.get("intoClause"):
            return "SELECT INTO"
        for node_type, _node in walk({statement.node_type: statement.node}):
            if node_type in _WRITES:
                return _WRITES[node_type]
            if node_type == "LockingClause":
                return "SELECT ... FOR UPDATE/SHARE"
    return None
