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

import math
from typing import Any

from psycopg2 import sql

from datamorph_gateway.db.catalog import Relation
from datamorph_gateway.db.pool import Connection
from datamorph_gateway.db.statements import Budget, execute

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
    conn: Connection, relation: Relation, limit: int, budget: Budget | None = None
) -> tuple[list[Any], list[tuple[Any, ...]]]:
    """Up to ``limit`` random rows of the relation: (cursor.description, rows)."""
    table = sql.Identifier(relation.schema, relation.name)
    percent = sample_percent(relation, limit)
    with conn.cursor() as cur:
        while percent is not None:
            execute(
                cur,
                sql.SQL(
                    "SELECT * FROM {} TABLESAMPLE SYSTEM (%s) ORDER BY random() LIMIT %s"
                ).format(table),
                (percent, limit),
                budget,
            )
            rows = cur.fetchall()
            if len(rows) >= limit:
                return list(cur.description or ()), rows
            percent = percent * GROWTH if percent * GROWTH < 100.0 else None
        query = sql.SQL("SELECT * FROM {} ORDER BY random() LIMIT %s").format(table)
        execute(cur, query, (limit,), budget)
        return list(cur.description or ()), cur.fetchall()
