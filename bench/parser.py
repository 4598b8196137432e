"""What parsing caller SQL costs: ``python -m bench.parser``.

ExecuteQuery and StreamQuery parse every text with PostgreSQL's own parser (pglast) and
check the parse tree against the refusal list before anything reaches the database. This
times both steps, per call, for texts like the benchmark's and for larger ones, with the
parse cache cold (a text seen for the first time) and warm (a repeated text, the usual
case for a Lambda's fixed queries). It needs no database. Lives only under ``bench/``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from datamorph_gateway.db import sqltext
from datamorph_gateway.db.sqlpolicy import SqlPolicy

TEXTS = {
    "ExecuteQuery bench query": (
        "SELECT id, customer_id, amount, status FROM bench_orders "
        "WHERE id > $1 ORDER BY id LIMIT 10"
    ),
    "join with 2 params": (
        "SELECT o.id, c.name, o.amount FROM orders o JOIN customers c ON c.id = o.customer_id "
        "WHERE c.country = $1 AND o.amount > $2 ORDER BY o.id LIMIT 10"
    ),
    "3 statements": (
        "CREATE TEMP TABLE t (a int, b text); INSERT INTO t VALUES ($1, $2) RETURNING a; "
        "SELECT count(*) FROM t"
    ),
    "DO block": "DO $$ BEGIN PERFORM count(*) FROM orders; RAISE NOTICE 'done'; END $$",
    "INSERT of 1,000 rows": "INSERT INTO t VALUES "
    + ", ".join(f"({i}, 'label {i}', {i}.5)" for i in range(1000)),
}


def _per_call_us(call: Callable[[], object], seconds: float) -> float:
    """Median of 5 rounds of the per-call time, in microseconds."""
    rounds = []
    for _ in range(5):
        n = 0
        start = time.perf_counter()
        deadline = start + seconds / 5
        while True:
            call()
            n += 1
            now = time.perf_counter()
            if now >= deadline:
                break
        rounds.append((now - start) / n * 1e6)
    return statistics.median(rounds)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.parser", description=__doc__)
    parser.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    args = parser.parse_args()
    policy = SqlPolicy()
    print("| text | parse, cold | parse, cached | policy check, cold | policy check, cached |")
    print("|---|---:|---:|---:|---:|")
    for name, text in TEXTS.items():
        cold = _per_call_us(lambda text=text: sqltext._parse(text), args.seconds)  # type: ignore[misc]
        warm = _per_call_us(lambda text=text: sqltext.parse(text), args.seconds)  # type: ignore[misc]
        script = sqltext.parse(text)
        check_cold = _per_call_us(
            lambda script=script: policy._check(script, False),  # type: ignore[misc]
            args.seconds,
        )
        check_warm = _per_call_us(
            lambda script=script: policy.check(script, read_only=False),  # type: ignore[misc]
            args.seconds,
        )
        print(
            f"| {name} | {cold:.1f} µs | {warm:.1f} µs | {check_cold:.1f} µs"
            f" | {check_warm:.1f} µs |"
        )


if __name__ == "__main__":
    main()
