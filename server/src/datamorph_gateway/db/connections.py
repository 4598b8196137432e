"""One pooled connection, outside the pool's bookkeeping: opening, liveness, reset.

``Connector`` opens a connection the way a pool wants it: retried with exponential
backoff and jitter within the caller's deadline, psycopg2's notice buffer turned off,
the pool's hook run (role check, decoders). It remembers whether the database was
reachable, so a database that goes away costs one WARNING, not one per request.
``alive`` tells a dead idle connection without a round trip, and ``discard_session``
resets what a caller's SQL left on one.
"""

from __future__ import annotations

import logging
import random
import select
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import psycopg2
import psycopg2.extensions as ext

from datamorph_gateway.db.prepared import PreparingConnection
from datamorph_gateway.errors import Unavailable
from datamorph_gateway.excerpts import first_line

log = logging.getLogger(__name__)
# Jitter from a generator of our own: the module-level one is the application's (and
# property tests notice when a background thread draws from it).
_jitter = random.Random()  # noqa: S311

ConnectHook = Callable[[ext.connection], None]


class Connector:
    """Opens connections to one database for a pool, and knows whether the last one failed."""

    def __init__(
        self,
        dsn: str,
        *,
        timeout_s: float,
        attempts: int,
        backoff_s: float,
        connect_kwargs: dict[str, Any] | None = None,
        on_connect: ConnectHook | None = None,
        password: Callable[[], str] | None = None,
    ) -> None:
        self._dsn = dsn
        self.timeout_s = timeout_s
        self._attempts = attempts
        self._backoff_s = backoff_s
        self._connect_kwargs = dict(connect_kwargs or {})
        self._on_connect = on_connect
        # Called at each connect (a password that changes, such as an RDS IAM token).
        self._password = password
        self._unreachable = False  # the last connect failed: the next failure is not news
        self._lock = threading.Lock()

    @property
    def unreachable(self) -> bool:
        """The last connect failed (or the database was found down): the next may too."""
        return self._unreachable

    def assume_unreachable(self) -> None:
        """The database was found down elsewhere (and said so): a failure here is not news."""
        with self._lock:
            self._unreachable = True

    def connect(self, deadline: float) -> ext.connection:
        """Connect, retrying with exponential backoff and jitter until attempts or time run out."""
        last: Exception | None = None
        attempt = 0
        for attempt in range(self._attempts):
            if attempt:
                delay = self._backoff_s * (2 ** (attempt - 1)) * (0.5 + _jitter.random())
                if time.monotonic() + delay >= deadline:
                    break
                time.sleep(delay)
            remaining = max(deadline - time.monotonic(), 0.0)
            timeout = max(2, int(min(self.timeout_s, remaining) + 0.999))
            try:
                kwargs = {**self._connect_kwargs, "connect_timeout": timeout}
                if self._password is not None:
                    kwargs["password"] = self._password()
                conn: ext.connection = psycopg2.connect(self._dsn, **kwargs)
            except psycopg2.OperationalError as exc:
                last = exc
                log.debug(
                    "database connect attempt %d/%d failed: %s",
                    attempt + 1,
                    self._attempts,
                    first_line(exc),
                )
                continue
            self._now_reachable()
            # psycopg2 keeps the last 50 notices of a connection, across transactions: 50
            # RAISE NOTICEs of 8 MB each would stay in memory for as long as the pool keeps
            # the connection. Nothing reads them, so none is kept.
            conn.notices = deque(maxlen=0)  # type: ignore[assignment]  # any .append() will do
            try:
                if self._on_connect is not None:
                    self._on_connect(conn)
                if conn.status != ext.STATUS_READY:
                    conn.rollback()
            except BaseException:
                conn.close()
                raise
            return conn
        with self._lock:
            first, self._unreachable = not self._unreachable, True
        # A WARNING when the database goes away, not one per request (or attempt) after.
        log.log(
            logging.WARNING if first else logging.DEBUG,
            "database unavailable after %d connect attempts: %s",
            attempt + 1,
            first_line(last),
        )
        raise Unavailable("the database is unavailable", reason="DATABASE_UNAVAILABLE")

    def _now_reachable(self) -> None:
        with self._lock:
            back, self._unreachable = self._unreachable, False
        if back:
            log.info("database reachable again")


def discard_session(conn: ext.connection) -> None:
    """``DISCARD ALL``: back to the session the connection started with.

    It cannot run inside a transaction, hence autocommit; it also drops the
    gateway's own prepared statements, which the connection must then forget.
    """
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("DISCARD ALL")
    finally:
        if not conn.closed:
            conn.autocommit = False
        if isinstance(conn, PreparingConnection):
            conn.forget_prepared()


def alive(conn: ext.connection) -> bool:
    """A cheap liveness test for an idle connection, with no round trip.

    An idle connection has nothing to read unless the server sent something
    on its own: in practice the FATAL message and EOF of a terminated
    session (restart, failover, idle timeout). Readable means dead.
    """
    if conn.closed:
        return False
    try:
        readable, _, _ = select.select([conn.fileno()], [], [], 0)
    except (OSError, ValueError, psycopg2.InterfaceError):
        return False
    return not readable
