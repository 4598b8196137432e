"""A request's time budget, carried by each statement in the same round trip.

Reads run on autocommit connections: no BEGIN, no COMMIT. Each statement is
sent as ``SET LOCAL statement_timeout = N; <statement>``, one simple-query
message that PostgreSQL runs as one implicit transaction, so the limit holds
for that statement alone and leaves nothing behind on the connection.
"""

from __future__ import annotations

import math
import time
from typing import Any

from psycopg2 import sql
from psycopg2.extensions import cursor

from datamorph_gateway.observability import tracing

__all__ = ["Budget", "execute", "timeout_prefix"]


class Budget:
    """The time a request has left, read afresh for each statement."""

    def __init__(self, timeout_s: float) -> None:
        self._deadline = time.monotonic() + timeout_s

    def remaining_ms(self) -> int:
        """Milliseconds left; at least 1, since 0 would mean no limit at all."""
        return max(1, math.ceil((self._deadline - time.monotonic()) * 1000))


def timeout_prefix(budget: Budget | None) -> str:
    """What limits the statement sent after it to the budget's time left; "" for no budget."""
    # Plain text on this hot path: composing psycopg2.sql objects costs more than the
    # round trip saved. The prefix holds only an integer, and no %, so it is safe either way.
    return "" if budget is None else f"SET LOCAL statement_timeout = {budget.remaining_ms():d}; "


def execute(
    cur: cursor, query: str | sql.Composable, params: Any = None, budget: Budget | None = None
) -> None:
    """Run ``query`` (one of the gateway's own reads), limited to the budget's remaining
    time when there is one."""
    with tracing.db_span("SELECT"):
        if budget is None:
            cur.execute(query, params)
            return
        body = query if isinstance(query, str) else query.as_string(cur)
        cur.execute(timeout_prefix(budget) + body, params)
