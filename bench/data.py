"""The bench dataset, loaded once and reused while it is intact.

Row tables of 10^3, 2·10^4, 10^5 and 10^6 rows (10^7 on request) serve GetData and the
large ExecuteQuery; 50 small tables with primary and foreign keys serve GetSchemas.
A table is reused when ``bench_meta`` records it at the current dataset version and its
``count(*)`` still matches, so a second run spends no time loading, and a table that
was changed by hand is rebuilt rather than trusted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2
from psycopg2 import sql

from datamorph_gateway.pg.devdb import READER_ROLE, STATE_ROLE, WATCHDOG_ROLE, prepare_database
from datamorph_gateway.pg.server import SUPERUSER, EmbeddedPostgres

log = logging.getLogger("bench")

DATASET_VERSION = 1
BENCH_DBNAME = "datamorph_bench"
ROW_TABLES = {
    1_000: "bench_rows_1e3",
    20_000: "bench_rows_2e4",
    100_000: "bench_rows_1e5",
    1_000_000: "bench_rows_1e6",
    10_000_000: "bench_rows_1e7",
}
DEFAULT_SIZES = (1_000, 20_000, 100_000, 1_000_000)
SCHEMA_TABLES = tuple(f"bench_schema_{i:02d}" for i in range(50))

_META = """
CREATE TABLE IF NOT EXISTS bench_meta (
    name text PRIMARY KEY,
    version integer NOT NULL,
    row_count bigint NOT NULL
)
"""

# Seven columns of the types the gateway encodes most (int8, text, numeric, int4,
# timestamptz, bool), about 100 bytes a row: what a DataMorph source table looks like.
_ROWS_DDL = """
CREATE TABLE {table} (
    id bigint NOT NULL,
    customer text NOT NULL,
    amount numeric(12, 2) NOT NULL,
    quantity integer NOT NULL,
    created_at timestamptz NOT NULL,
    active boolean NOT NULL,
    note text
)
"""
_ROWS_FILL = """
INSERT INTO {table}
SELECT g, 'customer-' || mod(g, 5000), round((random() * 10000)::numeric, 2), mod(g, 97)::int,
       timestamptz '2024-01-01 00:00:00+00' + g * interval '1 second', mod(g, 3) = 0, md5(g::text)
  FROM generate_series(1, %s) AS g
"""

_SCHEMA_DDL = """
CREATE TABLE {table} (
    id serial PRIMARY KEY,
    parent_id integer {references},
    code varchar(40) NOT NULL,
    price numeric(10, 2),
    created_at timestamptz NOT NULL DEFAULT now(),
    tags text[],
    payload jsonb,
    active boolean NOT NULL DEFAULT true
)
"""


@dataclass
class BenchDatabase:
    """Where the bench's data lives: its DSN, and the embedded server when we started one."""

    dsn: str  # what the gateway and the baselines serve as
    embedded: EmbeddedPostgres | None
    admin_dsn: str = ""  # a superuser's, for compact_catalogs; empty: dsn
    # The settings that make the gateway use the roles it would use under make run.
    gateway_settings: dict[str, str] = field(default_factory=dict)

    def stop(self) -> None:
        if self.embedded is not None:
            self.embedded.stop()
            self.embedded = None


def open_database(data_dir: Path, database_url: str = "") -> BenchDatabase:
    """The bench database: `database_url` as given, else embedded PostgreSQL under `data_dir`."""
    if database_url:
        # The operator's database, as given: the bench measures speed, and the suite (not the
        # bench) holds the gateway to serving without privileges.
        return BenchDatabase(database_url, None, gateway_settings={"DB_ALLOW_PRIVILEGED": "true"})
    data_dir.mkdir(parents=True, exist_ok=True)
    pg = EmbeddedPostgres(data_dir / "postgres", port=0, password_file=data_dir / "pgpass")
    pg.start()
    try:
        # The roles make run serves as (datamorph_app), so the figures are the real path's.
        dsn = prepare_database(pg, BENCH_DBNAME)
        roles = {
            "DB_READONLY_USER": READER_ROLE,
            "DB_WATCHDOG_USER": WATCHDOG_ROLE,
            "DB_STATE_USER": STATE_ROLE,
        }
        return BenchDatabase(dsn, pg, pg.dsn_for(SUPERUSER, BENCH_DBNAME), roles)
    except BaseException:
        pg.stop()
        raise


def ensure_dataset(dsn: str, sizes: Iterable[int]) -> dict[str, float]:
    """Load whatever is missing or stale; seconds spent per loaded table (0.0 when reused)."""
    spent: dict[str, float] = {}
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(_META)
        for size in sorted(sizes):
            table = ROW_TABLES[size]
            spent[table] = _ensure(conn, table, size)
        spent["bench_schema_*"] = _ensure_schemas(conn)
    finally:
        conn.close()
    return spent


# The catalogs a CREATE TABLE writes to. StartWorkflow scenarios create and drop thousands of
# tables; without compaction every later catalog query (GetSchemas above all) reads their
# dead rows' pages, and the numbers drift from run to run.
_CATALOGS = (
    "pg_class", "pg_attribute", "pg_type", "pg_depend", "pg_index", "pg_constraint",
    "pg_attrdef", "pg_statistic", "pg_shdepend",
)  # fmt: skip


def compact_catalogs(dsn: str) -> bool:
    """VACUUM FULL the catalogs so each run starts from the same catalog size.

    Needs a superuser (the embedded server's); against a DATABASE_URL without one it
    says so and returns False, and GetSchemas numbers then depend on that database's past.
    """
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            for name in _CATALOGS:
                cur.execute(sql.SQL("VACUUM (FULL, ANALYZE) {}").format(sql.Identifier(name)))
    except psycopg2.Error as exc:
        log.warning("could not compact the system catalogs: %s", str(exc).strip())
        return False
    finally:
        conn.close()
    return True


def _intact(conn: psycopg2.extensions.connection, table: str, rows: int) -> bool:
    with conn.cursor() as cur:
        cur.execute("SELECT version, row_count FROM bench_meta WHERE name = %s", (table,))
        meta = cur.fetchone()
        if meta != (DATASET_VERSION, rows) or _missing(cur, table):
            return False
        cur.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))
        row = cur.fetchone()
        return row is not None and row[0] == rows


def _missing(cur: psycopg2.extensions.cursor, table: str) -> bool:
    cur.execute("SELECT to_regclass(%s) IS NULL", (table,))
    row = cur.fetchone()
    return bool(row and row[0])


def _record(conn: psycopg2.extensions.connection, table: str, rows: int) -> None:
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO bench_meta VALUES (%s, %s, %s) ON CONFLICT (name) DO UPDATE "
            "SET version = excluded.version, row_count = excluded.row_count",
            (table, DATASET_VERSION, rows),
        )


def _ensure(conn: psycopg2.extensions.connection, table: str, rows: int) -> float:
    if _intact(conn, table, rows):
        log.info("reusing %s (%d rows)", table, rows)
        return 0.0
    log.info("loading %s (%d rows)", table, rows)
    start = time.perf_counter()
    _load_rows(conn, table, rows)
    _record(conn, table, rows)
    return time.perf_counter() - start


def _load_rows(conn: psycopg2.extensions.connection, table: str, rows: int) -> None:
    ident = sql.Identifier(table)
    with conn.cursor() as cur:
        cur.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(ident))
        cur.execute(sql.SQL(_ROWS_DDL).format(table=ident))
        cur.execute(sql.SQL(_ROWS_FILL).format(table=ident), (rows,))
        cur.execute(sql.SQL("ALTER TABLE {} ADD PRIMARY KEY (id)").format(ident))
        # Hint bits and statistics now, so that no timed request pays for them.
        cur.execute(sql.SQL("VACUUM (ANALYZE) {}").format(ident))


def _ensure_schemas(conn: psycopg2.extensions.connection) -> float:
    count = len(SCHEMA_TABLES)
    if all(_intact(conn, t, 0) for t in SCHEMA_TABLES):
        log.info("reusing %d schema tables", count)
        return 0.0
    log.info("creating %d schema tables", count)
    start = time.perf_counter()
    with conn.cursor() as cur:
        for table in reversed(SCHEMA_TABLES):
            cur.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(sql.Identifier(table)))
        parent = sql.Identifier(SCHEMA_TABLES[0])
        for i, table in enumerate(SCHEMA_TABLES):
            references = sql.SQL("REFERENCES {} (id)").format(parent) if i else sql.SQL("")
            cur.execute(
                sql.SQL(_SCHEMA_DDL).format(table=sql.Identifier(table), references=references)
            )
    for table in SCHEMA_TABLES:
        _record(conn, table, 0)
    return time.perf_counter() - start
