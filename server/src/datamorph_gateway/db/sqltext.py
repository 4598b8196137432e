"""Caller SQL as PostgreSQL's own parser sees it: statements, their kinds, placeholders.

The parser is libpg_query (PostgreSQL's grammar and scanner compiled as a library),
through pglast. It splits the text into statements exactly as the server will, tells
what each statement is (so the policy can refuse some and the executor can bound the
rows of every one), and locates each ``$n`` placeholder as a node of the tree, so a
``$1`` inside a literal, a comment or a function's own body is never taken for one.

psycopg2 binds values on the client: a placeholder is rewritten to ``%(pN)s`` at the
parser's offsets and psycopg2 quotes the value. The rewrite puts an empty ``/**/``
comment on both sides, which keeps the server's token boundaries whatever the value
looks like (``-$1`` with ``-5`` must not become a ``--`` comment; a string value must
not continue an adjacent literal across a newline: only ``--`` comments join those).
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from pglast import parser

__all__ = [
    "Mode",
    "Script",
    "SqlSyntaxError",
    "Statement",
    "first_word",
    "param_name",
    "parse",
    "walk",
]

# Texts up to this size are parsed once and remembered (the parse is ~25 µs a statement).
_CACHED_TEXT_BYTES = 8192
_FETCH_ALL = parser.LONG_MAX


class SqlSyntaxError(ValueError):
    """Text the parser rejects; ``position`` is 1-based in characters, as PostgreSQL says."""

    def __init__(self, message: str, position: int | None) -> None:
        super().__init__(message)
        self.message = message
        self.position = position


class Mode(enum.Enum):
    """How a statement's rows reach the gateway without ever being buffered whole."""

    CURSOR = "cursor"
    """A query a server-side cursor can carry: rows are fetched only as far as needed."""
    WRAPPED = "wrapped"
    """Rows a cursor cannot carry (RETURNING, data-modifying WITH): the statement runs in a
    WITH whose outer SELECT returns at most the rows needed plus the total count."""
    FETCH = "fetch"
    """FETCH from a cursor the caller declared: its count is capped."""
    PLAIN = "plain"
    """Everything else: no rows, or a bounded handful (SHOW, EXPLAIN, CALL)."""


@dataclass(frozen=True)
class Statement:
    """One statement of the caller's text."""

    text: str
    """The statement alone, without its ``;``."""
    node_type: str
    """The parser's node name, e.g. ``SelectStmt``."""
    node: dict[str, Any] = field(repr=False, compare=False)
    """The statement's parse tree (libpg_query's JSON form)."""
    mode: Mode
    params: tuple[tuple[int, int, int], ...]
    """``(start, end, number)`` of each placeholder, UTF-8 byte offsets into ``text``."""

    @property
    def verb(self) -> str:
        """The command tag this statement will answer with, as far as the tree tells."""
        return _VERBS.get(self.node_type, "")

    def bound(self, with_values: bool) -> str:
        """The text psycopg2 executes: placeholders rewritten only when values are given.

        psycopg2 turns ``%%`` back into ``%`` only when it interpolates, so without
        values the text must go as it is.
        """
        if not with_values:
            return self.text
        return _to_pyformat(self.text, self.params)


@dataclass(frozen=True)
class Script:
    """A caller's whole SQL text."""

    statements: tuple[Statement, ...]
    placeholders: frozenset[int]
    """Every ``$n`` used outside function bodies and PREPAREd statements."""

    @property
    def max_placeholder(self) -> int:
        return max(self.placeholders, default=0)

    @property
    def single_query(self) -> bool:
        """Exactly one statement, and a server-side cursor can carry its rows."""
        return len(self.statements) == 1 and self.statements[0].mode is Mode.CURSOR


def param_name(number: int) -> str:
    """Key under which a bound statement expects the value of ``$number``."""
    return f"p{number}"


def parse(sql: str) -> Script:
    """Parse the text; raises SqlSyntaxError where PostgreSQL would answer 42601."""
    if len(sql) <= _CACHED_TEXT_BYTES:
        return _parse_cached(sql)
    return _parse(sql)


def first_word(sql: str) -> str:
    """The first token of the text, upper case, as the scanner sees it ("" if none)."""
    try:
        tokens = parser.scan(sql)
    except parser.ParseError:
        return ""
    if not tokens:
        return ""
    return sql[tokens[0].start : tokens[0].end + 1].upper()


@lru_cache(maxsize=512)
def _parse_cached(sql: str) -> Script:
    return _parse(sql)


def _parse(sql: str) -> Script:
    if "\x00" in sql:
        # libpq stops reading at a NUL, so the server would run a silently shortened query.
        raise SqlSyntaxError("query text contains a NUL character", None)
    try:
        tree = json.loads(parser.parse_sql_json(sql))
    except parser.ParseError as exc:
        location = exc.args[1] if len(exc.args) > 1 else None  # 0-based, in characters
        position = location + 1 if isinstance(location, int) else None
        raise SqlSyntaxError(str(exc.args[0]), position) from None
    except RecursionError:
        # Python's JSON reader stops short of the parser's depth (some 450 chained "||").
        raise SqlSyntaxError("statement nested too deeply for the gateway to read", None) from None
    data = sql.encode("utf-8")
    statements = []
    numbers: set[int] = set()
    for raw in tree.get("stmts", ()):
        start = raw.get("stmt_location", 0)
        length = raw.get("stmt_len", 0)
        end = start + length if length else len(data)
        ((node_type, node),) = raw["stmt"].items()
        params = tuple(
            (location - start, _param_end(data, location) - start, number)
            for number, location in _params(node_type, node, data)
        )
        numbers.update(number for _, _, number in params)
        text = data[start:end].decode("utf-8")
        statements.append(Statement(text, node_type, node, _mode(node_type, node), params))
    return Script(tuple(statements), frozenset(numbers))


# Fields that hold one node of a fixed type, which the JSON form gives without its name.
_TYPED_FIELDS = {"setstmt": "VariableSetStmt"}


def walk(tree: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every node under ``tree`` (JSON form) as ``(node_type, fields)``, in no fixed order.

    Fields typed as one kind of node carry no node name in the JSON form; those the
    gateway's checks need are named through ``_TYPED_FIELDS``.
    """
    stack = [tree]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                if isinstance(value, dict):
                    if key[0].isupper():
                        yield key, value
                    elif key in _TYPED_FIELDS:
                        yield _TYPED_FIELDS[key], value
                    stack.append(value)
                elif isinstance(value, list):
                    stack.append(value)
        elif isinstance(item, list):
            stack.extend(item)


# Subtrees whose $n belong to something else: a function's own parameters, a
# PREPAREd statement's parameters.
_OWN_PARAMS = {"CreateFunctionStmt": "sql_body", "PrepareStmt": "query"}


def _params(node_type: str, node: dict[str, Any], data: bytes) -> list[tuple[int, int]]:
    """``(number, byte offset)`` of each placeholder of the statement."""
    found = []
    stack: list[Any] = [{node_type: node}]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                if key == "ParamRef":
                    location = value.get("location", -1)
                    number = value.get("number", 0)
                    # "$1" in the text, not a positional reference made up by the grammar.
                    if location >= 0 and data[location : location + 1] == b"$":
                        found.append((number, location))
                    continue
                if key in _OWN_PARAMS and isinstance(value, dict):
                    value = {k: v for k, v in value.items() if k != _OWN_PARAMS[key]}
                if isinstance(value, (dict, list)):
                    stack.append(value)
        elif isinstance(item, list):
            stack.extend(item)
    return found


def _param_end(data: bytes, location: int) -> int:
    """End of the ``$digits`` token at ``location`` ("$01" is $1 too)."""
    end = location + 1
    while end < len(data) and 48 <= data[end] <= 57:
        end += 1
    return end


def _mode(node_type: str, node: dict[str, Any]) -> Mode:
    if node_type == "SelectStmt":
        if "intoClause" in node:
            return Mode.PLAIN  # SELECT INTO makes a table and returns nothing
        return Mode.WRAPPED if _modifies_in_with(node) else Mode.CURSOR
    if node_type in ("InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt"):
        returning = node.get("returningClause") or node.get("returningList")
        return Mode.WRAPPED if returning else Mode.PLAIN
    if node_type == "FetchStmt" and not node.get("ismove"):
        return Mode.FETCH
    return Mode.PLAIN


def _modifies_in_with(node: dict[str, Any]) -> bool:
    """A data-modifying statement in the WITH of this SELECT (or of a set operation's arms)."""
    for key in ("larg", "rarg"):
        if key in node and _modifies_in_with(node[key]):
            return True
    ctes = node.get("withClause", {}).get("ctes", ())
    for cte in ctes:
        query = cte.get("CommonTableExpr", {}).get("ctequery", {})
        (kind,) = query.keys() or ("",)
        if kind != "SelectStmt" or _modifies_in_with(query[kind]):
            return True
    return False


def _to_pyformat(text: str, params: tuple[tuple[int, int, int], ...]) -> str:
    data = text.encode("utf-8")
    out: list[str] = []
    last = 0
    for start, end, number in sorted(params):
        out.append(data[last:start].decode("utf-8").replace("%", "%%"))
        out.append(f"/**/%({param_name(number)})s/**/")
        last = end
    out.append(data[last:].decode("utf-8").replace("%", "%%"))
    return "".join(out)


def fetch_text(statement: Statement, *, limit: int | None) -> str:
    """A FETCH capped at ``limit`` rows, or (``limit`` None) the MOVE that skips the same rows."""
    node = statement.node
    direction = node.get("direction", "FETCH_FORWARD").removeprefix("FETCH_")
    count = int(node.get("howMany", 0))
    portal = '"' + str(node.get("portalname", "")).replace('"', '""') + '"'
    if direction in ("FORWARD", "BACKWARD"):
        if limit is not None:
            count = min(count, limit)
        amount = "ALL" if count >= _FETCH_ALL else str(count)
    else:
        amount = str(count)
    verb = "FETCH" if limit is not None else "MOVE"
    return f"{verb} {direction} {amount} FROM {portal}"


_VERBS = {
    "SelectStmt": "SELECT",
    "InsertStmt": "INSERT",
    "UpdateStmt": "UPDATE",
    "DeleteStmt": "DELETE",
    "MergeStmt": "MERGE",
    "FetchStmt": "FETCH",
}
