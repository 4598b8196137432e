"""The database a fresh clone runs on: embedded PostgreSQL with a seeded `datamorph` database.

Used when nothing is configured, by ``python -m datamorph_gateway`` and by the launcher
behind ``make run`` (which starts it once and hands its DSN to the gateway it runs).
"""

from __future__ import annotations

import logging
from pathlib import Path

import psycopg2
from psycopg2 import sql
from psycopg2.extensions import make_dsn, parse_dsn

from datamorph_gateway.config import Settings
from datamorph_gateway.demo import seed_demo
from datamorph_gateway.embedded import EmbeddedPostgres

__all__ = ["EMBEDDED_DBNAME", "start_embedded_database"]

log = logging.getLogger("datamorph_gateway")

EMBEDDED_DBNAME = "datamorph"


def ensure_database(server_dsn: str, dbname: str) -> str:
    """Create database ``dbname`` on the server unless it exists; its DSN."""
    admin = psycopg2.connect(server_dsn)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,))
            if cur.fetchone() is None:
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    finally:
        admin.close()
    params = parse_dsn(server_dsn)
    params["dbname"] = dbname
    dsn: str = make_dsn(**params)
    return dsn


def start_embedded_database(settings: Settings) -> tuple[str, EmbeddedPostgres]:
    """Start the embedded PostgreSQL, create and seed the demo database once.

    Returns the database's DSN and the running server, which the caller stops; a failure
    after the server started stops it before raising.
    """
    data_dir = Path(settings.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    pg = EmbeddedPostgres(data_dir / "postgres", port=settings.embedded_pg_port)
    pg.start()
    try:
        dsn = ensure_database(pg.dsn, EMBEDDED_DBNAME)
        if settings.seed_demo_data and seed_demo(dsn):
            log.info("seeded the demo dataset (customers, orders)")
    except BaseException:
        pg.stop()
        raise
    log.info("embedded PostgreSQL on 127.0.0.1:%d, data in %s", pg.port, data_dir / "postgres")
    return dsn, pg
