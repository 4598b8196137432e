"""Random samples of rows whose cost does not grow with the table.

``ORDER BY random() LIMIT n`` (the Flask gateway's way) reads and sorts the
whole table. For a table larger than ``FULL_SCAN_MAX_PAGES`` blocks we first
take ``TABLESAMPLE SYSTEM (p)``, a random set of whole blocks sized to hold
``OVERSAMPLE`` times the rows asked for (and at least ``MIN_BLOCKS`` blocks, so
rows come from many places in the table), and shuffle only those. When the
planner's estimate was off and the blocks held too few rows, the percentage
grows fourfold and we try again, up to the whole table. Small tables, views
and foreign tables are sampled exactly with ``ORDER BY random()``, so a small
table always yields min(limit, rows) rows.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg2
from psycopg2 import errorcodes

from datamorph_gateway.db import catalog
from datamorph_gateway.db.budget import Budget, execute
from datamorph_gateway.db.catalog import Relation, RelationCache
from datamorph_gateway.db.names import TableName
from datamorph_gateway.db.pool import Connection

FULL_SCAN_MAX_PAGES = 32  # 256 KiB of 8 KiB blocks: sorting that is cheaper than sampling
MIN_BLOCKS = 8
OVERSAMPLE = 4
GROWTH = 4.0

_BLOCK_SAMPLABLE = ("r", "m", "p")


def sample_percent(relation: Relation, limit: int) -> float | None:
    """The TABLESAMPLE SYSTEM percentage to start with, or None to read everything."""
    if relation.kind not in _BLOCK_SAMPLABLE or relation.pages <= FULL_SCAN_MAX_PAGES:
        return None
    rows_per_page = 1.0
    if relation.estimated_rows > 0 and relation.analyzed_pages > 0:
        rows_per_page = max(relation.estimated_rows / relation.analyzed_pages, 1.0)
    blocks = max(MIN_BLOCKS, math.ceil(OVERSAMPLE * limit / rows_per_page))
    percent = 100.0 * blocks / relation.pages
    return None if percent >= 100.0 else percent


def sample(
    conn: Connection,
    relation: Relation,
    limit: int,
    budget: Budget | None = None,
    *,
    guard: str | None = None,
) -> tuple[list[Any], list[tuple[Any, ...]]]:
    """Up to ``limit`` random rows of the relation: (cursor.description, rows).

    With ``guard`` (the caller's name, as ``TableName.regclass_text()``), each
    statement also checks that this name and the relation's own name still
    resolve to ``relation.oid``, and yields no rows when they do not: rows
    read with a cached relation are then always the right table's.
    """
    table = TableName(relation.schema, relation.name).regclass_text()
    checks: tuple[Any, ...] = ()
    if guard is not None:
        checks = (guard, relation.oid, table, relation.oid)
    percent = sample_percent(relation, limit)
    with conn.cursor() as cur:
        while percent is not None:
            execute(
                cur, _sample_sql(table, True, guard is not None), (percent, *checks, limit), budget
            )
            rows = cur.fetchall()
            if len(rows) >= limit:
                return list(cur.description or ()), rows
            percent = percent * GROWTH if percent * GROWTH < 100.0 else None
        execute(cur, _sample_sql(table, False, guard is not None), (*checks, limit), budget)
        return list(cur.description or ()), cur.fetchall()


@functools.lru_cache(maxsize=4096)
def _sample_sql(table: str, by_blocks: bool, guarded: bool) -> str:
    """The sampling statement for ``table``, the quoted name read back from the catalog.

    Built once per table: composing it with psycopg2.sql on every call cost more than
    running it. ``TableName.regclass_text()`` quotes every part as an identifier, doubling
    any ``"``, exactly as ``psycopg2.sql.Identifier`` would; ``%`` is doubled because the
    text goes through psycopg2's parameter formatting.
    """
    source = table.replace("%", "%%")
    if by_blocks:
        source += " TABLESAMPLE SYSTEM (%s)"
    where = _GUARD if guarded else ""
    return f"SELECT * FROM {source}{where} ORDER BY pg_catalog.random() LIMIT %s"


# Constant conditions: PostgreSQL evaluates them once, before reading any row.
_GUARD = (
    " WHERE pg_catalog.to_regclass(%s) = %s::pg_catalog.oid::pg_catalog.regclass"
    " AND pg_catalog.to_regclass(%s) = %s::pg_catalog.oid::pg_catalog.regclass"
)

# Raised by the guarded statement when the cached relation's name is gone.
_NAME_GONE = (errorcodes.UNDEFINED_TABLE, errorcodes.INVALID_SCHEMA_NAME)


@dataclass(frozen=True)
class TableSample:
    relation: Relation
    description: list[Any]
    rows: list[tuple[Any, ...]]


def sample_tables(
    conn: Connection,
    names: Sequence[TableName],
    originals: Sequence[str],
    limit: int,
    budget: Budget | None = None,
    cache: RelationCache | None = None,
    *,
    allow_system: bool = False,
) -> list[TableSample]:
    """Sample every table, in order; NotFound names the names that resolve to nothing.

    Names resolving into a system schema are PermissionDenied before anything is sampled
    (unless ``allow_system``). Only relations that passed that check enter the cache, and a
    cached one is sampled only while the name still resolves to it (the guard).

    With a cache (on an autocommit connection, where a failed statement can be
    followed by another), names resolved before are not resolved again: each
    guarded sample checks its name itself, and only a sample that comes back
    empty or finds the name gone pays for resolving and sampling once more.
    """
    if cache is not None and not conn.autocommit:
        cache = None
    keys = [name.regclass_text() for name in names]
    relations = [cache.get(key) if cache is not None else None for key in keys]
    unknown = [i for i, relation in enumerate(relations) if relation is None]
    if unknown:
        found = catalog.resolve(
            conn,
            [names[i] for i in unknown],
            [originals[i] for i in unknown],
            budget,
            allow_system=allow_system,
        )
        for i, relation in zip(unknown, found, strict=True):
            relations[i] = relation
            if cache is not None:
                cache.put(keys[i], relation)
    samples = []
    for i, known in enumerate(relations):
        assert known is not None
        relation = known
        if cache is not None and i not in unknown:
            try:
                description, rows = sample(conn, relation, limit, budget, guard=keys[i])
            except psycopg2.Error as exc:
                if exc.pgcode not in _NAME_GONE:
                    raise
                rows = []
            if rows:
                samples.append(TableSample(relation, description, rows))
                continue
            # Empty, or no longer this name's table: find out the slow way.
            cache.drop(keys[i])
            [relation] = catalog.resolve(
                conn, [names[i]], [originals[i]], budget, allow_system=allow_system
            )
            cache.put(keys[i], relation)
        description, rows = sample(conn, relation, limit, budget)
        samples.append(TableSample(relation, description, rows))
    return samples
