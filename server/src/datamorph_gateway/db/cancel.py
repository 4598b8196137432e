"""Deadlines the gateway keeps itself, and cancelling a call's query from outside.

``statement_timeout`` lives in the session, where caller SQL can reach it
(``SET statement_timeout = 0``, ``set_config(...)``, a function's ``SET``
clause, a role's settings). So every call that runs caller SQL also gets a
``CancelScope``: a deadline held here, in one watchdog thread per process
(a heap of deadlines; registering costs a lock and a heap push), and a
``cancel()`` for when the call ends early (the RPC layer wires it to gRPC's
termination callback). When either fires, the connection the call has
borrowed gets libpq's cancel request (``conn.cancel()``), whatever the
session's settings say.

Races. A cancel request is processed by the backend asynchronously: PQcancel
returns once the postmaster has taken it, and the backend acts on the signal
later, possibly after the statement it was aimed at has finished and another
one has started. So a connection that was sent a cancel is **closed, never
returned to the pool** (the pool drops a closed connection and frees its
slot): nothing proves it is resynchronised, and the cost, one reconnect after
a cancelled call, is small. The scope's lock orders attach/detach against
sending the cancel: a connection is detached, under the lock, before it goes
back to the pool, so a cancel can only ever reach the call's own connection.

A cancel that reaches the backend while it is between statements (reading
the next command) is ignored by PostgreSQL; a fired scope therefore sends it
again a few times while the call still holds the connection, and refuses to
start more SQL (``check`` and ``attached`` raise).

PQcancel blocks for a round trip to the server (and longer when the server
is unreachable), so cancels are sent from a small thread pool: neither the
watchdog nor gRPC's callback thread ever waits on the database.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import psycopg2
import psycopg2.extensions as ext

from datamorph_gateway.errors import Cancelled, DeadlineExceeded, GatewayError

log = logging.getLogger(__name__)

RESEND_INTERVAL_S = 0.2
MAX_RESENDS = 10
# Finished calls leave their entries in the heap until their deadline comes up; every
# this many registrations, a large heap is rebuilt without them (amortised O(1) each).
_COMPACT_EVERY = 4096
_DEADLINE = "deadline"
_CANCELLED = "cancelled"


Terminate = Callable[[int], None]


class CancelScope:
    """One call's SQL: its deadline, its borrowed connection, and how it was stopped.

    Thread-safe: ``cancel()`` may come from any thread, at any time, any number
    of times. Use as a context manager; leaving it unregisters the deadline.
    """

    __slots__ = (
        "_closed",
        "_conn",
        "_lock",
        "_pid",
        "_reason",
        "_resends",
        "_sent",
        "_terminate",
        "deadline",
        "timeout_s",
    )

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.deadline = time.monotonic() + timeout_s
        self._lock = threading.Lock()
        self._conn: ext.connection | None = None
        self._pid = 0
        self._terminate: Terminate | None = None
        self._reason: str | None = None
        self._sent = False
        self._resends = 0
        self._closed = False
        _watchdog().schedule(self.deadline, self)

    def __enter__(self) -> CancelScope:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """The call is over: nothing more to watch (the heap drops the entry lazily)."""
        with self._lock:
            self._closed = True

    # -- stopping -------------------------------------------------------------

    def cancel(self) -> None:
        """The caller is gone: cancel the running query soon. Cheap; never blocks on I/O."""
        self._fire(_CANCELLED)

    def expire(self) -> None:
        """The deadline passed (called by the watchdog)."""
        self._fire(_DEADLINE)

    def _fire(self, reason: str) -> None:
        with self._lock:
            if self._closed:
                return
            if self._reason is None:
                self._reason = reason
            attached = self._conn is not None
        if attached:
            _watchdog().send_cancel(self)

    def _send_cancel(self) -> None:
        """Runs on the canceller pool: cancel the attached connection's statement, if any."""
        with self._lock:
            conn = self._conn
            if self._closed or conn is None or conn.closed:
                return
            try:
                conn.cancel()
            except psycopg2.Error:
                log.debug("sending a cancel request failed", exc_info=True)
            self._sent = True
            again = self._resends < MAX_RESENDS
            self._resends += 1
            stuck = self._resends == MAX_RESENDS + 1
            pid, terminate = self._pid, self._terminate
        if again:
            _watchdog().schedule(time.monotonic() + RESEND_INTERVAL_S, self, resend=True)
        elif stuck and terminate is not None and pid:
            # Every cancel was swallowed (a handler for query_canceled the checks could
            # not see): end the backend itself, from another connection.
            log.warning("a query ignored %d cancel requests; terminating its backend", MAX_RESENDS)
            try:
                terminate(pid)
            except Exception:
                log.warning("could not terminate a backend that ignores cancels", exc_info=True)

    # -- state ------------------------------------------------------------------

    @property
    def fired(self) -> bool:
        return self._reason is not None

    def error(self) -> GatewayError | None:
        """What the call answers once stopped: DeadlineExceeded or Cancelled; None if running."""
        if self._reason == _DEADLINE:
            return DeadlineExceeded(
                f"the query ran past its time limit of {self.timeout_s:g} s and was cancelled"
            )
        if self._reason == _CANCELLED:
            return Cancelled("the call was cancelled, and its query with it")
        return None

    def check(self) -> None:
        """Raise the scope's error if it has fired: no new SQL once stopped."""
        if self._reason is None and time.monotonic() >= self.deadline:
            self._fire(_DEADLINE)
        error = self.error()
        if error is not None:
            raise error

    @contextmanager
    def attached(
        self, conn: ext.connection, terminate: Terminate | None = None
    ) -> Iterator[ext.connection]:
        """Make ``conn`` the connection a cancel reaches while the block runs.

        On the way out the connection is detached under the lock; if a cancel
        was sent to it, it is closed, so that the pool discards it. ``terminate``
        ends a backend by pid, for a query that ignores every cancel.
        """
        pid = conn.get_backend_pid() if terminate is not None else 0
        with self._lock:
            self._conn = conn
            self._pid = pid
            self._terminate = terminate
            self._sent = False
            self._resends = 0
        try:
            self.check()
            yield conn
        finally:
            with self._lock:
                self._conn = None
                sent = self._sent
            if sent and not conn.closed:
                log.info("closing a connection that was sent a cancel request")
                conn.close()


class _Watchdog:
    """One thread per process: sleeps until the earliest deadline, fires the due scopes."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, CancelScope, bool]] = []
        self._seq = itertools.count()
        self._pushes = 0
        self._cond = threading.Condition(threading.Lock())
        self._thread = threading.Thread(target=self._run, name="sql-watchdog", daemon=True)
        self._thread.start()
        self._cancellers = ThreadPoolExecutor(4, thread_name_prefix="sql-cancel")

    def schedule(self, when: float, scope: CancelScope, *, resend: bool = False) -> None:
        entry = (when, next(self._seq), scope, resend)
        with self._cond:
            self._pushes += 1
            if self._pushes % _COMPACT_EVERY == 0 and len(self._heap) > _COMPACT_EVERY:
                self._compact_locked()
            heapq.heappush(self._heap, entry)
            if self._heap[0] is entry:
                self._cond.notify()

    def send_cancel(self, scope: CancelScope) -> None:
        self._cancellers.submit(scope._send_cancel)

    def _compact_locked(self) -> None:
        self._heap = [e for e in self._heap if not e[2]._closed]
        heapq.heapify(self._heap)

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    if not self._heap:
                        self._cond.wait()
                        continue
                    wait = self._heap[0][0] - time.monotonic()
                    if wait > 0:
                        self._cond.wait(wait)
                        continue
                    _, _, scope, resend = heapq.heappop(self._heap)
                    if not scope._closed:
                        break
            try:
                if resend:
                    self.send_cancel(scope)
                else:
                    scope.expire()
            except Exception:
                log.exception("the SQL watchdog failed to stop a query")


_lock = threading.Lock()
_instance: tuple[int, _Watchdog] | None = None


def _watchdog() -> _Watchdog:
    """The process's watchdog, started on first use (and again in a forked child)."""
    global _instance
    current = _instance
    pid = os.getpid()
    if current is not None and current[0] == pid:
        return current[1]
    with _lock:
        if _instance is None or _instance[0] != pid:
            _instance = (pid, _Watchdog())
        return _instance[1]
