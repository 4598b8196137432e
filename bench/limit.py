"""The limit: the gateway's own SQL, issued directly over pooled psycopg2 connections.

What no gateway in front of this database can beat from Python: each operation sends
the statements the gateway sends for that RPC, built by the gateway's own database
modules (``catalog``, ``sampling``, ``budget``, ``prepared``: reads on autocommit connections,
each statement carrying its time limit in the same round trip, catalog queries prepared
once per connection; ``ExecuteQuery`` in a
transaction with a server-side cursor and ``DISCARD ALL``), and fetches the rows into
Python with psycopg2's default types, but encodes nothing and sends nothing on. The
session handling is mirrored from ``datamorph_gateway.db.database`` and must follow it
when it changes. One connection per caller thread, opened before the clock starts:
that is the pool. Run as its own process (``python -m bench.limit``) so it shares no
GIL with the suite; it prints one JSON LoadResult.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import psycopg2
import psycopg2.extensions
from psycopg2 import sql

from bench.loadstats import LoadResult, summarize
from datamorph_gateway.db import catalog, decoding, sampling
from datamorph_gateway.db.budget import Budget, execute
from datamorph_gateway.db.connections import discard_session
from datamorph_gateway.db.names import parse_table_name
from datamorph_gateway.db.prepared import PreparingConnection

Connection = psycopg2.extensions.connection
Operation = Callable[[Connection], None]
STATEMENT_TIMEOUT_S = 30.0
MAX_ROWS = 100_000


def _budget() -> Budget:
    return Budget(STATEMENT_TIMEOUT_S)


def _begin(conn: Connection) -> None:
    """The prologue of the gateway's write transactions (Database._transaction)."""
    conn.autocommit = False
    with conn.cursor() as cur:
        cur.execute("SET LOCAL statement_timeout = %s", (int(STATEMENT_TIMEOUT_S * 1000),))


def health(conn: Connection) -> None:
    conn.autocommit = True
    with conn.cursor() as cur:
        execute(cur, "SELECT 1", None, _budget())
        cur.fetchone()


def get_schemas(tables: Sequence[str]) -> Operation:
    names = [parse_table_name(t) for t in tables]

    def run(conn: Connection) -> None:
        conn.autocommit = True
        budget = _budget()
        catalog.describe(conn, names, list(tables), budget)

    return run


def get_data(tables: Sequence[str], limit: int) -> Operation:
    names = [parse_table_name(t) for t in tables]

    # As the gateway's: after the first call, one guarded statement per table.
    relations = catalog.RelationCache(ttl_s=5.0)

    def run(conn: Connection) -> None:
        conn.autocommit = True
        sampling.sample_tables(conn, names, list(tables), limit, _budget(), relations)

    return run


def execute_query(query: str, max_rows: int = MAX_ROWS) -> Operation:
    def run(conn: Connection) -> None:
        _begin(conn)
        with conn.cursor(name="dmgw_result") as cur:
            cur.execute(query)
            cur.fetchmany(max_rows + 1)
        conn.commit()
        discard_session(conn)

    return run


def materialize(query: str, target_template: str) -> Operation:
    """What the development orchestrator does to the database for one StartWorkflow."""
    run_token = uuid.uuid4().hex[:8]
    counter = iter(range(1, 1 << 62))
    lock = threading.Lock()

    def run(conn: Connection) -> None:
        with lock:
            target = target_template.replace("{n}", f"{run_token}_{next(counter)}")
        _begin(conn)
        with conn.cursor() as cur:
            ident = sql.Identifier(target)
            cur.execute(sql.SQL("CREATE TABLE {} AS ").format(ident) + sql.SQL(query))
            cur.execute(sql.SQL("SELECT count(*) FROM {}").format(ident))
            cur.fetchone()
        conn.commit()

    return run


def operation(op: str, args: dict[str, Any]) -> Operation:
    """The operation named `op` with its JSON arguments (what the scenario table passes)."""
    if op == "health":
        return health
    if op == "get_schemas":
        return get_schemas(args["table_names"])
    if op == "get_data":
        return get_data(args["table_names"], int(args.get("limit", 10)))
    if op == "execute_query":
        return execute_query(args["query"], int(args.get("max_rows", MAX_ROWS)))
    if op == "materialize":
        return materialize(args["query"], args["target_table"])
    raise ValueError(f"unknown operation {op!r}")


def connect(dsn: str) -> Connection:
    """A connection set up as the gateway's pool sets its own up (startup options, prepared
    catalog statements)."""
    return psycopg2.connect(
        dsn, options=decoding.startup_options(), connection_factory=PreparingConnection
    )


def run_load(
    dsn: str,
    work: Operation,
    *,
    concurrency: int,
    duration_s: float,
    max_requests: int,
) -> LoadResult:
    """Run `work` from `concurrency` threads, each on its own connection, until time or count."""
    connections = [connect(dsn) for _ in range(concurrency)]
    latencies: list[float] = []
    errors: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()
    issued = 0
    start = time.perf_counter()
    deadline = start + duration_s

    def caller(conn: Connection) -> None:
        nonlocal issued
        mine: list[float] = []
        while time.perf_counter() < deadline:
            with lock:
                if issued >= max_requests:
                    break
                issued += 1
            began = time.perf_counter()
            try:
                work(conn)
            except psycopg2.Error as exc:
                if not conn.autocommit:
                    conn.rollback()
                with lock:
                    errors[exc.pgcode or type(exc).__name__] += 1
            else:
                mine.append(time.perf_counter() - began)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=caller, args=(c,)) for c in connections]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        for conn in connections:
            conn.close()
    elapsed = time.perf_counter() - start
    stopped_by = "count" if issued >= max_requests else "duration"
    return summarize(
        "psycopg2", concurrency, elapsed, latencies, dict(errors), stopped_by=stopped_by
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.limit", description=__doc__)
    parser.add_argument("--dsn", required=True)
    parser.add_argument(
        "--op",
        required=True,
        choices=["health", "get_schemas", "get_data", "execute_query", "materialize"],
    )
    parser.add_argument("--args", default="{}", help="the operation's arguments as JSON")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds")
    parser.add_argument("--max-requests", type=int, default=100_000)
    args = parser.parse_args(argv)
    result = run_load(
        args.dsn,
        operation(args.op, json.loads(args.args)),
        concurrency=args.concurrency,
        duration_s=args.duration,
        max_requests=args.max_requests,
    )
    json.dump(result.to_dict(), sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
