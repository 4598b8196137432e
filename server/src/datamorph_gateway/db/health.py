"""The health check's own database connection, outside the pool.

A health check that borrows from the pool waits behind whatever holds the pool,
and then reports a busy gateway as a dead database. This connection is opened on
the first check, kept, and opened again when it breaks (a database restart, an
idle timeout); concurrent checks take turns on it, each waiting at most its own
timeout. One check is one round trip (``SELECT 1``), bounded on the server by
``statement_timeout`` and on the wire by ``tcp_user_timeout``.

Checks run every few seconds and on every ``/health`` call, so only a change is logged:
a WARNING when they start failing (or fail for another reason), INFO when they pass again.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import psycopg2
import psycopg2.extensions as ext

from datamorph_gateway.db.connections import alive
from datamorph_gateway.errors import DeadlineExceeded, Unavailable
from datamorph_gateway.excerpts import first_line

log = logging.getLogger(__name__)


class HealthProbe:
    """One lazily opened connection that answers ``SELECT 1``."""

    def __init__(self, dsn: str, *, connect_kwargs: dict[str, Any] | None = None) -> None:
        self._dsn = dsn
        self._connect_kwargs = dict(connect_kwargs or {})
        self._conn: ext.connection | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._failing = ""  # the last check's reason to fail; empty while they pass

    def check(self, timeout_s: float) -> None:
        """Return when the database answered within ``timeout_s``, else raise a request error."""
        deadline = time.monotonic() + timeout_s
        if not self._lock.acquire(timeout=timeout_s):
            raise DeadlineExceeded(
                f"another health check held the database for more than {timeout_s:g} s"
            )
        try:
            if self._closed:
                raise Unavailable("the gateway is shutting down", reason="SHUTTING_DOWN")
            fresh = self._conn is None or not alive(self._conn)
            try:
                self._ping(deadline, fresh=fresh)
            except (psycopg2.OperationalError, psycopg2.InterfaceError):
                if fresh or time.monotonic() >= deadline:
                    raise
                # A kept connection may have died since the last check: try a new one.
                self._ping(deadline, fresh=True)
        except psycopg2.Error as exc:
            self._drop()
            reason = first_line(exc)
            news, self._failing = reason != self._failing, reason
            log.log(logging.WARNING if news else logging.DEBUG, "health check failed: %s", reason)
            raise Unavailable("the database is unavailable", reason="DATABASE_UNAVAILABLE") from exc
        else:
            if self._failing:
                self._failing = ""
                log.info("health check passes again")
        finally:
            if self._closed:
                self._drop()
            self._lock.release()

    def close(self) -> None:
        """Close the connection; a check that is running keeps it until it ends."""
        self._closed = True
        if self._lock.acquire(timeout=0):
            try:
                self._drop()
            finally:
                self._lock.release()

    def _ping(self, deadline: float, *, fresh: bool) -> None:
        remaining_ms = max(int((deadline - time.monotonic()) * 1000), 1)
        if fresh:
            self._drop()
            self._conn = self._connect(remaining_ms)
        assert self._conn is not None
        with self._conn.cursor() as cur:
            cur.execute("SET statement_timeout = %s; SELECT 1", (remaining_ms,))
            cur.fetchone()

    def _connect(self, timeout_ms: int) -> ext.connection:
        conn: ext.connection = psycopg2.connect(
            self._dsn,
            **{
                **self._connect_kwargs,
                # libpq counts whole seconds and takes less than 2 as 2.
                "connect_timeout": max(2, -(-timeout_ms // 1000)),
                # Unacknowledged data for this long drops the connection: a check cannot hang
                # on a database host that has gone away.
                "tcp_user_timeout": timeout_ms,
            },
        )
        conn.autocommit = True
        return conn

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except psycopg2.Error:
                log.debug("error closing the health check connection", exc_info=True)
