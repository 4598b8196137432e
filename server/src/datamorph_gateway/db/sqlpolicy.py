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
  wherever the name appears: in the statement, in a ``DO`` block's PL/pgSQL (every
  expression of it, an assignment target's subscripts too), in a new function's body,
  and in string literals that a PL/pgSQL ``EXECUTE`` or a ``LANGUAGE sql`` body would
  run as SQL; prefix-refused families also where an operator, cast or trigger binds them
  or attribute notation calls them (``('x'::text).f``); ``set_config`` and ``ts_rewrite``
  wherever they are bound (an aggregate's ``SFUNC``) rather than called;
- ``DO`` blocks in read-only requests, and in languages other than PL/pgSQL; PL/pgSQL
  that its parser cannot read (it lacks the catalogs), and handlers that catch the cancel;
- SQL sure to run that this parser cannot read (it is a newer PostgreSQL's, where
  ``system_user`` is reserved): a ``LANGUAGE sql`` body, a string constant PL/pgSQL
  ``EXECUTE``s;
- in read-only requests, ``CREATE TABLE AS`` and ``SELECT INTO``, which ``EXPLAIN ANALYZE``
  runs even in a read-only transaction.

The names and kinds themselves are in ``sqlrules``; docs/security.md lists the same,
for operators.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from pglast import parser

from datamorph_gateway.db.sqlrules import (
    ARGUMENT_CHECKED,
    CANCEL_CONDITIONS,
    DENIED_FUNCTIONS,
    DENIED_PREFIXES,
    INSPECTED_LANGUAGES,
    PLPGSQL_ASSIGN_MODES,
    PLPGSQL_TRANSACTION,
    PROTECTED_SETTINGS,
    REFUSED_STATEMENTS,
    WRITES,
    assignment_parts,
    copy_server_side,
    creates_table,
    def_elems,
    executed_string,
    is_catalog,
    last_name,
    named_functions,
    reads_settings,
    relname,
    set_kind,
    string_constant,
    transaction_kind,
)
from datamorph_gateway.db.sqltext import Script, SqlSyntaxError, Statement, parse, walk

# Words that make a string literal worth parsing as SQL: it may be run as SQL by a
# function (PL/pgSQL EXECUTE, a LANGUAGE sql body) and hide a statement refused here.
_SQL_WORDS = re.compile(
    r"\b(copy|set|reset|load|listen|unlisten|notify|alter|begin|start|commit|end|rollback|"
    r"abort|savepoint|release|prepare|do|create|drop|grant|revoke|select|values|insert|"
    r"delete|call|execute)\b",
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
        prefixes = "|".join(rf"{re.escape(p)}\w*" for p in DENIED_PREFIXES)
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
            if statement.node_type == "CopyStmt" and not copy_server_side(statement.node):
                return Refusal("COPY to STDOUT or from STDIN", number, unsupported=True)
            kind = self._statement_kind(statement, read_only, 0)
            if kind:
                return Refusal(kind, number)
        return None

    def _script_kind(self, script: Script, read_only: bool, depth: int) -> str | None:
        for statement in script.statements:
            kind = self._statement_kind(statement, read_only, depth)
            if kind:
                return kind
        return None

    def _statement_kind(self, statement: Statement, read_only: bool, depth: int) -> str | None:
        """The first refused part of one statement; code in it is parsed from its text."""
        for node_type, node in walk({statement.node_type: statement.node}):
            if node_type == "CreateFunctionStmt":
                kind = self._function_body_kind(node, read_only, depth, statement.text)
            elif node_type == "DoStmt":
                kind = self._do_kind(node, read_only, depth, statement.text)
            else:
                kind = self._refused_node(node_type, node, read_only, depth)
            if kind:
                return kind
        return None

    def _refused_node(
        self, node_type: str, node: dict[str, Any], read_only: bool, depth: int
    ) -> str | None:
        if node_type == "TransactionStmt":
            return transaction_kind(node)
        if node_type == "CopyStmt" and copy_server_side(node):
            if node.get("is_program"):
                return "COPY ... PROGRAM"
            return "COPY to or from a server file"
        if node_type == "VariableSetStmt":
            return set_kind(node)
        if node_type in REFUSED_STATEMENTS:
            return REFUSED_STATEMENTS[node_type]
        if node_type in WRITES and is_catalog(node.get("relation", {})):
            # The system catalogs, and pg_settings, whose update rule calls set_config().
            return f"{WRITES[node_type]} {relname(node)}"
        if node_type == "RuleStmt" and any("SelectStmt" in a for a in node.get("actions", ())):
            # A DO INSTEAD SELECT rule makes an INSERT or UPDATE return rows without limit.
            return "CREATE RULE ... DO SELECT"
        if node_type in ("ViewStmt", "RuleStmt", "CreateTableAsStmt") and reads_settings(node):
            return "a view or rule over pg_settings"
        if node_type == "CreatePLangStmt":
            return "CREATE LANGUAGE"
        creates = creates_table(node_type, node) if read_only else None
        if creates:
            # PostgreSQL's read-only transaction lets EXPLAIN ANALYZE create the table.
            return f"{creates} in a read-only request"
        for name in named_functions(node_type, node):
            if name in self.denied_functions or name.startswith(DENIED_PREFIXES):
                return f"{name}()"
            if name in ARGUMENT_CHECKED and node_type != "FuncCall":
                return f"{name}() bound as a function, where its arguments cannot be seen"
        if node_type == "FuncCall":
            return _call_kind(node)
        if node_type == "String":
            name = str(node.get("sval", "")).lower()
            if name in self.denied_functions:  # ALTER FUNCTION, GRANT ... ON FUNCTION ...
                return f"{name}()"
        if node_type == "A_Const" and "sval" in node:
            return self._literal_kind(str(node["sval"].get("sval", "")), read_only, depth)
        return None

    def _literal_kind(self, text: str, read_only: bool, depth: int) -> str | None:
        """A string literal that names a refused function or parses as a refused statement."""
        found = (self._denied_name if depth else self._denied_text).search(text)
        if found:
            return f"{found.group(1).lower()}()"
        if depth < _MAX_DEPTH and _SQL_WORDS.search(text):
            try:
                script = parse(text)
            except SqlSyntaxError:
                return None  # data, not SQL
            return self._script_kind(script, read_only, depth + 1)
        return None

    def _do_kind(
        self, node: dict[str, Any], read_only: bool, depth: int, source: str
    ) -> str | None:
        if read_only:
            return "DO in a read-only request"
        options = def_elems(node.get("args", ()))
        language = str(options.get("language", "plpgsql")).lower()
        if language != "plpgsql":
            return f"DO in language {language}, which the gateway cannot inspect"
        return self._plpgsql_kind(source, read_only, depth)

    def _function_body_kind(
        self, node: dict[str, Any], read_only: bool, depth: int, source: str
    ) -> str | None:
        options = def_elems(node.get("options", ()))
        language = str(options.get("language", "sql")).lower()
        body = options.get("as")
        if language not in INSPECTED_LANGUAGES:
            # internal and C bind to any server symbol (be_lo_export, pg_read_file_all);
            # other languages cannot be read here.
            return f"a function in language {language}, which the gateway cannot inspect"
        if body is None or isinstance(body, list):
            return None  # a BEGIN ATOMIC body is part of the tree, walked already
        if language == "sql":
            return _unparsed(str(body)) or self._literal_kind(str(body), read_only, depth)
        # PL/pgSQL is parsed with its signature: RETURN depends on the result type.
        return self._plpgsql_kind(source, read_only, depth)

    def _plpgsql_kind(self, source: str, read_only: bool, depth: int) -> str | None:
        """Every SQL expression and statement of a PL/pgSQL body, checked like the caller's."""
        if depth >= _MAX_DEPTH:
            return "PL/pgSQL nested too deeply to inspect"
        try:
            tree = json.loads(parser.parse_plpgsql_json(source))
        except parser.ParseError as exc:
            # Without the catalogs this parser cannot read all the server compiles (a field
            # of a %ROWTYPE variable as a target): code it cannot read is refused, as code
            # in other languages is.
            return _unreadable(str(exc.args[0]))
        except RecursionError:
            return _unreadable("nested too deeply")
        for node_type, node in walk(tree):
            if node_type in PLPGSQL_TRANSACTION:
                return f"{PLPGSQL_TRANSACTION[node_type]} (transaction control)"
            condition = str(node.get("condname", "")).lower()
            if node_type == "PLpgSQL_condition" and condition in CANCEL_CONDITIONS:
                # Catching the cancel would outlast every time limit.
                return "an EXCEPTION handler for query_canceled"
            executed = _constant_text(executed_string(node_type, node))
            unreadable = _unparsed(executed) if executed is not None else None
            if unreadable:
                return unreadable
            if node_type == "PLpgSQL_expr":
                query = str(node.get("query", ""))
                kind = self._embedded_sql_kind(
                    query, int(node.get("parseMode", 0)), read_only, depth
                )
                if kind:
                    return kind
        return None

    def _embedded_sql_kind(
        self, query: str, parse_mode: int, read_only: bool, depth: int
    ) -> str | None:
        """One statement or expression of PL/pgSQL, parsed as PL/pgSQL's own parser does."""
        if parse_mode == 0:
            texts: Iterable[str] = [query]
        elif parse_mode in PLPGSQL_ASSIGN_MODES:
            # x[pg_read_file('/etc/passwd')::int] := 1: the target's subscripts run too.
            texts = [f"SELECT {part}" for part in assignment_parts(query)]
        else:
            texts = [f"SELECT {query}"]
        for text in texts:
            try:
                script = parse(text)
            except SqlSyntaxError as exc:
                return _unreadable(exc.message)
            kind = self._script_kind(script, read_only, depth + 1)
            if kind:
                return kind
        return None


def _unreadable(message: str) -> str:
    return f"PL/pgSQL the gateway cannot parse ({message})"


def _unparsed(sql: str) -> str | None:
    """SQL sure to run that this parser cannot read; the server's older grammar may."""
    try:
        parse(sql)
    except SqlSyntaxError as exc:
        return f"SQL the gateway cannot parse ({exc.message})"
    return None


def _constant_text(expression: str | None) -> str | None:
    """The value of an expression that is one string constant; None if it is computed."""
    if expression is None:
        return None
    try:
        targets = parse(f"SELECT {expression}").statements[0].node.get("targetList", ())
    except SqlSyntaxError:
        return None  # refused as unreadable PL/pgSQL when its expression is checked
    return string_constant(targets[0].get("ResTarget", {}).get("val")) if targets else None


def _call_kind(node: dict[str, Any]) -> str | None:
    """A call refused for its arguments: SQL given as text, a protected setting."""
    name = last_name(node.get("funcname", ()))
    args = node.get("args", ())
    if name == "ts_rewrite" and len(args) == 2:
        return "ts_rewrite() of a query given as a string"
    if name == "set_config":
        setting = string_constant(args[0]) if args else None
        if setting is None:
            return "set_config() of a computed setting name"
        if setting.strip().lower() in PROTECTED_SETTINGS:
            return f"set_config() of {setting.strip().lower()}"
    return None


# What a read-only principal may run: queries, SHOW and EXPLAIN of them.
_READING_STATEMENTS = frozenset({"SelectStmt", "VariableShowStmt", "ExplainStmt"})


def first_write(script: Script) -> str | None:
    """The first statement of ``script`` that writes (or may), named; None if all only read.

    Decided on the tree, for a principal allowed only ``ExecuteQuery:read``: a statement
    that is not a query, ``SELECT ... INTO``, ``FOR UPDATE/SHARE``, and a data-modifying
    ``WITH`` or ``EXPLAIN`` of a write or of ``CREATE TABLE AS`` (a read-only transaction
    lets ``EXPLAIN ANALYZE`` create that table). A function that writes is stopped by the
    database itself: such requests run in a read-only transaction (as the reader role when
    one is configured).
    """
    for statement in script.statements:
        if statement.node_type not in _READING_STATEMENTS:
            return statement.verb or " ".join(statement.text.split()[:2]).upper()
        for node_type, node in walk({statement.node_type: statement.node}):
            creates = creates_table(node_type, node)
            if creates:
                return creates
            if node_type in WRITES:
                return WRITES[node_type]
            if node_type == "LockingClause":
                return "SELECT ... FOR UPDATE/SHARE"
    return None
