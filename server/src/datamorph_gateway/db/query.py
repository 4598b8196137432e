"""Running a caller's SQL: one transaction, statement by statement, bounded in rows.

Each statement runs on its own, in the way that keeps its rows off the gateway
unless the answer needs them (``sqltext.Mode``): queries through a server-side
cursor, rows a cursor cannot carry (RETURNING, data-modifying WITH) under an
outer ``LIMIT``, a caller's FETCH capped. So no statement's result is ever
buffered whole, whatever it returns. Placeholders ``$1, $2, ...`` take JSON
values that psycopg2 quotes client-side; callers never build SQL strings.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from pglast import ast, parse_sql
from pglast.stream import RawStream
from psycopg2.extras import Json

from datamorph_gateway.db import sqltext
from datamorph_gateway.db.encoding import ColumnType, TypeCatalog, decode_rows
from datamorph_gateway.db.pool import Connection
from datamorph_gateway.db.sqltext import Mode, Script, Statement, fetch_text, param_name

_ROWS_VERBS = frozenset({"INSERT", "UPDATE", "DELETE", "MERGE", "COPY", "SELECT", "FETCH", "MOVE"})
MAX_SAFE_INTEGER = 2**53 - 1


@dataclass(frozen=True)
class QueryResult:
    """What the last statement produced, rows already JSON-ready."""

    names: list[str]
    columns: list[ColumnType]
    keys: list[str]
    rows: Sequence[Sequence[Any]]
    rows_affected: int
    command: str
    truncated: bool


def unique_keys(names: Sequence[str]) -> list[str]:
    """Object keys for result columns: the names, duplicates suffixed _2, _3, ...

    A name the query used itself is never taken by a suffixed duplicate, so
    ``SELECT 1 AS a, 2 AS a, 3 AS a_2`` gives keys a, a_3, a_2.
    """
    taken = set(names)
    seen: set[str] = set()
    keys = []
    for name in names:
        key = name
        if name in seen:
            n = 2
            while f"{name}_{n}" in taken:
                n += 1
            key = f"{name}_{n}"
            taken.add(key)
        seen.add(name)
        keys.append(key)
    return keys


def to_param(value: Any) -> Any:
    """A JSON value as psycopg2 should send it.

    Integral numbers go as integers (JSON has one number type, and ``LIMIT 5.0``
    is an error); arrays of scalars as PostgreSQL arrays; objects, and arrays
    that hold objects, as json.
    """
    if isinstance(value, float) and value.is_integer() and abs(value) <= MAX_SAFE_INTEGER:
        return int(value)
    if isinstance(value, dict):
        return Json(value)
    if isinstance(value, list):
        if _has_object(value):
            return Json(value)
        return [to_param(v) for v in value]
    return value


def _has_object(values: list[Any]) -> bool:
    return any(isinstance(v, dict) or (isinstance(v, list) and _has_object(v)) for v in values)


def run(
    conn: Connection,
    types: TypeCatalog,
    *,
    script: Script,
    params: Sequence[Any] | None,
    max_rows: int,
) -> QueryResult:
    """Run the statements one by one in the connection's open transaction; the caller commits.

    Only the last statement's result is returned, and only its first ``max_rows`` rows
    (plus one, to tell ``truncated``) ever reach the gateway; earlier statements run to
    completion on the server and send no rows at all.
    """
    args = bind_args(params)
    *earlier, last = script.statements
    with conn.cursor() as cur:
        for statement in earlier:
            cur.execute(_discarding(statement, args is not None), args)
    return _returning(conn, types, last, args, max_rows)


@dataclass(frozen=True)
class Batch:
    """One batch of a streamed result, with the result's columns."""

    names: list[str]
    columns: list[ColumnType]
    keys: list[str]
    rows: Sequence[Sequence[Any]]


def stream(
    conn: Connection,
    types: TypeCatalog,
    *,
    statement: Statement,
    params: Sequence[Any] | None,
    batch_rows: int,
) -> Iterator[Batch]:
    """A single query's rows through a server-side cursor, ``batch_rows`` at a time.

    Memory stays bounded by one batch however large the result: each
    ``fetchmany`` on psycopg2's named cursor fetches just what it asks for.
    """
    args = bind_args(params)
    with conn.cursor(name="dmgw_stream") as cur:
        cur.execute(statement.bound(args is not None), args)
        rows = cur.fetchmany(batch_rows)
        description = cur.description or ()
        columns = types.describe(conn, [d.type_code for d in description])
        names = [d.name for d in description]
        keys = unique_keys(names)
        while True:
            yield Batch(names, columns, keys, decode_rows(columns, rows))
            if len(rows) < batch_rows:
                return
            rows = cur.fetchmany(batch_rows)
            if not rows:
                return


def bind_args(params: Sequence[Any] | None) -> dict[str, Any] | None:
    """psycopg2's arguments for the bound statements; None when no values are given."""
    if not params:
        return None
    return {param_name(i): to_param(v) for i, v in enumerate(params, 1)}


# Names the gateway gives its own cursors and wrappers inside a caller's transaction.
_SKIP_CURSOR = '"dmgw_skip"'
_ROWS = '"dmgw_rows"'


def _discarding(statement: Statement, with_values: bool) -> str:
    """The text that runs a statement whose rows nobody reads, without sending them."""
    if statement.mode is Mode.CURSOR:
        # MOVE runs the query to its end on the server and transfers nothing.
        text = statement.bound(with_values)
        return (
            f"DECLARE {_SKIP_CURSOR} NO SCROLL CURSOR FOR\n{text}\n;"
            f" MOVE FORWARD ALL IN {_SKIP_CURSOR}; CLOSE {_SKIP_CURSOR}"
        )
    if statement.mode is Mode.WRAPPED:
        return _wrapped(statement, with_values, f"SELECT count(*) FROM {_ROWS}")
    if statement.mode is Mode.FETCH:
        return fetch_text(statement, limit=None)
    return statement.bound(with_values)


def _returning(
    conn: Connection,
    types: TypeCatalog,
    statement: Statement,
    args: dict[str, Any] | None,
    max_rows: int,
) -> QueryResult:
    with_values = args is not None
    if statement.mode is Mode.CURSOR:
        with conn.cursor(name="dmgw_result") as cur:
            cur.execute(statement.bound(with_values), args)
            rows = cur.fetchmany(max_rows + 1)
            return _result(conn, types, cur.description or (), rows, max_rows, "SELECT", 0)
    if statement.mode is Mode.WRAPPED:
        # A data-modifying WITH runs to completion whatever the outer LIMIT: every row is
        # written, and the window count says how many there were.
        outer = f"SELECT *, count(*) OVER () FROM {_ROWS} LIMIT {max_rows + 1}"
        with conn.cursor() as cur:
            cur.execute(_wrapped(statement, with_values, outer), args)
            rows = cur.fetchall()
            description = (cur.description or ())[:-1]
        verb = statement.verb
        affected = int(rows[0][-1]) if rows and verb != "SELECT" else 0
        rows = [row[:-1] for row in rows]
        return _result(conn, types, description, rows, max_rows, verb, affected)
    text = statement.bound(with_values)
    if statement.mode is Mode.FETCH:
        text = fetch_text(statement, limit=max_rows + 1)
    return _run_plain(conn, types, text, args, max_rows)


def _wrapped(statement: Statement, with_values: bool, outer: str) -> str:
    """The statement as the last CTE of a WITH whose outer query is ``outer``.

    A statement with a WITH of its own has it hoisted into ours: a data-modifying
    WITH is only allowed at the top level.
    """
    if not _has_own_with(statement):
        return f"WITH {_ROWS} AS (\n{statement.bound(with_values)}\n) {outer}"
    (raw,) = parse_sql(statement.text)
    node: Any = raw.stmt
    ctes, recursive = node.withClause.ctes, node.withClause.recursive
    node.withClause = None
    head = RawStream()(ast.WithClause(ctes=ctes, recursive=recursive))
    text = f"WITH {'RECURSIVE ' if recursive else ''}{head}, {_ROWS} AS (\n{RawStream()(node)}\n)"
    rebuilt = sqltext.parse(f"{text} {outer}").statements[0]
    return rebuilt.bound(with_values)


def _has_own_with(statement: Statement) -> bool:
    return bool(statement.node.get("withClause"))


def _run_plain(
    conn: Connection, types: TypeCatalog, text: str, args: dict[str, Any] | None, max_rows: int
) -> QueryResult:
    with conn.cursor() as cur:
        cur.execute(text, args)
        tag = cur.statusmessage or ""
        verb = command_verb(tag)
        count = cur.rowcount if cur.rowcount >= 0 else 0
        if cur.description is None:
            affected = count if verb in _ROWS_VERBS else 0
            return QueryResult([], [], [], [], affected, verb, False)
        rows = cur.fetchmany(max_rows + 1)
        affected = 0 if verb in ("SELECT", "FETCH", "SHOW", "EXPLAIN") else count
        return _result(conn, types, cur.description, rows, max_rows, verb, affected)


def _result(
    conn: Connection,
    types: TypeCatalog,
    description: Sequence[Any],
    rows: list[tuple[Any, ...]],
    max_rows: int,
    verb: str,
    affected: int,
) -> QueryResult:
    truncated = len(rows) > max_rows
    if truncated:
        del rows[max_rows:]
    columns = types.describe(conn, [d.type_code for d in description])
    names = [d.name for d in description]
    rows_out = decode_rows(columns, rows)
    return QueryResult(names, columns, unique_keys(names), rows_out, affected, verb, truncated)


def command_verb(tag: str) -> str:
    """The command tag without its counts: "INSERT 0 3" -> "INSERT"."""
    words = tag.split()
    while words and words[-1].isdigit():
        words.pop()
    return " ".join(words)


def statement_timeout_ms(seconds: float) -> int:
    """PostgreSQL's statement_timeout for a duration; never 0, which means none."""
    return max(1, math.ceil(seconds * 1000))
