"""A bounded, thread-safe pool of psycopg2 connections shared by all requests.

Why not psycopg2.pool: it raises at once when empty instead of waiting, it
hands out connections the server has already closed, and it does not retry a
connect. This one waits (bounded) for a free connection, connects with
exponential backoff, checks an idle connection is still alive before handing
it out (without a round trip) and never hands out a broken one again, so the
gateway keeps serving after the database restarts.

Two shares: ``reserved`` connections may be lent only to borrowers that ask
for them (the gateway's own short statements: catalog reads, samples, its
bookkeeping tables); every other borrower (caller SQL) holds at most
``max_size - reserved`` at once, and at most that many more may wait for one.
So slow caller SQL can fill its share and its queue while reads are still
served, and the threads serving RPCs are not all parked waiting behind it.

This module keeps the books (who holds what, who waits), and reports them to the metrics
(connections lent and idle after each change, under its lock; each borrower's wait);
``budget`` caps the pools of the process together, and ``connections`` opens, tests and
resets one connection.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg2
import psycopg2.extensions as ext

from datamorph_gateway.db.connection_budget import ConnectionBudget
from datamorph_gateway.db.connections import ConnectHook, Connector, alive, discard_session
from datamorph_gateway.errors import ResourceExhausted, Unavailable
from datamorph_gateway.observability import metrics

log = logging.getLogger(__name__)

Connection = ext.connection
_BUDGET_POLL_S = 0.02  # how often a pool waiting on the shared budget looks again


class ConnectionPool:
    """Connections to one database, at most ``max_size`` open at once."""

    def __init__(
        self,
        dsn: str,
        *,
        min_size: int = 1,
        max_size: int = 16,
        reserved: int = 0,
        acquire_timeout_s: float = 10.0,
        connect_timeout_s: float = 5.0,
        connect_attempts: int = 4,
        backoff_s: float = 0.1,
        connect_kwargs: dict[str, Any] | None = None,
        on_connect: ConnectHook | None = None,
        budget: ConnectionBudget | None = None,
        password: Callable[[], str] | None = None,
    ) -> None:
        self.min_size = min_size
        self.max_size = max_size
        if not 0 <= reserved < max_size:
            raise ValueError("reserved must be at least 0 and less than max_size")
        self.reserved = reserved
        self.shared_max = max_size - reserved
        self._acquire_timeout_s = acquire_timeout_s
        self._connector = Connector(
            dsn,
            timeout_s=connect_timeout_s,
            attempts=connect_attempts,
            backoff_s=backoff_s,
            connect_kwargs=connect_kwargs,
            on_connect=on_connect,
            password=password,
        )
        # A pool of its own unless it shares one with others (then it registers there).
        self._budget = budget or ConnectionBudget(max_size, reserved)
        self._budget.register(self)
        self._idle: deque[Connection] = deque()
        self._open = 0
        self._shared_busy = 0  # lent from the shared share, or being opened for it
        self._shared_waiting = 0
        # Why the pool was closed (the message and reason a late borrower is answered);
        # None while it is open.
        self._closed: tuple[str, str] | None = None
        self._cond = threading.Condition()
        # Pools sharing a budget count toward the limit of their budget's owner (RolePools).
        self._gauge = metrics.pool_gauge(max_size if budget is None else 0)

    # -- lifecycle ---------------------------------------------------------

    def warm_up(self) -> None:
        """Open ``min_size`` connections now; a failure is logged (once), not raised.

        Nothing is tried while the database is known to be down: it connects on first use.
        """
        if self.unreachable:
            return
        conns = []
        try:
            for _ in range(self.min_size):
                conns.append(self._acquire(time.monotonic() + self._connector.timeout_s))
        except Unavailable:
            pass  # the connector said why, in one line
        for conn in conns:
            self._release(conn, broken=False)

    @property
    def unreachable(self) -> bool:
        """The last connect failed (or the database was found down): the next may too."""
        return self._connector.unreachable

    def assume_unreachable(self) -> None:
        """The database was found down elsewhere (and said so): a failure here is not news."""
        self._connector.assume_unreachable()

    def close(
        self, because: str = "the gateway is shutting down", reason: str = "SHUTTING_DOWN"
    ) -> None:
        """Close every idle connection; busy ones are closed when released. A borrower
        still waiting (or coming late) is answered UNAVAILABLE ``because``."""
        with self._cond:
            self._closed = (because, reason)
            while self._idle:
                self._discard_locked(self._idle.pop())
            self._gauge.close()
            self._cond.notify_all()

    def stats(self) -> dict[str, int]:
        """Counts at one instant; ``busy`` includes connections being opened."""
        with self._cond:
            idle = len(self._idle)
            return {
                "open": self._open,
                "idle": idle,
                "busy": self._open - idle,
                "max": self.max_size,
                "reserved": self.reserved,
                "shared_busy": self._shared_busy,
                "shared_max": self.shared_max,
                "shared_waiting": self._shared_waiting,
            }

    # -- use ---------------------------------------------------------------

    @contextmanager
    def connection(
        self, timeout_s: float | None = None, *, reset_session: bool = False, reserved: bool = False
    ) -> Iterator[Connection]:
        """Lend a connection in a clean state (no open transaction).

        On an exception the transaction is rolled back; a connection that
        failed at the protocol level is closed instead of being returned.
        With ``reset_session`` (for connections that ran someone else's SQL)
        the session is reset afterwards, whether the block succeeded or not,
        so nothing it left (SET, temp tables, PREPARE, advisory locks) reaches
        the next borrower. With ``reserved`` the connection may come from the
        reserved share; without it, only from the shared share.
        """
        wait = (
            self._acquire_timeout_s
            if timeout_s is None
            else min(timeout_s, self._acquire_timeout_s)
        )
        shared = not reserved
        asked = time.monotonic()
        conn = self._acquire(asked + max(wait, 0.0), shared=shared)
        metrics.pool_wait(time.monotonic() - asked)
        broken = False
        try:
            yield conn
        except (psycopg2.OperationalError, psycopg2.InterfaceError):
            broken = True
            raise
        finally:
            self._release(conn, broken=broken, reset_session=reset_session, shared=shared)

    def _acquire(self, deadline: float, *, shared: bool = False) -> Connection:
        with self._cond:
            waiting = False
            try:
                while True:
                    if self._closed is not None:
                        because, reason = self._closed
                        raise Unavailable(because, reason=reason)
                    budget_blocked = False
                    if not shared or (
                        self._shared_busy < self.shared_max and self._budget.caller_room()
                    ):
                        conn = self._take_idle_locked()
                        if conn is not None:
                            self._lend_locked(shared)
                            self._report_locked()
                            return conn
                        if self._open < self.max_size:
                            if self._budget.open_one(self):
                                self._open += 1
                                self._lend_locked(shared)
                                self._report_locked()
                                break
                            budget_blocked = True
                    elif shared and self._shared_busy < self.shared_max:
                        budget_blocked = True  # other pools' caller SQL holds the share
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise self._exhausted(shared)
                    if shared and not waiting:
                        # A bounded queue: past it, answer now rather than park a thread.
                        if self._shared_waiting >= self.shared_max:
                            raise self._exhausted(shared)
                        self._shared_waiting += 1
                        waiting = True
                    # Another pool's release does not wake us: look again soon.
                    self._cond.wait(min(remaining, _BUDGET_POLL_S) if budget_blocked else remaining)
            finally:
                if waiting:
                    self._shared_waiting -= 1
        try:
            return self._connector.connect(deadline)
        except BaseException:
            with self._cond:
                self._open -= 1
                self._budget.closed_one()
                self._lend_locked(-shared)
                self._report_locked()
                self._cond.notify_all()
            raise

    def _lend_locked(self, shared: int) -> None:
        self._shared_busy += shared
        if shared:
            self._budget.lend_to_caller(shared)

    def close_one_idle(self) -> bool:
        """Close the longest-idle connection, for another pool; False if busy or none."""
        if not self._cond.acquire(blocking=False):
            return False
        try:
            if not self._idle:
                return False
            self._discard_locked(self._idle.popleft())
            return True
        finally:
            self._cond.release()

    def _take_idle_locked(self) -> Connection | None:
        while self._idle:
            conn = self._idle.pop()
            if alive(conn):
                return conn
            log.info("discarding a database connection closed by the server")
            self._discard_locked(conn)
        return None

    def _exhausted(self, shared: bool) -> ResourceExhausted:
        if shared and self.reserved:
            return ResourceExhausted(
                f"all {self.shared_max} database connections for caller SQL are busy "
                f"({self.reserved} more are kept for reads); try again later",
                reason="POOL_EXHAUSTED",
            )
        return ResourceExhausted(
            f"all {self.max_size} database connections are busy; try again later",
            reason="POOL_EXHAUSTED",
        )

    def _release(
        self, conn: Connection, *, broken: bool, reset_session: bool = False, shared: bool = False
    ) -> None:
        if not broken and not conn.closed:
            try:
                if conn.status != ext.STATUS_READY:
                    conn.rollback()
                if reset_session:
                    discard_session(conn)
            except psycopg2.Error:
                if reset_session:
                    log.warning("could not reset a session; closing the connection")
                broken = True
        with self._cond:
            self._lend_locked(-shared)
            if broken or conn.closed or self._closed is not None:
                self._discard_locked(conn)
            else:
                self._idle.append(conn)
                self._report_locked()
            # Every waiter: the one that can go on may wait for the other share.
            self._cond.notify_all()

    def _report_locked(self) -> None:
        idle = len(self._idle)
        self._gauge.report(self._open - idle, idle)

    def _discard_locked(self, conn: Connection) -> None:
        self._open -= 1
        self._budget.closed_one()
        self._report_locked()
        try:
            conn.close()
        except psycopg2.Error:
            log.debug("error closing a discarded connection", exc_info=True)
