"""Stamps: what a table's description was built from, so a cached one is known to be current.

GetSchemas answers from descriptions it has seen before only when the database says,
in the same call, that nothing they were built from has changed since. That check is one
prepared statement which resolves the names exactly as a describe does, on the caller's
own connection, and hashes the row versions (``xmin``) of every catalog row the
descriptions read, plus the few values that depend on the session rather than on those
rows. An UPDATE of a catalog row writes a new row version whose ``xmin`` is the transaction
that made it, and a dropped or added row changes the set, so any committed DDL that changes
the answer changes the hash, on every gateway process and replica alike: no message has to
reach them.

The check comes at two grains over the same rows. ``catalog.check`` gives one *digest* for
the whole request (``DIGEST``, a ``RequestStamp``): when the same names were answered under
that very digest, the kept answer is served as it is, and that is a warm call's only
statement. Otherwise ``catalog.stamps`` gives each relation its own *stamp* (``stamped``),
and only the relations without a description kept under their current stamp are described
again, by a describe that computes its own stamps in the same statement (so a description is
always kept under the stamp of the snapshot it was read in). No DDL can slip between a check
and the answer: an answer is kept under the digest of a snapshot no later than the one its
parts were checked in, so a change in between makes the next digest differ, never match.

Where ``roles.sql`` installed its DDL counter (an event trigger that adds one to a row of
``datamorph_ddl.epoch`` in every transaction that runs DDL in the database), the whole
request's version comes cheaper still (``EPOCH``, ``catalog.counted``): the counter, the row
versions of the event trigger and of its function (disabling, re-enabling or replacing them
is a new version, so DDL run while the trigger was off is never covered by a count from
before), and what each name resolves to now. The count is written by the DDL's own
transaction, so it changes exactly when the catalog does, on every process and replica, as
the digest does; and resolving the names on every call keeps what no DDL in this database
records (a role's membership granting or taking USAGE on a schema, a temporary table on the
session's path) working as with the digest. What the counter cannot see is documented in
docs/operations.md ("The schema cache"): DDL with event triggers off (single-user mode,
``event_triggers = off``) and catalogs written by hand. Without the counter, or with the
trigger disabled, the digest is the check.

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
``$user``, and three settings a role may set for itself: ``quote_all_identifiers``,
``standard_conforming_strings``, ``lc_monetary``), so the cache key is the database, the
role, the effective search path, those settings and the relation's oid (``Stamp.key``), or
the names as the caller wrote them (``RequestStamp.key``).
Statistics (``reltuples``, ``relpages``) change in place without a new row version, which
is why they are no part of GetSchemas' answer.
"""

from __future__ import annotations

from dataclasses import dataclass

# The names resolved (``r``, in request order ``ord``; oid NULL for a name that means
# nothing), one row per catalog row or value the stamps cover (``atts``, ``types``,
# ``defaults``, ``keys``), and each relation's stamp (``stamped``): set-based, each catalog is
# read once for all the relations (a subquery per relation costs its start-up fifty times
# over). ``DIGEST`` hashes the same rows for the whole request instead.
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
  SELECT a.attrelid, a.attnum, a.xmin AS ax, a.atttypid, a.attgenerated
    FROM pg_catalog.pg_attribute a
   WHERE a.attrelid IN (SELECT r.oid FROM r) AND a.attnum > 0
), types AS (
  -- Once per distinct type of the request, not once per column, each looked up by oid
  -- (OFFSET 0: joined, the planner hashed all of pg_type). Constants are typed so that
  -- every operator is an exact match in pg_catalog, never one planted earlier on the path.
  SELECT t.oid,
         pg_catalog.concat_ws('.', t.xmin, nt.xmin, bt.xmin, nbt.xmin,
                              pg_catalog.pg_type_is_visible(t.oid),
                              CASE WHEN t.typelem <> 0::pg_catalog.oid
                                   THEN pg_catalog.pg_type_is_visible(t.typelem) END,
                              CASE WHEN bt.oid IS NOT NULL
                                   THEN pg_catalog.pg_type_is_visible(bt.oid) END) AS s
    FROM (SELECT DISTINCT atts.atttypid FROM atts) u
    CROSS JOIN LATERAL (SELECT t.oid, t.xmin, t.typnamespace, t.typelem, t.typtype,
                               t.typbasetype
                          FROM pg_catalog.pg_type t WHERE t.oid = u.atttypid OFFSET 0) t
    JOIN pg_catalog.pg_namespace nt ON nt.oid = t.typnamespace
    LEFT JOIN LATERAL (SELECT bt.oid, bt.xmin, bt.typnamespace FROM pg_catalog.pg_type bt
                        WHERE t.typtype = 'd' AND bt.oid = t.typbasetype OFFSET 0) bt ON true
    LEFT JOIN pg_catalog.pg_namespace nbt ON nbt.oid = bt.typnamespace
), defaults AS (
  -- A default holds no column (only a generated column's expression does), so it is written
  -- without its relation (relid 0): with one, pg_get_expr opens and locks the relation, half
  -- of what writing a default costs. The text is the same, and so are its changes.
  SELECT ad.adrelid AS oid, ad.adnum,
         pg_catalog.concat_ws('.', ad.adnum, ad.xmin,
           pg_catalog.pg_get_expr(ad.adbin, CASE WHEN atts.attgenerated = ''
                                                 THEN 0::pg_catalog.oid ELSE ad.adrelid END))
           AS s
    FROM pg_catalog.pg_attrdef ad
    JOIN atts ON atts.attrelid = ad.adrelid AND atts.attnum = ad.adnum
), keys AS (
  -- What the answer shows of a referenced table are names: those, not its rows' versions,
  -- so that a column added to a parent does not re-describe every child. One row per
  -- referenced column, found by (relation, number) rather than by a subquery per key.
  SELECT con.conrelid AS oid, con.oid AS con, fa.attnum,
         pg_catalog.concat_ws('.', con.oid, con.xmin,
           pg_catalog.quote_ident(fn.nspname), pg_catalog.quote_ident(fc.relname),
           fa.attnum, pg_catalog.quote_ident(fa.attname)) AS s
    FROM pg_catalog.pg_constraint con
    LEFT JOIN pg_catalog.pg_class fc ON fc.oid = con.confrelid
    LEFT JOIN pg_catalog.pg_namespace fn ON fn.oid = fc.relnamespace
    LEFT JOIN pg_catalog.pg_attribute fa
           ON fa.attrelid = con.confrelid AND fa.attnum = ANY (con.confkey)
   WHERE con.conrelid IN (SELECT r.oid FROM r) AND con.contype IN ('p', 'f')
), cols AS (
  SELECT atts.attrelid AS oid,
         pg_catalog.string_agg(pg_catalog.concat_ws('.', atts.attnum, atts.ax, types.s),
                               ',' ORDER BY atts.attnum) AS s
    FROM atts JOIN types ON types.oid = atts.atttypid
   GROUP BY atts.attrelid
), stamped AS (
  SELECT r.ord, r.oid,
         pg_catalog.md5(pg_catalog.concat_ws(' ', r.cx, r.nx, cols.s, ds.s, ks.s)) AS stamp
    FROM r
    LEFT JOIN cols ON cols.oid = r.oid
    LEFT JOIN (SELECT d.oid, pg_catalog.string_agg(d.s, ',' ORDER BY d.adnum) AS s
                 FROM defaults d GROUP BY d.oid) ds ON ds.oid = r.oid
    LEFT JOIN (SELECT k.oid, pg_catalog.string_agg(k.s, ',' ORDER BY k.con, k.attnum) AS s
                 FROM keys k GROUP BY k.oid) ks ON ks.oid = r.oid
)
"""

# The whole request's stamp: every row ``stamped`` reads, for all the relations at once,
# with which relation each name means. No grouping, no sorting and one row out: about
# half the work of ``stamped``. Rows come in the plan's order, the same on every call
# until a catalog row changes (when the digest changes anyway); another order could only
# make a current answer look stale, never the reverse.
DIGEST = """
  pg_catalog.md5(pg_catalog.concat_ws(' ',
    (SELECT pg_catalog.string_agg(pg_catalog.concat_ws('.', r.ord, r.oid, r.cx, r.nx), ',')
       FROM r),
    -- Row versions alone: a column changes only by a new version of its row, and the
    -- types element holds the types those rows name.
    (SELECT pg_catalog.array_agg(atts.ax)::text FROM atts),
    (SELECT pg_catalog.string_agg(pg_catalog.concat_ws('.', types.oid, types.s), ',')
       FROM types),
    (SELECT pg_catalog.string_agg(pg_catalog.concat_ws('.', d.oid, d.s), ',') FROM defaults d),
    -- What ``keys`` reads, each name once: the keys' row versions (what each references is
    -- in its row), then the names of each distinct referenced (table, columns), which many
    -- foreign keys share. A column's number goes with its name, so that whatever order the
    -- plan gives them, two swapped names differ.
    (SELECT pg_catalog.array_agg(con.xmin)::text
       FROM pg_catalog.pg_constraint con
      WHERE con.conrelid IN (SELECT r.oid FROM r) AND con.contype IN ('p', 'f')),
    (SELECT pg_catalog.string_agg(pg_catalog.concat_ws('.', f.confrelid, f.confkey,
              pg_catalog.quote_ident(fn.nspname), pg_catalog.quote_ident(fc.relname),
              (SELECT pg_catalog.string_agg(
                        pg_catalog.concat_ws(':', fa.attnum, pg_catalog.quote_ident(fa.attname)),
                        '.')
                 FROM pg_catalog.pg_attribute fa
                WHERE fa.attrelid = f.confrelid AND fa.attnum = ANY (f.confkey))), ',')
       FROM (SELECT DISTINCT con.confrelid, con.confkey
               FROM pg_catalog.pg_constraint con
              WHERE con.conrelid IN (SELECT r.oid FROM r) AND con.contype = 'f') f
       JOIN pg_catalog.pg_class fc ON fc.oid = f.confrelid
       JOIN pg_catalog.pg_namespace fn ON fn.oid = fc.relnamespace)))
    AS digest"""

# The schema of roles.sql's DDL counter; GetData and GetSchemas refuse to read it, as the
# gateway's own tables.
EPOCH_SCHEMA = "datamorph_ddl"

# The request's version from roles.sql's DDL counter (see above): NULL (``epoch``) where the
# event trigger is missing or not enabled ALWAYS. Operators are named in pg_catalog, where a
# caller's SQL cannot plant a closer match.
EPOCH = """
  (SELECT pg_catalog.concat_ws('.', t.xmin, p.xmin,
            (SELECT pg_catalog.sum(e.n) FROM datamorph_ddl.epoch e))
     FROM pg_catalog.pg_event_trigger t
     JOIN pg_catalog.pg_proc p ON p.oid OPERATOR(pg_catalog.=) t.evtfoid
    WHERE t.evtname OPERATOR(pg_catalog.=) 'datamorph_ddl_epoch'::pg_catalog.name
      AND t.evtevent OPERATOR(pg_catalog.=) 'ddl_command_end'::pg_catalog.name
      AND t.evtenabled OPERATOR(pg_catalog.=) 'A'::pg_catalog."char") AS epoch,
  (SELECT pg_catalog.array_agg(pg_catalog.to_regclass(i.name)::pg_catalog.oid ORDER BY i.ord)
     FROM pg_catalog.unnest(%s::text[]) WITH ORDINALITY AS i(name, ord))::text AS oids"""

# The session's part of the key, as a column: with the settings that change how a default
# is written and that the gateway does not pin at connection start (decoding/startup.py),
# since a role may set its own (ALTER ROLE ... SET).
SESSION = """
  pg_catalog.concat_ws(' ', pg_catalog.current_database(), current_user,
                       pg_catalog.current_schemas(true)::text,
                       pg_catalog.current_setting('quote_all_identifiers'),
                       pg_catalog.current_setting('standard_conforming_strings'),
                       pg_catalog.current_setting('lc_monetary')) AS session"""


@dataclass(frozen=True)
class Stamp:
    """Which relation, as seen by which session, and the version of what describes it."""

    key: tuple[str, int]  # (session: database, role, effective search path; relation oid)
    version: str  # MD5 of the row versions its description reads (``stamped``)


@dataclass(frozen=True)
class RequestStamp:
    """Which names, as the caller wrote them and as which session resolves them, and the
    version of everything the answer for them reads (``EPOCH`` or ``DIGEST``)."""

    key: tuple[str, tuple[str, ...]]  # (session, as in Stamp.key; the names as written)
    version: str  # the DDL counter's version, or the digest (``DIGEST``)
    # The digest, once known: the version itself without the counter; with it, only when a
    # kept answer was found under an older count (``SchemaCache.answer``).
    digest: str | None = None
