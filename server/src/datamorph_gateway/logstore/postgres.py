"""Workflow logs in the gateway's own PostgreSQL database (the embedded default).

Two tables in a schema of the gateway's own, created if missing: one row per
run, and one row per entry numbered 0, 1, 2… within its run. An append locks
its run's row (the upsert that bumps ``entry_count``) before inserting the
entry, so entries of one run are numbered without gaps in commit order, and a
follower reading "entries from n on" can never skip one that commits late.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg2
from psycopg2 import sql

from datamorph_gateway.db.pool import Connection, ConnectionPool
from datamorph_gateway.errors import ConfigError, GatewayError, Unavailable, from_database_error
from datamorph_gateway.logstore.base import LogStore, RunLog

log = logging.getLogger(__name__)

SCHEMA = "datamorph_gateway"
# Any constant works; it only has to be the same in every gateway that might create the tables.
_DDL_LOCK_KEY = 0x444D_4757_4C4F_4753  # "DMGWLOGS"
_TIMESTAMP = 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'

_DDL = """
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {schema}.workflow_runs (
    run_id text PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    entry_count integer NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS {schema}.workflow_log_entries (
    run_id text NOT NULL REFERENCES {schema}.workflow_runs (run_id) ON DELETE CASCADE,
    seq integer NOT NULL,
    entry json NOT NULL,
    PRIMARY KEY (run_id, seq)
);
"""

# clock_timestamp(), not now(): a run's updated_at must move with every entry,
# even two appended in one transaction.
_APPEND = """
WITH run AS (
    INSERT INTO {schema}.workflow_runs AS r (run_id, created_at, updated_at, entry_count)
    VALUES (%(run_id)s, clock_timestamp(), clock_timestamp(), 1)
    ON CONFLICT (run_id) DO UPDATE
        SET entry_count = r.entry_count + 1, updated_at = clock_timestamp()
    RETURNING entry_count - 1 AS seq
)
INSERT INTO {schema}.workflow_log_entries (run_id, seq, entry)
SELECT %(run_id)s, seq, %(entry)s::json FROM run
"""

_READ_RUN = """
SELECT to_char(created_at AT TIME ZONE 'UTC', %(fmt)s),
       to_char(updated_at AT TIME ZONE 'UTC', %(fmt)s)
FROM {schema}.workflow_runs WHERE run_id = %(run_id)s
"""

# A run's entries go with it (ON DELETE CASCADE).
_PURGE = """
DELETE FROM {schema}.workflow_runs
 WHERE updated_at < now() - make_interval(secs => %(retention)s)
"""
# How often appends check for runs past the retention period.
PURGE_EVERY_S = 3600.0

_READ_ENTRIES = """
SELECT entry::text FROM {schema}.workflow_log_entries
WHERE run_id = %(run_id)s AND seq >= %(start)s ORDER BY seq
"""


class PostgresLogStore(LogStore):
    """Logs in ``datamorph_gateway.workflow_runs`` / ``workflow_log_entries``.

    Shares the gateway's connection pool: each call is one short transaction
    bounded by ``timeout_s``.
    """

    def __init__(
        self,
        pool: ConnectionPool,
        *,
        timeout_s: float = 10.0,
        poll_interval_s: float = 1.0,
        schema: str = SCHEMA,
        retention_s: float = 0.0,
    ) -> None:
        super().__init__(poll_interval_s=poll_interval_s)
        self._pool = pool
        self._retention_s = retention_s
        self._purged_at = time.monotonic()
        self._timeout_s = timeout_s
        self._schema = sql.Identifier(schema)
        self._schema_name = schema
        self._ready = False

    def ensure_schema(self) -> None:
        """Create the schema and tables if missing; done once, then on first use if it failed.

        A database that cannot be reached now is only a warning (the pool
        reconnects later); one that refuses the DDL is a configuration error.
        """
        try:
            self._create_tables()
            self.purge()
        except Unavailable as exc:
            log.warning("workflow log tables not checked yet: %s", exc.message)
        except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
            log.warning("workflow log tables not checked yet: %s", _first_line(exc))
        except psycopg2.Error as exc:
            raise ConfigError(
                f"cannot create the workflow log tables in schema {self._schema_name!r}: "
                f"{_first_line(exc)} (grant CREATE on the database, or set LOG_STORE=dynamodb)"
            ) from None

    def _create_tables(self) -> None:
        with self._pool.connection(self._timeout_s) as conn:
            with conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (_DDL_LOCK_KEY,))
                cur.execute(sql.SQL(_DDL).format(schema=self._schema))
            conn.commit()
        self._ready = True

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        try:
            if not self._ready:
                self._create_tables()
            with self._pool.connection(self._timeout_s) as conn:
                with conn.cursor() as cur:
                    cur.execute(
                        "SET LOCAL statement_timeout = %s", (max(1, int(self._timeout_s * 1000)),)
                    )
                yield conn
                conn.commit()
        except psycopg2.Error as exc:
            raise from_database_error(exc) from exc

    def read_from(self, run_id: str, start: int) -> RunLog | None:
        params = {"run_id": run_id, "start": max(start, 0), "fmt": _TIMESTAMP}
        with self._transaction() as conn, conn.cursor() as cur:
            cur.execute(sql.SQL(_READ_RUN).format(schema=self._schema), params)
            run = cur.fetchone()
            if run is None:
                return None
            cur.execute(sql.SQL(_READ_ENTRIES).format(schema=self._schema), params)
            logs = [json.loads(text) for (text,) in cur.fetchall()]
        return RunLog(run_id, logs, run[0], run[1], offset=max(start, 0))

    def purge(self) -> int:
        """Delete runs (and their entries) not updated for the retention period; how many.

        Runs at start-up and then from appends at most every ``PURGE_EVERY_S``; with no
        retention period (0) it deletes nothing.
        """
        if self._retention_s <= 0:
            return 0
        self._purged_at = time.monotonic()
        with self._transaction() as conn, conn.cursor() as cur:
            cur.execute(
                sql.SQL(_PURGE).format(schema=self._schema), {"retention": self._retention_s}
            )
            deleted = int(cur.rowcount)
        if deleted:
            log.info("deleted %d workflow runs older than the log retention period", deleted)
        return deleted

    def _append(self, run_id: str, entry: dict[str, Any]) -> None:
        # allow_nan=False: json_safe already spelled NaN as text; anything else is a bug.
        text = json.dumps(entry, ensure_ascii=False, allow_nan=False)
        with self._transaction() as conn, conn.cursor() as cur:
            cur.execute(
                sql.SQL(_APPEND).format(schema=self._schema), {"run_id": run_id, "entry": text}
            )
        if self._retention_s > 0 and time.monotonic() - self._purged_at >= PURGE_EVERY_S:
            try:
                self.purge()
            except GatewayError as exc:  # the entry is written; the purge tries again later
                log.warning("could not delete expired workflow logs: %s", exc.message)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
