"""Running a caller's SQL: one transaction, bounded in rows and time.

A single SELECT/VALUES/TABLE/WITH statement runs through a server-side cursor,
so a huge result costs only the rows we return; anything else runs through a
client cursor (its rows, e.g. from INSERT ... RETURNING, are capped the same
way). Placeholders ``$1, $2, ...`` take JSON values that psycopg2 quotes
client-side; callers never build SQL strings.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg2
import psycopg2.errors
from psycopg2.extras import Json

from datamorph_gateway.db import sqltext
from datamorph_gateway.db.encoding import ColumnType, TypeCatalog, decode_rows
from datamorph_gateway.db.pool import Connection

_CURSOR_KEYWORDS = frozenset({"SELECT", "VALUES", "TABLE", "WITH"})
# SQLSTATEs with which DECLARE refuses a statement that runs fine on its own.
_NOT_A_CURSOR = frozenset({"0A000", "42601"})
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


class CursorRefused(Exception):
    """DECLARE refused a statement that plain execution accepts (e.g. SELECT INTO).

    The transaction is aborted: the caller rolls back and runs the query
    again with ``use_cursor=False``.
    """


def wants_cursor(scanned: sqltext.SqlText) -> bool:
    """Whether a server-side cursor can carry this query's rows."""
    return scanned.statements == 1 and scanned.first_keyword in _CURSOR_KEYWORDS


def run(
    conn: Connection,
    types: TypeCatalog,
    *,
    query: str,
    params: Sequence[Any] | None,
    max_rows: int,
    use_cursor: bool,
) -> QueryResult:
    """Run the query in the connection's open transaction; the caller commits."""
    text, args = _bind(query, params)
    if use_cursor:
        try:
            return _run_cursor(conn, types, text, args, max_rows)
        except psycopg2.Error as exc:
            if exc.pgcode in _NOT_A_CURSOR:
                raise CursorRefused from exc
            raise
    return _run_plain(conn, types, text, args, max_rows)


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
    query: str,
    params: Sequence[Any] | None,
    batch_rows: int,
) -> Iterator[Batch]:
    """A single query's rows through a server-side cursor, ``batch_rows`` at a time.

    Memory stays bounded by one batch however large the result: each
    ``fetchmany`` on psycopg2's named cursor fetches just what it asks for.
    """
    text, args = _bind(query, params)
    with conn.cursor(name="dmgw_stream") as cur:
        cur.execute(text, args)
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


def _bind(query: str, params: Sequence[Any] | None) -> tuple[str, dict[str, Any] | None]:
    """The text and arguments psycopg2 executes: $n rewritten only when values are given."""
    if not params:
        return query, None
    return sqltext.to_pyformat(query), {f"p{i}": to_param(v) for i, v in enumerate(params, 1)}


def _run_cursor(
    conn: Connection, types: TypeCatalog, text: str, args: dict[str, Any] | None, max_rows: int
) -> QueryResult:
    with conn.cursor(name="dmgw_result") as cur:
        cur.execute(text, args)
        rows = cur.fetchmany(max_rows + 1)
        description = cur.description or ()
        return _result(conn, types, description, rows, max_rows, "SELECT", 0)


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
