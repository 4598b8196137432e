"""One cap on the database connections of the whole process, shared by its pools.

The gateway opens several pools (the serving role's, the read-only role's, one per
principal with a database user of its own). They share one ``ConnectionBudget``, so
``DB_POOL_MAX`` still caps every connection of the process, and caller SQL in all of
them together still leaves the reserved share to reads: a pool that needs a connection
when the budget is spent closes an idle one of another pool, or waits for one.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from datamorph_gateway.db.pool import ConnectionPool


class ConnectionBudget:
    """Connections open in all pools of the process, and those lent to caller SQL.

    ``limit`` caps the open ones; caller SQL (a pool's shared share) may hold at most
    ``limit - reserved`` of them at once across pools, so ``reserved`` are always left to
    reads. Pools call it while holding their own lock; it takes another pool's lock only
    without blocking (to close one of its idle connections), so no two pools wait on
    each other.
    """

    def __init__(self, limit: int, reserved: int = 0) -> None:
        if not 0 <= reserved < limit:
            raise ValueError("reserved must be at least 0 and less than limit")
        self.limit = limit
        self.caller_limit = limit - reserved
        self._open = 0
        self._caller_busy = 0
        self._lock = threading.Lock()
        self._pools: list[ConnectionPool] = []

    def register(self, pool: ConnectionPool) -> None:
        with self._lock:
            self._pools.append(pool)

    def forget(self, pool: ConnectionPool) -> None:
        """A closed pool is no longer asked for idle connections (its busy ones still count
        until their release closes them)."""
        with self._lock:
            self._pools = [p for p in self._pools if p is not pool]

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"open": self._open, "limit": self.limit, "caller_busy": self._caller_busy}

    def caller_room(self) -> bool:
        with self._lock:
            return self._caller_busy < self.caller_limit

    def lend_to_caller(self, count: int) -> None:
        with self._lock:
            self._caller_busy += count

    def open_one(self, requester: ConnectionPool) -> bool:
        """Count one more open connection, closing another pool's idle one if need be."""
        with self._lock:
            if self._open < self.limit:
                self._open += 1
                return True
            others = [pool for pool in self._pools if pool is not requester]
        for pool in others:
            if pool.close_one_idle():
                with self._lock:
                    if self._open < self.limit:
                        self._open += 1
                        return True
        return False

    def closed_one(self) -> None:
        with self._lock:
            self._open -= 1
