"""The pass after the fetch, for the few values psycopg2's casters could not finish.

Arrays of per-database types (of enums, domains, composites…) and box[] arrive from the
fetch as text; their ``ColumnType.decode`` parses them here. Most results have no such
column and skip this pass entirely.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from datamorph_gateway.db.decoding.catalog import ColumnType

__all__ = ["decode_rows"]


def decode_rows(
    types: Sequence[ColumnType], rows: Sequence[Sequence[Any]]
) -> Sequence[Sequence[Any]]:
    """Finish the values psycopg2 left as text.

    When no column needs it, ``rows`` itself comes back (fetched tuples, untouched);
    otherwise a new list of lists. Callers should only iterate and index the result.
    """
    work = [(i, t.decode) for i, t in enumerate(types) if t.decode is not None]
    if not work:
        return rows
    out: list[list[Any]] = []
    for row in rows:
        values = list(row)
        for i, decode in work:
            v = values[i]
            if v is not None:
                values[i] = decode(v)
        out.append(values)
    return out
