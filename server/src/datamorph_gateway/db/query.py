"""Running a caller's SQL: one transaction, statement by statement, bounded in rows.

Each statement runs on its own, in the way that keeps its rows off the gateway
unless the answer needs them (``sqltext.Mode``): queries through a server-side
cursor, rows a cursor cannot carry (RETURNING, data-modifying WITH) under an
outer ``LIMIT``, a caller's FETCH capped. So no statement's result is ever
buffered whole, whatever it returns, and the rows an answer keeps are read in
bounded steps (``bounded``). Placeholders ``$1, $2, ...`` take JSON values that
psycopg2 quotes client-side (``params``); callers never build SQL strings.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from pglast import ast, parse_sql
from pglast.parser import DeparseError, ParseError
from pglast.stream import RawStream

from datamorph_gateway.db import sqltext
from datamorph_gateway.db.bounded import Limits, read_batch, read_bounded
from datamorph_gateway.db.decoding import ColumnType, TypeCatalog, decode_rows
from datamorph_gateway.db.params import bind_args
from datamorph_gateway.db.pool import Connection
from datamorph_gateway.db.sqltext import Mode, Script, Statement, fetch_text
from datamorph_gateway.errors import InvalidArgument
from datamorph_gateway.observability import tracing

_ROWS_VERBS = frozenset({"INSERT", "UPDATE", "DELETE", "MERGE", "COPY", "SELECT", "FETCH", "MOVE"})


@dataclass(frozen=True)
class Rows:
    """Rows already JSON-ready, with their result's column names, types and object keys."""

    names: list[str]
    columns: list[ColumnType]
    keys: list[str]
    rows: Sequence[Sequence[Any]]


@dataclass(frozen=True)
class QueryResult(Rows):
    """What the last statement produced."""

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


def run(
    conn: Connection,
    types: TypeCatalog,
    *,
    script: Script,
    params: Sequence[Any] | None,
    limits: Limits,
) -> QueryResult:
    """Run the statements one by one in the connection's open transaction; the caller commits.

    Only the last statement's result is returned, and only its first ``max_rows`` rows
    and about ``max_bytes`` (plus a row, to tell ``truncated``) ever reach the gateway;
    earlier statements run to completion on the server and send no rows at all.
    """
    args = bind_args(params)
    *earlier, last = script.statements
    with conn.cursor() as cur:
        for statement in earlier:
            # A FETCH's text is made from the tree, not bound: it is never formatted with
            # the values (a "%" in its cursor name must stay a "%").
            values = None if statement.mode is Mode.FETCH else args
            with tracing.db_span(statement.verb):  # the kind only: the text has literals
                cur.execute(_discarding(statement, args is not None), values)
    with tracing.db_span(last.verb):
        return _returning(conn, types, last, args, limits)


@dataclass(frozen=True)
class Batch(Rows):
    """One batch of a streamed result, with the result's columns."""


def stream(
    conn: Connection,
    types: TypeCatalog,
    *,
    statement: Statement,
    params: Sequence[Any] | None,
    batch: Limits,
) -> Iterator[Batch]:
    """A single query's rows through a server-side cursor, one bounded batch at a time.

    Memory stays bounded by one batch however large the result: a batch ends at
    ``batch.max_rows`` rows or about ``batch.max_bytes``, and each ``fetchmany`` on
    psycopg2's named cursor fetches just what it asks for.
    """
    args = bind_args(params)
    with conn.cursor(name="dmgw_stream") as cur:
        with tracing.db_span(statement.verb):
            cur.execute(statement.bound(args is not None), args)
        rows, left, ended = read_batch(cur.fetchmany, batch.max_rows, batch.max_bytes)
        description = cur.description or ()
        columns = types.describe(conn, [d.type_code for d in description])
        names = [d.name for d in description]
        keys = unique_keys(names)
        while True:
            yield Batch(names, columns, keys, decode_rows(columns, rows))
            if ended and not left:
                return
            fetch = _nothing if ended else cur.fetchmany
            rows, left, more_ended = read_batch(fetch, batch.max_rows, batch.max_bytes, left)
            ended = ended or more_ended
            if not rows:
                return


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
    limits: Limits,
) -> QueryResult:
    with_values = args is not None
    if statement.mode is Mode.CURSOR:
        with conn.cursor(name="dmgw_result") as cur:
            cur.execute(statement.bound(with_values), args)
            rows, truncated = read_bounded(cur.fetchmany, limits)
            return _result(conn, types, cur.description or (), rows, truncated, "SELECT", 0)
    if statement.mode is Mode.WRAPPED:
        return _returning_wrapped(conn, types, statement, args, limits)
    if statement.mode is Mode.FETCH and statement.node.get("direction") in _STEPPED:
        return _returning_fetch(conn, types, statement, limits)
    if statement.mode is Mode.FETCH:  # ABSOLUTE, RELATIVE, FIRST, LAST: one row at most
        return _run_plain(conn, types, fetch_text(statement, limit=1), None, limits)
    return _run_plain(conn, types, statement.bound(with_values), args, limits)


def _returning_wrapped(
    conn: Connection,
    types: TypeCatalog,
    statement: Statement,
    args: dict[str, Any] | None,
    limits: Limits,
) -> QueryResult:
    """Rows a cursor cannot carry, bounded on the server by count and by size.

    A data-modifying WITH runs to completion whatever the outer query reads: every row
    is written, and the window count says how many there were. The running sum of the
    rows' sizes (as text: what the values weigh once sent, compressed or not) stops the
    answer at ``max_bytes`` (the first row always comes, so that the count does).
    """
    outer = (
        'SELECT * FROM (SELECT r.*, count(*) OVER () AS "dmgw_n",'
        ' sum(octet_length(r::text)) OVER (ROWS UNBOUNDED PRECEDING) AS "dmgw_b",'
        f' row_number() OVER () AS "dmgw_i" FROM {_ROWS} r) w'
        f' WHERE "dmgw_i" = 1 OR "dmgw_b" <= {limits.max_bytes} LIMIT {limits.max_rows + 1}'
    )
    with conn.cursor() as cur:
        cur.execute(_wrapped(statement, args is not None, outer), args)
        rows = cur.fetchall()
        description = (cur.description or ())[:-3]
    total = int(rows[0][-3]) if rows else 0
    truncated = len(rows) > limits.max_rows or len(rows) < total
    rows = [row[:-3] for row in rows[: limits.max_rows]]
    verb = statement.verb
    affected = total if verb != "SELECT" else 0
    return _result(conn, types, description, rows, truncated, verb, affected)


_STEPPED = frozenset({"FETCH_FORWARD", "FETCH_BACKWARD"})


def _returning_fetch(
    conn: Connection, types: TypeCatalog, statement: Statement, limits: Limits
) -> QueryResult:
    """A caller's FETCH FORWARD/BACKWARD n, read in steps as a cursor of ours would be."""
    remaining = [int(statement.node.get("howMany", 0))]
    with conn.cursor() as cur:

        def fetch(count: int) -> list[tuple[Any, ...]]:
            step = min(count, remaining[0])
            if step <= 0:
                return []
            remaining[0] -= step
            cur.execute(fetch_text(statement, limit=step))
            return cur.fetchall()

        rows, truncated = read_bounded(fetch, limits)
        return _result(conn, types, cur.description or (), rows, truncated, "FETCH", 0)


def _nothing(count: int) -> list[tuple[Any, ...]]:
    return []


def _wrapped(statement: Statement, with_values: bool, outer: str) -> str:
    """The statement as the last CTE of a WITH whose outer query is ``outer``.

    A statement with a WITH of its own has it hoisted into ours: a data-modifying
    WITH is only allowed at the top level.
    """
    if not _has_own_with(statement):
        return f"WITH {_ROWS} AS (\n{statement.bound(with_values)}\n) {outer}"
    try:
        (raw,) = parse_sql(statement.text)
        node: Any = raw.stmt
        ctes, recursive = node.withClause.ctes, node.withClause.recursive
        node.withClause = None
        # The deparsed WITH list starts with RECURSIVE when the original did.
        head = RawStream()(ast.WithClause(ctes=ctes, recursive=recursive))
        text = f"WITH {head}, {_ROWS} AS (\n{RawStream()(node)}\n) {outer}"
        rebuilt = sqltext.parse(text).statements[0]
    except (
        ParseError,
        DeparseError,
        sqltext.SqlSyntaxError,
        ValueError,
        NotImplementedError,
    ) as exc:
        raise InvalidArgument.field(
            "query",
            "a statement with its own WITH whose rows must be bounded could not be "
            f"rewritten to bound them ({exc}); return its rows from a plain SELECT instead",
        ) from exc
    return rebuilt.bound(with_values)


def _has_own_with(statement: Statement) -> bool:
    return bool(statement.node.get("withClause"))


def _run_plain(
    conn: Connection, types: TypeCatalog, text: str, args: dict[str, Any] | None, limits: Limits
) -> QueryResult:
    with conn.cursor() as cur:
        cur.execute(text, args)
        tag = cur.statusmessage or ""
        verb = command_verb(tag)
        count = cur.rowcount if cur.rowcount >= 0 else 0
        if cur.description is None:
            affected = count if verb in _ROWS_VERBS else 0
            return QueryResult([], [], [], [], affected, verb, False)
        # SHOW, EXPLAIN, CALL: a few rows, already here (libpq reads a result whole).
        rows = cur.fetchmany(limits.max_rows + 1)
        truncated = len(rows) > limits.max_rows
        affected = 0 if verb in ("SELECT", "FETCH", "SHOW", "EXPLAIN") else count
        return _result(
            conn, types, cur.description, rows[: limits.max_rows], truncated, verb, affected
        )


def _result(
    conn: Connection,
    types: TypeCatalog,
    description: Sequence[Any],
    rows: list[tuple[Any, ...]],
    truncated: bool,
    verb: str,
    affected: int,
) -> QueryResult:
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
