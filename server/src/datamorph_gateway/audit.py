"""The audit trail of ExecuteQuery: who ran what, how long, how many rows, how it ended.

Parameter values are never recorded (only how many there were), and
password literals in the SQL text are masked before the line is written.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import grpc

from datamorph_gateway.errors import GatewayError
from datamorph_gateway.rpc import metadata_value

log = logging.getLogger("datamorph_gateway.audit")

MAX_LOGGED_QUERY_CHARS = 4000

_PASSWORD_LITERAL = re.compile(r"(\bPASSWORD\s+)(E?'(?:[^']|'')*')", re.IGNORECASE)
_PASSWORD_PAIR = re.compile(r"(\bpassword\s*=\s*)('(?:[^']|'')*'|[^\s'\";]+)", re.IGNORECASE)


def redact(sql: str) -> str:
    """Mask ``PASSWORD '...'`` literals and ``password=...`` pairs (connection strings)."""
    sql = _PASSWORD_LITERAL.sub(r"\1'***'", sql)
    return _PASSWORD_PAIR.sub(r"\1***", sql)


def caller(context: grpc.ServicerContext) -> str:
    """Who sent the request: the peer, and the client Envoy saw when it forwarded it."""
    forwarded = metadata_value(context, "x-forwarded-for")
    agent = metadata_value(context, "user-agent") or "-"
    peer = context.peer()
    return f"peer={peer} forwarded_for={forwarded or '-'} user_agent={agent!r}"


def record(
    context: grpc.ServicerContext,
    *,
    query: str,
    param_count: int,
    read_only: bool,
    duration_ms: float,
    rows: int,
    outcome: str,
) -> None:
    text = redact(query)
    if len(text) > MAX_LOGGED_QUERY_CHARS:
        text = text[:MAX_LOGGED_QUERY_CHARS] + f"... [{len(text)} chars]"
    log.info(
        "query %s params=%d read_only=%s duration_ms=%.2f rows=%d outcome=%s sql=%r",
        caller(context),
        param_count,
        read_only,
        duration_ms,
        rows,
        outcome,
        text,
    )


@dataclass
class Tally:
    """What the audited call reports back: the rows it returned."""

    rows: int = 0


@contextmanager
def audited(
    context: grpc.ServicerContext, *, query: str, param_count: int, read_only: bool
) -> Iterator[Tally]:
    """Write one audit line when the block ends, however it ends."""
    tally = Tally()
    start = time.perf_counter()
    outcome = "error"
    try:
        yield tally
        outcome = "ok"
    except GatewayError as exc:
        sqlstate = exc.metadata.get("sqlstate")
        outcome = exc.code.name + (f" sqlstate={sqlstate}" if sqlstate else "")
        raise
    finally:
        record(
            context,
            query=query,
            param_count=param_count,
            read_only=read_only,
            duration_ms=(time.perf_counter() - start) * 1000,
            rows=tally.rows,
            outcome=outcome,
        )
