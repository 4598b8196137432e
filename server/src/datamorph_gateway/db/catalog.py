"""Resolving table names, and describing tables, in one catalog query each.

Describing resolves the names in the same query, so GetSchemas is one round
trip for any number of tables. Both queries are ``Prepared``: a connection
plans each once. Names are passed to ``to_regclass()`` as bind parameters, so PostgreSQL
applies its own rules (search_path, case folding, quoting) and no caller text
ever becomes SQL text. Descriptions read pg_catalog directly and compute each column's fields
with information_schema's own formulas (inlined: calling its helper
functions per column cost three quarters of the query), so a column looks
exactly as in ``information_schema.columns``, for any number of tables in
one round trip.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from psycopg2 import errors

from datamorph_gateway.db.budget import Budget
from datamorph_gateway.db.names import TableName, regclass_array
from datamorph_gateway.db.own_tables import SCHEMA as GATEWAY_SCHEMA
from datamorph_gateway.db.pool import Connection
from datamorph_gateway.db.prepared import Prepared
from datamorph_gateway.db.stamps import (
    DIGEST,
    EPOCH,
    EPOCH_SCHEMA,
    SESSION,
    WITH_STAMPS,
    RequestStamp,
    Stamp,
)
from datamorph_gateway.errors import NotFound, PermissionDenied, clip

log = logging.getLogger(__name__)

# Relation kinds that can be read like a table, and how we name them.
READABLE_KINDS = {
    "r": "table",
    "p": "partitioned_table",
    "v": "view",
    "m": "materialized_view",
    "f": "foreign_table",
}

# The relation a name resolves to, with what sampling needs to know of its size.
_RELATION = """
       c.oid, n.nspname, c.relname, c.relkind, c.reltuples::float8,
       (CASE WHEN c.relkind = 'p' THEN
              (SELECT coalesce(pg_catalog.sum(pg_catalog.pg_relation_size(t.relid)), 0)::int8
                 FROM pg_catalog.pg_partition_tree(c.oid) t WHERE t.isleaf)
            WHEN c.relkind IN ('r', 'm') THEN pg_catalog.pg_relation_size(c.oid)
            ELSE 0 END
         / current_setting('block_size')::int8)::int8 AS pages,
       c.relpages"""

_NAMES = """
  FROM pg_catalog.unnest(%s::text[]) WITH ORDINALITY AS i(name, ord)
  LEFT JOIN pg_catalog.pg_class c ON c.oid = pg_catalog.to_regclass(i.name)
  LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 ORDER BY i.ord
"""

_RESOLVE = Prepared("SELECT" + _RELATION + _NAMES, ("text[]",))


def is_system_schema(schema: str) -> bool:
    """Whether a schema holds catalogs, not data.

    PostgreSQL's own schemas all start with ``pg_`` (pg_catalog, pg_toast, pg_temp_N,
    pg_toast_temp_N; CREATE SCHEMA refuses the prefix to everyone else), then
    information_schema, the gateway's own schema of workflow logs and idempotency keys, and
    roles.sql's DDL counter.
    """
    return schema.startswith("pg_") or schema in (
        "information_schema",
        GATEWAY_SCHEMA,
        EPOCH_SCHEMA,
    )


@dataclass(frozen=True)
class Relation:
    """A resolved, readable relation."""

    oid: int
    schema: str
    name: str
    kind: str  # one of READABLE_KINDS' keys
    estimated_rows: float  # pg_class.reltuples; -1 when never analyzed
    pages: int  # its current size in blocks (all leaf partitions for 'p')
    analyzed_pages: int  # pg_class.relpages as of the last ANALYZE


def resolve(
    conn: Connection,
    names: Sequence[TableName],
    originals: Sequence[str],
    budget: Budget | None = None,
    *,
    allow_system: bool = False,
) -> list[Relation]:
    """Resolve every name, or raise NotFound naming each one that is missing.

    A name resolving into a system schema is PermissionDenied unless ``allow_system``:
    the query returns each relation's schema, so this costs no extra round trip.
    """
    with conn.cursor() as cur:
        _RESOLVE.execute(cur, (regclass_array(names),), budget)
        return _found(cur.fetchall(), originals, allow_system)


def _found(
    rows: Sequence[tuple[Any, ...]], originals: Sequence[str], allow_system: bool
) -> list[Relation]:
    """Relations from rows led by ``_RELATION``'s columns; refuses the system and the missing."""
    found: list[Relation] = []
    missing: list[str] = []
    system: list[str] = []
    for (oid, schema, relname, kind, tuples, pages, relpages, *_), original in zip(
        rows, originals, strict=True
    ):
        if oid is not None and not allow_system and is_system_schema(schema):
            system.append(f'"{clip(original)}" resolves to {schema}.{relname}')
        elif oid is None or kind not in READABLE_KINDS:
            missing.append(clip(original))
        else:
            found.append(Relation(oid, schema, relname, kind, tuples, int(pages), relpages))
    if system:
        raise PermissionDenied(
            f"table_names: {'; '.join(system)}: system catalogs and the gateway's own tables "
            "are not readable through the gateway",
            reason="SYSTEM_SCHEMA",
        )
    if missing:
        listed = ", ".join(f'"{m}"' for m in missing)
        noun = "table" if len(missing) == 1 else "tables"
        raise NotFound(
            f"table_names: no such {noun}: {listed}",
            reason="TABLE_NOT_FOUND",
            metadata={"tables": ",".join(missing)},
        )
    return found


class RelationCache:
    """Names resolved recently, so that GetData's steady state is one statement per table.

    An entry is never trusted for which relation a name means: whoever reads with
    it checks in the same statement that the name still resolves to the cached
    oid (``sampling.sample``'s guard) and resolves again when not. What may be
    stale is only the size it records, which picks the sampling method; entries
    expire after ``ttl_s`` so a table that grew is soon sampled by blocks.
    """

    def __init__(self, ttl_s: float, max_entries: int = 4096) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[float, Relation]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> Relation | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if time.monotonic() - entry[0] >= self.ttl_s:
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return entry[1]

    def put(self, key: str, relation: Relation) -> None:
        if self.ttl_s <= 0:
            return
        with self._lock:
            self._entries[key] = (time.monotonic(), relation)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def drop(self, key: str) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


# A relation's columns and keys, led by _RELATION's columns (and STAMP's, when stamped).
_DESCRIPTION = """,
  (SELECT coalesce(pg_catalog.json_agg(pg_catalog.json_build_object(
       'column_name', a.attname,
       'data_type', CASE WHEN t.typtype = 'd' THEN
                           CASE WHEN bt.typelem <> 0::pg_catalog.oid AND bt.typlen = -1 THEN 'ARRAY'
                                WHEN nbt.nspname = 'pg_catalog'
                                  THEN pg_catalog.format_type(t.typbasetype, NULL)
                                ELSE 'USER-DEFINED' END
                         ELSE
                           CASE WHEN t.typelem <> 0::pg_catalog.oid AND t.typlen = -1 THEN 'ARRAY'
                                WHEN nt.nspname = 'pg_catalog'
                                  THEN pg_catalog.format_type(a.atttypid, NULL)
                                ELSE 'USER-DEFINED' END
                    END,
       'is_nullable', CASE WHEN a.attnotnull OR (t.typtype = 'd' AND t.typnotnull)
                           THEN 'NO' ELSE 'YES' END,
       'column_default', pg_catalog.pg_get_expr(ad.adbin, ad.adrelid),
       'ordinal_position', a.attnum,
       'character_maximum_length', CASE WHEN tt.mod = -1 THEN NULL
                                        WHEN tt.id IN (1042, 1043) THEN tt.mod - 4
                                        WHEN tt.id IN (1560, 1562) THEN tt.mod END,
       'numeric_precision', CASE tt.id WHEN 21 THEN 16 WHEN 23 THEN 32 WHEN 20 THEN 64
                                       WHEN 700 THEN 24 WHEN 701 THEN 53
                                       WHEN 1700 THEN CASE WHEN tt.mod = -1 THEN NULL
                                                           ELSE ((tt.mod - 4) >> 16) & 65535 END
                            END,
       'numeric_scale', CASE WHEN tt.id IN (21, 23, 20) THEN 0
                             WHEN tt.id = 1700 AND tt.mod <> -1 THEN (tt.mod - 4) & 65535 END,
       'udt_name', coalesce(bt.typname, t.typname),
       'type', pg_catalog.format_type(a.atttypid, a.atttypmod)
     ) ORDER BY a.attnum), '[]'::json)
     FROM pg_catalog.pg_attribute a
     -- Types looked up by oid (OFFSET 0): joined, the planner hashed all of pg_type per
     -- relation, half of the statement's time.
     CROSS JOIN LATERAL (SELECT t.* FROM pg_catalog.pg_type t
                          WHERE t.oid = a.atttypid OFFSET 0) AS t
     JOIN pg_catalog.pg_namespace nt ON nt.oid = t.typnamespace
     LEFT JOIN LATERAL (SELECT bt.* FROM pg_catalog.pg_type bt
                         WHERE t.typtype = 'd' AND bt.oid = t.typbasetype OFFSET 0) AS bt ON true
     LEFT JOIN pg_catalog.pg_namespace nbt ON nbt.oid = bt.typnamespace
     LEFT JOIN pg_catalog.pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
     -- The type and typmod under a domain, as information_schema's _pg_truetypid/mod; the
     -- type as int8, so that comparing it with the numbers above meets an operator of
     -- pg_catalog exactly (oid = integer would take one a role planted on the search_path).
     CROSS JOIN LATERAL (SELECT (CASE WHEN t.typtype = 'd' THEN t.typbasetype
                                      ELSE a.atttypid END)::pg_catalog.int8,
                                CASE WHEN t.typtype = 'd' THEN t.typtypmod ELSE a.atttypmod END
                        ) AS tt(id, mod)
    WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped) AS columns,
  (SELECT coalesce(pg_catalog.json_agg(a.attname ORDER BY k.ord), '[]'::json)
     FROM pg_catalog.pg_constraint con
     CROSS JOIN LATERAL pg_catalog.unnest(con.conkey) WITH ORDINALITY AS k(attnum, ord)
     JOIN pg_catalog.pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum
    WHERE con.conrelid = c.oid AND con.contype = 'p') AS primary_keys,
  (SELECT coalesce(pg_catalog.json_agg(pg_catalog.json_build_object(
       'column_name', a.attname,
       'foreign_table_schema', fn.nspname,
       'foreign_table_name', fc.relname,
       'foreign_column_name', fa.attname,
       'constraint_name', con.conname
     ) ORDER BY con.conname, k.ord), '[]'::json)
     FROM pg_catalog.pg_constraint con
     CROSS JOIN LATERAL ROWS FROM (pg_catalog.unnest(con.conkey), pg_catalog.unnest(con.confkey))
          WITH ORDINALITY AS k(attnum, fattnum, ord)
     JOIN pg_catalog.pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum
     JOIN pg_catalog.pg_class fc ON fc.oid = con.confrelid
     JOIN pg_catalog.pg_namespace fn ON fn.oid = fc.relnamespace
     JOIN pg_catalog.pg_attribute fa ON fa.attrelid = con.confrelid AND fa.attnum = k.fattnum
    WHERE con.conrelid = c.oid AND con.contype = 'f') AS foreign_keys"""

_DESCRIBE = Prepared("SELECT" + _RELATION + _DESCRIPTION + _NAMES, ("text[]",))
# Stamped: the names resolved once (WITH_STAMPS' r), then described and stamped.
_STAMPED_NAMES = """
  FROM r JOIN stamped s ON s.ord = r.ord
  LEFT JOIN pg_catalog.pg_class c ON c.oid = r.oid
  LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 ORDER BY r.ord
"""
_DESCRIBE_STAMPED = Prepared(
    WITH_STAMPS + "SELECT" + _RELATION + ", s.stamp," + SESSION + _DESCRIPTION + _STAMPED_NAMES,
    ("text[]",),
)
# What the names mean now, and their stamps; _RELATION's columns but for the size
# (pg_relation_size costs a system call per table, and GetSchemas does not answer with it).
_STAMPS = Prepared(
    WITH_STAMPS
    + """SELECT r.oid, r.nspname, r.relname, r.relkind, r.reltuples::float8,
              r.relpages::int8, r.relpages, s.stamp,"""
    + SESSION
    + """
  FROM r JOIN stamped s ON s.ord = r.ord
 ORDER BY r.ord
""",
    ("text[]",),
)
# The whole request's digest: a warm GetSchemas' one statement without the DDL counter.
_CHECK = Prepared(WITH_STAMPS + "SELECT" + SESSION + "," + DIGEST, ("text[]",))
# The whole request's version from the DDL counter: a warm GetSchemas' one statement with it.
_COUNTED = Prepared("SELECT" + SESSION + "," + EPOCH, ("text[]",))


@dataclass(frozen=True)
class TableDescription:
    """A table's columns and keys, as plain JSON-ready values."""

    relation: Relation
    columns: list[dict[str, Any]]
    primary_keys: list[str]
    foreign_keys: list[dict[str, Any]]
    stamp: Stamp | None = None  # when described with ``stamped``: the snapshot it was read in


def describe(
    conn: Connection,
    names: Sequence[TableName],
    originals: Sequence[str],
    budget: Budget | None = None,
    *,
    allow_system: bool = False,
    stamped: bool = False,
) -> list[TableDescription]:
    """Resolve and describe every name in one round trip, in the order given.

    Raises NotFound naming each name that resolves to nothing readable, and
    PermissionDenied (unless ``allow_system``) for names resolving into a system schema.
    ``stamped`` also computes each description's ``Stamp`` in the same statement.
    """
    with conn.cursor() as cur:
        query = _DESCRIBE_STAMPED if stamped else _DESCRIBE
        query.execute(cur, (regclass_array(names),), budget)
        rows = cur.fetchall()
    relations = iter(_found(rows, originals, allow_system))
    # _found raised unless every row is a readable relation, so they pair up in order.
    described = []
    for row in rows:
        relation = next(relations)
        stamp = Stamp((row[8], relation.oid), row[7]) if stamped else None
        described.append(TableDescription(relation, row[-3], row[-2], row[-1], stamp))
    return described


def stamps(
    conn: Connection,
    names: Sequence[TableName],
    originals: Sequence[str],
    budget: Budget | None = None,
    *,
    allow_system: bool = False,
) -> list[Stamp]:
    """Resolve every name as ``describe`` does, and stamp what it means, in one round trip.

    Raises as ``describe`` does, so a cached answer is refused exactly as a fresh one.
    """
    with conn.cursor() as cur:
        _STAMPS.execute(cur, (regclass_array(names),), budget)
        rows = cur.fetchall()
    relations = _found(rows, originals, allow_system)
    return [
        Stamp((row[8], relation.oid), row[7]) for row, relation in zip(rows, relations, strict=True)
    ]


def check(
    conn: Connection,
    names: Sequence[TableName],
    originals: Sequence[str],
    budget: Budget | None = None,
) -> RequestStamp:
    """Resolve every name as ``describe`` does, and digest all that the answer reads.

    Refuses nothing: a name that means nothing, or something not readable, gives a digest
    no answer was kept under, and ``stamps`` then refuses it as ``describe`` would.
    """
    with conn.cursor() as cur:
        _CHECK.execute(cur, (regclass_array(names),), budget)
        row = cur.fetchone()
    assert row is not None  # an aggregate without GROUP BY: always one row
    return RequestStamp((row[0], tuple(originals)), row[1], digest=row[1])


def counted(
    conn: Connection,
    names: Sequence[TableName],
    originals: Sequence[str],
    budget: Budget | None = None,
) -> RequestStamp | None:
    """The request's version from roles.sql's DDL counter (db/stamps.py), or None where the
    counter's event trigger is missing or disabled.

    Refuses nothing, as ``check``; raises psycopg2's UndefinedTable, InvalidSchemaName or
    InsufficientPrivilege where the counter's table is gone or not readable.
    """
    with conn.cursor() as cur:
        _COUNTED.execute(cur, (regclass_array(names),), budget)
        row = cur.fetchone()
    assert row is not None  # no FROM: always one row
    session, epoch, oids = row
    if epoch is None:
        return None
    return RequestStamp((session, tuple(originals)), f"ddl {epoch} {oids}")


class DdlCounter:
    """GetSchemas' freshness check: roles.sql's DDL counter where the database has it
    (``counted``), else the catalog digest (``check``).

    Found missing (no event trigger, a disabled one, its table gone or unreadable), the
    counter is asked again only after ``retry_s``: meanwhile the digest alone is the check,
    one statement as without the counter. Each change of what was found is logged once.
    """

    def __init__(self, retry_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.retry_s = retry_s
        self._clock = clock
        self._retry_at = 0.0
        self._found: bool | None = None

    def check(
        self,
        conn: Connection,
        names: Sequence[TableName],
        originals: Sequence[str],
        budget: Budget | None = None,
    ) -> RequestStamp:
        if self._clock() < self._retry_at:
            return check(conn, names, originals, budget)
        try:
            request = counted(conn, names, originals, budget)
        except (errors.UndefinedTable, errors.InvalidSchemaName, errors.InsufficientPrivilege):
            request = None  # the counter's table, or a name's schema: the digest tells which
        if request is not None:
            self._seen(True)
            return request
        digest = check(conn, names, originals, budget)  # raises what the names raise
        self._retry_at = self._clock() + self.retry_s
        self._seen(False)
        return digest

    def _seen(self, found: bool) -> None:
        if found == self._found:
            return
        self._found = found
        if found:
            log.info("GetSchemas checks its cache with the database's DDL counter")
        else:
            log.info(
                "GetSchemas checks its cache with a catalog digest: this database has no "
                "enabled DDL counter (deploy/sql/roles.sql installs it when run as a superuser)"
            )
