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

Each relation's stamp covers (tests/db/test_schemas_fresh.py changes each one):

- its ``pg_class`` row (name, kind, schema) and its schema's ``pg_namespace`` row;
- each ``pg_attribute`` row, dropped ones included (name, type, typmod, NOT NULL);
- each column's ``pg_type`` row and its namespace, and for a domain its base type's
  (a renamed type, ``ALTER DOMAIN ... SET NOT NULL``);
- each ``pg_attrdef`` row, and each default's text as the session renders it;
- each primary and foreign key's ``pg_constraint`` row, and the names a foreign key shows
  of what it references (schema, table, columns), as they are now;
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

# The names resolved (``r``, in request order ``ord``; oid NULL for a name that means
# nothing) and each relation's stamp (``stamped``), set-based: each catalog is read once for
# all the relations (a subquery per relation costs its start-up fifty times over).
WITH_STAMPS = """
WITH r AS MATERIALIZED (
  SELECT i.ord, c.oid, n.nspname, c.relname, c.relkind, c.reltuples, c.relpages,
         c.cx, n.xmin AS nx
    FROM pg_catalog.unnest(%s::text[]) WITH ORDINALITY AS i(name, ord)
    -- A lookup by oid per name (OFFSET 0): joined, the planner reads all of pg_class.
    LEFT JOIN LATERAL (SELECT c.oid, c.relname, c.relkind, c.reltuples, c.relpages,
                              c.relnamespace, c.xmin AS cx
                         FROM pg_catalog.pg_class c
                        WHERE c.oid = pg_catalog.to_regclass(i.name) OFFSET 0) c ON true
    LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
), atts AS (
  SELECT a.attrelid, a.attnum, a.xmin AS ax, a.atttypid
    FROM pg_catalog.pg_attribute a
   WHERE a.attrelid IN (SELECT r.oid FROM r) AND a.attnum > 0
), types AS (
  -- Once per distinct type of the request, not once per column. Constants are typed so that
  -- every operator is an exact match in pg_catalog, never one planted earlier on the path.
  SELECT t.oid,
         pg_catalog.concat_ws('.', t.xmin, nt.xmin, bt.xmin, nbt.xmin,
                              pg_catalog.pg_type_is_visible(t.oid),
                              CASE WHEN t.typelem <> 0::pg_catalog.oid
                                   THEN pg_catalog.pg_type_is_visible(t.typelem) END,
                              CASE WHEN bt.oid IS NOT NULL
                                   THEN pg_catalog.pg_type_is_visible(bt.oid) END) AS s
    FROM (SELECT DISTINCT atts.atttypid FROM atts) u
    JOIN pg_catalog.pg_type t ON t.oid = u.atttypid
    JOIN pg_catalog.pg_namespace nt ON nt.oid = t.typnamespace
    LEFT JOIN pg_catalog.pg_type bt ON t.typtype = 'd' AND bt.oid = t.typbasetype
    LEFT JOIN pg_catalog.pg_namespace nbt ON nbt.oid = bt.typnamespace
), cols AS (
  SELECT atts.attrelid AS oid,
         pg_catalog.string_agg(pg_catalog.concat_ws('.', atts.attnum, atts.ax, types.s),
                               ',' ORDER BY atts.attnum) AS s
    FROM atts JOIN types ON types.oid = atts.atttypid
   GROUP BY atts.attrelid
), defaults AS (
  SELECT ad.adrelid AS oid,
         pg_catalog.string_agg(pg_catalog.concat_ws('.', ad.adnum, ad.xmin,
                                 pg_catalog.pg_get_expr(ad.adbin, ad.adrelid)),
                               ',' ORDER BY ad.adnum) AS s
    FROM pg_catalog.pg_attrdef ad
   WHERE ad.adrelid IN (SELECT r.oid FROM r)
   GROUP BY ad.adrelid
), keys AS (
  -- What the answer shows of a referenced table are names: those, not its rows' versions,
  -- so that a column added to a parent does not re-describe every child.
  SELECT con.conrelid AS oid,
         pg_catalog.string_agg(pg_catalog.concat_ws('.', con.oid, con.xmin,
           pg_catalog.quote_ident(fn.nspname), pg_catalog.quote_ident(fc.relname),
           (SELECT pg_catalog.string_agg(pg_catalog.quote_ident(fa.attname), '.'
                                         ORDER BY fa.attnum)
              FROM pg_catalog.pg_attribute fa
             WHERE fa.attrelid = con.confrelid AND fa.attnum = ANY (con.confkey))),
           ',' ORDER BY con.oid) AS s
    FROM pg_catalog.pg_constraint con
    LEFT JOIN pg_catalog.pg_class fc ON fc.oid = con.confrelid
    LEFT JOIN pg_catalog.pg_namespace fn ON fn.oid = fc.relnamespace
   WHERE con.conrelid IN (SELECT r.oid FROM r) AND con.contype IN ('p', 'f')
   GROUP BY con.conrelid
), stamped AS (
  SELECT r.ord, r.oid,
         pg_catalog.md5(pg_catalog.concat_ws(' ', r.cx, r.nx, cols.s, defaults.s, keys.s))
           AS stamp
    FROM r
    LEFT JOIN cols ON cols.oid = r.oid
    LEFT JOIN defaults ON defaults.oid = r.oid
    LEFT JOIN keys ON keys.oid = r.oid
)
"""

# The session's part of the key, as a column.
SESSION = """
  pg_catalog.concat_ws(' ', pg_catalog.current_database(), current_user,
                       pg_catalog.current_schemas(true)::text) AS session"""


@dataclass(frozen=True)
class Stamp:
    """Which relation, as seen by which session, and the version of what describes it."""

    key: tuple[str, int]  # (session: database, role, effective search path; relation oid)
    version: str  # MD5 of the row versions its description reads (``STAMP``)
