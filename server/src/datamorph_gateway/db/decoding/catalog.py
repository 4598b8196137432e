"""The type catalog: what each result column's type is called and how its values decode.

Built-in types come from static tables (``oids``), so most results need no query. Types
whose OIDs differ per database (enums, domains, composites, arrays of those, extension
types) are looked up once per OID in ``pg_type`` by ``TypeCatalog``: domains decode as
their base type, arrays by their element's rule and delimiter. (``db/catalog.py`` is
another matter: the tables and columns a caller asks about.)
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

import psycopg2.extensions as ext

from datamorph_gateway.db.decoding.arrays import Decoder, array_decoder
from datamorph_gateway.db.decoding.datetimes import (
    decode_timestamp,
    decode_timestamptz,
    decode_timetz,
)
from datamorph_gateway.db.decoding.json import decode_json
from datamorph_gateway.db.decoding.numbers import decode_bool, decode_float, decode_int, decode_int8
from datamorph_gateway.db.decoding.oids import ARRAY_ELEMENTS, BOX, SCALAR_NAMES
from datamorph_gateway.db.decoding.text import decode_bytea

__all__ = ["BUILTIN_TYPES", "SCALAR_RULES", "ColumnType", "Rule", "TypeCatalog"]


class Rule(Protocol):
    """Text output (None for NULL) to a JSON value; doubles as a psycopg2 caster."""

    def __call__(self, s: str | None, cur: Any = None, /) -> Any: ...


# Scalars whose text output is not already the JSON value; every other scalar is text.
SCALAR_RULES: Final[dict[int, Rule]] = {
    16: decode_bool, 17: decode_bytea, 20: decode_int8, 21: decode_int, 23: decode_int,
    26: decode_int, 114: decode_json, 700: decode_float, 701: decode_float,
    1114: decode_timestamp, 1184: decode_timestamptz, 1266: decode_timetz, 3802: decode_json,
}  # fmt: skip


def _builtin_rule(oid: int) -> Decoder | None:
    """The text → JSON rule of a built-in type; None when its text is the value."""
    elem = ARRAY_ELEMENTS.get(oid)
    if elem is None:
        return SCALAR_RULES.get(oid)
    return array_decoder(";" if elem == BOX else ",", _builtin_rule(elem))


_BUILTIN_RULES: Final[dict[int, Decoder | None]] = {
    oid: _builtin_rule(oid) for oid in (*SCALAR_NAMES, *ARRAY_ELEMENTS)
}


@dataclass(frozen=True, slots=True)
class ColumnType:
    """A result column's type: what clients are told and how its values are finished.

    ``decode`` is applied after fetching to non-NULL values psycopg2 left as text; None
    means the fetched value is already final.
    """

    oid: int
    name: str
    decode: Callable[[Any], Any] | None = None


# psycopg2's array parser cannot split box[] on ";": it is fetched as text, parsed after.
BUILTIN_TYPES: Final[dict[int, ColumnType]] = {
    **{oid: ColumnType(oid, name) for oid, name in SCALAR_NAMES.items()},
    **{
        oid: ColumnType(oid, "_" + SCALAR_NAMES[e], _BUILTIN_RULES[oid] if e == BOX else None)
        for oid, e in ARRAY_ELEMENTS.items()
    },
}

_CATALOG_QUERY: Final = """
WITH RECURSIVE wanted(oid) AS (
    SELECT pg_catalog.unnest(%s::pg_catalog.oid[])
  UNION
    SELECT CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.typelem END
    FROM wanted w JOIN pg_catalog.pg_type t ON t.oid = w.oid
    WHERE t.typtype = 'd' OR (t.typcategory = 'A' AND t.typelem <> 0::pg_catalog.oid)
)
SELECT t.oid::pg_catalog.int8, t.typname::pg_catalog.text, t.typtype::pg_catalog.text,
       t.typbasetype::pg_catalog.int8, t.typelem::pg_catalog.int8,
       t.typcategory::pg_catalog.text, t.typdelim::pg_catalog.text
FROM pg_catalog.pg_type t JOIN wanted w ON t.oid = w.oid
"""


@dataclass(frozen=True, slots=True)
class _PgType:
    name: str
    typtype: str
    basetype: int
    elem: int
    category: str
    delim: str


class TypeCatalog:
    """Result column types of one database, cached by OID; safe to share across threads.

    Built-in types come from a static table; other OIDs cost one catalog query per
    ``describe`` call that meets them, then never again. OIDs are never reused for a
    different type while it exists, so entries need no invalidation; the cache is
    emptied past ``max_entries`` (10,000 types by default) because temporary tables
    mint new row types forever.
    """

    def __init__(self, max_entries: int = 10_000) -> None:
        self._types: dict[int, ColumnType] = {}
        self._lock = threading.Lock()
        self._max_entries = max_entries

    def describe(self, conn: ext.connection, oids: Sequence[int]) -> list[ColumnType]:
        """The types of a result's columns, given ``cursor.description`` type codes.

        Assumes ``install()`` is in effect for the cursor that fetched the rows. An
        unknown OID runs one query on ``conn``, in its current transaction.
        """
        types = self._types  # replaced, never mutated: a stable snapshot
        try:
            return [BUILTIN_TYPES.get(oid) or types[oid] for oid in oids]
        except KeyError:
            pass
        loaded = self._load(conn, [o for o in oids if o not in BUILTIN_TYPES and o not in types])
        return [BUILTIN_TYPES.get(oid) or types.get(oid) or loaded[oid] for oid in oids]

    def clear(self) -> None:
        """Forget every cached type, e.g. after restoring a dump into the database."""
        with self._lock:
            self._types = {}

    def _load(self, conn: ext.connection, oids: list[int]) -> dict[int, ColumnType]:
        with conn.cursor(cursor_factory=ext.cursor) as cur:
            cur.execute(_CATALOG_QUERY, (sorted(set(oids)),))
            rows = cur.fetchall()
        catalog = {int(r[0]): _PgType(r[1], r[2], int(r[3]), int(r[4]), r[5], r[6]) for r in rows}
        loaded: dict[int, ColumnType] = {}
        for oid in oids:
            pg = catalog.get(oid)
            if pg is None:  # dropped meanwhile: describe it, do not cache it
                loaded[oid] = ColumnType(oid, str(oid))
                continue
            loaded[oid] = ColumnType(oid, pg.name, _rule(oid, catalog))
        with self._lock:
            if len(self._types) + len(loaded) > self._max_entries:
                self._types = {}
            new = dict(self._types)
            new.update((oid, t) for oid, t in loaded.items() if oid in catalog)
            self._types = new
        return loaded


def _rule(oid: int, catalog: dict[int, _PgType]) -> Decoder | None:
    """The text → JSON rule of any type: domains as their base, arrays by element."""
    if oid in _BUILTIN_RULES:
        return _BUILTIN_RULES[oid]
    pg = catalog.get(oid)
    if pg is None:
        return None
    if pg.typtype == "d":
        return _rule(pg.basetype, catalog)
    if pg.category == "A" and pg.elem:
        elem = catalog.get(pg.elem)
        delim = elem.delim if elem is not None else (";" if pg.elem == BOX else ",")
        return array_decoder(delim, _rule(pg.elem, catalog))
    return None
