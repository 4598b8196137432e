"""Stamps: what a table's description was built from, so a cached one is known to be current.

GetSchemas answers from descriptions it has seen before only when the database says,
in the same call, that nothing they were built from has changed since. That check is one
prepared statement (``catalog.stamps``) which resolves the names exactly as a describe
does, on the caller's own connection, and returns for each relation a *stamp*: an MD5
over the row versions (``xmin``) of every catalog row the description reads, plus the
few values that depend on the session rather than on those rows. An UPDATE of a catalog
row writes a new row version whose ``xmin`` is the transaction that made it, and a
dropped or added row changes the set, so any committed DDL that changes the answer
changes the stamp, on every gateway process and replica alike: no message has to reach
them, and no DDL can slip between a check and the answer, because the answer for a
relation whose stamp changed is rebuilt by a describe that computes its own stamp in the
same statement (so a cached description is always stored under the stamp of the snapshot
it was read in).

Each relation's stamp covers (tests/db/test_schema_stamps.py changes each one):

- its ``pg_class`` row (name, kind, schema) and its schema's ``pg_namespace`` row;
- each ``pg_attribute`` row, dropped ones included (name, type, typmod, NOT NULL);
- each column's ``pg_type`` row and its namespace, and for a domain its base type's
  (a renamed type, ``ALTER DOMAIN ... SET NOT NULL``);
- each ``pg_attrdef`` row, and each default's text as the session renders it;
- each ``pg_constraint`` row of the table (primary and foreign keys), with the referenced
  table's ``pg_class`` and ``pg_namespace`` rows and referenced ``pg_attribute`` rows;
- whether each column's type (and an array's element, a domain's base) is visible on
  the session's search_path, since ``format_type`` qualifies a type that is not: a type
  created earlier on the path can change the answer without touching any row above.

The rendering also depends on the session (the search_path, hence the role through
``$user``), so the cache key is the database, the role, the effective search path and the
relation's oid (``Stamp.key``). Statistics (``reltuples``, ``relpages``) change in
place without a new row version, which is why they are no part of GetSchemas' answer.
"""

from __future__ import annotations

from dataclasses import dataclass

# Per relation ``c`` (namespace ``n``): the MD5 of everything its description reads.
STAMP = """
  pg_catalog.md5(pg_catalog.concat_ws(' ', c.xmin, n.xmin,
    (SELECT pg_catalog.string_agg(pg_catalog.concat_ws('.', a.attnum, a.xmin, t.xmin, nt.xmin,
                                  bt.xmin, nbt.xmin, pg_catalog.pg_type_is_visible(t.oid),
                                  CASE WHEN t.typelem <> 0
                                       THEN pg_catalog.pg_type_is_visible(t.typelem) END,
                                  CASE WHEN bt.oid IS NOT NULL
                                       THEN pg_catalog.pg_type_is_visible(bt.oid) END),
                                  ',' ORDER BY a.attnum)
       FROM pg_catalog.pg_attribute a
       JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
       JOIN pg_catalog.pg_namespace nt ON nt.oid = t.typnamespace
       LEFT JOIN pg_catalog.pg_type bt ON t.typtype = 'd' AND bt.oid = t.typbasetype
       LEFT JOIN pg_catalog.pg_namespace nbt ON nbt.oid = bt.typnamespace
      WHERE a.attrelid = c.oid AND a.attnum > 0),
    (SELECT pg_catalog.string_agg(pg_catalog.concat_ws('.', ad.adnum, ad.xmin,
                                  pg_catalog.pg_get_expr(ad.adbin, ad.adrelid)),
                                  ',' ORDER BY ad.adnum)
       FROM pg_catalog.pg_attrdef ad WHERE ad.adrelid = c.oid),
    (SELECT pg_catalog.string_agg(pg_catalog.concat_ws('.', con.oid, con.xmin, fc.xmin, fn.xmin,
              (SELECT pg_catalog.string_agg(fa.xmin::text, '.' ORDER BY fa.attnum)
                 FROM pg_catalog.pg_attribute fa
                WHERE fa.attrelid = con.confrelid AND fa.attnum = ANY (con.confkey))),
              ',' ORDER BY con.oid)
       FROM pg_catalog.pg_constraint con
       LEFT JOIN pg_catalog.pg_class fc ON fc.oid = con.confrelid
       LEFT JOIN pg_catalog.pg_namespace fn ON fn.oid = fc.relnamespace
      WHERE con.conrelid = c.oid))) AS stamp,
  pg_catalog.concat_ws(' ', pg_catalog.current_database(), current_user,
                       pg_catalog.current_schemas(true)::text) AS session"""


@dataclass(frozen=True)
class Stamp:
    """Which relation, as seen by which session, and the version of what describes it."""

    key: tuple[str, int]  # (session: database, role, effective search path; relation oid)
    version: str  # MD5 of the row versions its description reads (``STAMP``)
