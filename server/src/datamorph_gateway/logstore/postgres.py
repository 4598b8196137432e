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
from typing import Any

from psycopg2 import sql

from datamorph_gateway.db.own_tables import SCHEMA, OwnedTables
from datamorph_gateway.db.pool import ConnectionPool
from datamorph_gateway.errors import GatewayError
from datamorph_gateway.logstore.base import LogStore, RunLog

log = logging.getLogger(__name__)

_TIMESTAMP = 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'

_DDL = """
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

    On the pool of the gateway's own tables (``RolePools.own_tables``): each call is one
    short transaction bounded by ``timeout_s``.
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
        self._schema = sql.Identifier(schema)
        self._tables = OwnedTables(
            pool,
            sql.SQL(_DDL).format(schema=self._schema),
            timeout_s=timeout_s,
            name="workflow log tables",
            what=f"the workflow log tables in schema {schema!r}",
            remedy="set LOG_STORE=dynamodb",
            schema=schema,
        )

    def ensure_schema(self) -> None:
        """Create the schema and tables if missing, and purge; see ``OwnedTables.ensure``."""
        self._tables.ensure(then=self.purge)

    def read_from(self, run_id: str, start: int) -> RunLog | None:
        params = {"run_id": run_id, "start": max(start, 0), "fmt": _TIMESTAMP}
        with self._tables.transaction() as conn, conn.cursor() as cur:
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
        with self._tables.transaction() as conn, conn.cursor() as cur:
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
        with self._tables.transaction() as conn, conn.cursor() as cur:
            cur.execute(
                sql.SQL(_APPEND).format(schema=self._schema), {"run_id": run_id, "entry": text}
            )
        if self._retention_s > 0 and time.monotonic() - self._purged_at >= PURGE_EVERY_S:
            try:
                self.purge()
            except GatewayError as exc:  # the entry is written; the purge tries again later
                log.warning("could not delete expired workflow logs: %s", exc.message)
