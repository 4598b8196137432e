"""The audit trail of ExecuteQuery: who ran what, how long, how many rows, how it ended.

Parameter values are never recorded (only how many there were), and neither is any
literal or comment of the SQL text: PostgreSQL's own scanner finds every constant,
whatever its quoting ('...', E'...', U&'...', $$...$$, numbers), and each becomes ``?``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import grpc
from pglast import parser

from datamorph_gateway.errors import GatewayError
from datamorph_gateway.rpc import metadata_value, principal_var

log = logging.getLogger("datamorph_gateway.audit")

MAX_LOGGED_QUERY_CHARS = 4000

# Scanner tokens that carry a value: every kind of string, bit string and number.
_COMMENT_TOKENS = frozenset({"SQL_COMMENT", "C_COMMENT"})
_CONSTANT_TOKENS = frozenset({"SCONST", "USCONST", "BCONST", "XCONST", "ICONST", "FCONST"})


def mask_constants(sql: str) -> str:
    """The statement with every constant replaced by ``?`` and every comment dropped.

    PostgreSQL's own scanner finds the constants, whatever their quoting, in every kind
    of statement (the parser's normalisation leaves those of DDL, such as a server's
    password option or a COMMENT, as written). Text even the scanner cannot read (an
    unterminated literal could hold anything) is logged as its length only.
    """
    try:
        tokens = parser.scan(sql)
    except parser.ParseError:
        return f"<{len(sql)} characters the parser cannot read>"
    out: list[str] = []
    last = 0
    for token in tokens:
        if token.name in _COMMENT_TOKENS:
            continue  # left in the gap before the next token, and dropped with it
        gap = sql[last : token.start]
        # Between two tokens only space and comments; a comment may hold anything.
        out.append(gap if gap.isspace() or not gap else " ")
        constant = token.name in _CONSTANT_TOKENS
        out.append("?" if constant else sql[token.start : token.end + 1])
        last = token.end + 1
    return "".join(out)


def _caller_fields(context: grpc.ServicerContext, forwarded: str | None) -> dict[str, str]:
    """Who sent the request: the principal, the peer, and the client our Envoy saw when it
    forwarded it (``forwarded`` as ``ClientIdentities.forwarded_for`` vouches for it; a
    caller's own ``x-forwarded-for`` never reaches the line), and its user agent."""
    return {
        "principal": principal_var.get().name,
        "peer": context.peer(),
        "forwarded_for": forwarded or "-",
        "user_agent": metadata_value(context, "user-agent") or "-",
    }


def record(
    context: grpc.ServicerContext,
    *,
    forwarded_for: str | None,
    query: str,
    param_count: int,
    read_only: bool,
    duration_ms: float,
    rows: int,
    outcome: str,
) -> None:
    """The audit line; its fields (LOG_FORMAT=json) carry the same values, the SQL masked."""
    text = mask_constants(query)
    if len(text) > MAX_LOGGED_QUERY_CHARS:
        text = text[:MAX_LOGGED_QUERY_CHARS] + f"... [{len(text)} chars]"
    fields: dict[str, object] = dict(_caller_fields(context, forwarded_for))
    fields.update(
        params=param_count,
        read_only=read_only,
        duration_ms=duration_ms,
        rows=rows,
        outcome=outcome,
        sql=text,
    )
    log.info(
        "query principal=%s peer=%s forwarded_for=%s user_agent=%r params=%d read_only=%s "
        "duration_ms=%.2f rows=%d outcome=%s sql=%r",
        fields["principal"],
        fields["peer"],
        fields["forwarded_for"],
        fields["user_agent"],
        param_count,
        read_only,
        duration_ms,
        rows,
        outcome,
        text,
        extra=fields,
    )


@dataclass
class Tally:
    """What the audited call reports back: the rows it returned."""

    rows: int = 0


@contextmanager
def audited(
    context: grpc.ServicerContext,
    *,
    forwarded_for: str | None,
    query: str,
    param_count: int,
    read_only: bool,
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
        outcome = exc.kind_name + (f" sqlstate={sqlstate}" if sqlstate else "")
        raise
    finally:
        record(
            context,
            forwarded_for=forwarded_for,
            query=query,
            param_count=param_count,
            read_only=read_only,
            duration_ms=(time.perf_counter() - start) * 1000,
            rows=tally.rows,
            outcome=outcome,
        )
