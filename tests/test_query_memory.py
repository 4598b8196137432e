"""ExecuteQuery statement by statement: no statement's rows are buffered beyond the answer.

The gateway runs in this test process, so its peak RSS during one request is measured
by sampling this process's RSS while the request runs.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import psutil
import pytest

from datamorph_client import GatewayClient

T = TypeVar("T")
MB = 1024 * 1024


@contextmanager
def peak_rss_growth() -> Iterator[list[int]]:
    """Yields a one-item list that holds, after the block, the RSS peak above the start."""
    process = psutil.Process()
    start = process.memory_info().rss
    peak = [start]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.01):
            peak[0] = max(peak[0], process.memory_info().rss)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    growth = [0]
    try:
        yield growth
    finally:
        done.set()
        sampler.join()
        peak[0] = max(peak[0], process.memory_info().rss)
        growth[0] = peak[0] - start


def measured(call: Callable[[], T]) -> tuple[T, int]:
    with peak_rss_growth() as growth:
        result = call()
    return result, growth[0]


@pytest.mark.slow
def test_a_huge_last_statement_costs_only_the_rows_returned(client: GatewayClient) -> None:
    """This grew the gateway by 2 GB: only a lone SELECT went through a cursor."""
    result, growth = measured(
        lambda: client.execute_query("SELECT 1; SELECT * FROM generate_series(1, 5e7)")
    )
    assert (result.row_count, result.truncated) == (10_000, True)
    assert growth < 200 * MB, f"grew by {growth / MB:.0f} MB"


@pytest.mark.slow
def test_rows_of_earlier_statements_never_reach_the_gateway(client: GatewayClient) -> None:
    result, growth = measured(
        lambda: client.execute_query(
            "SELECT g, repeat('x', 100) FROM generate_series(1, 1500000) g; SELECT 1 AS one"
        )
    )
    assert result.rows == [{"one": 1}]
    # Buffered, those rows would take several hundred MB in libpq and Python.
    assert growth < 100 * MB, f"grew by {growth / MB:.0f} MB"


@pytest.mark.slow
def test_returning_rows_of_earlier_statements_are_not_sent(client: GatewayClient) -> None:
    table = f"mem_{uuid.uuid4().hex[:8]}"
    result, growth = measured(
        lambda: client.execute_query(
            f"CREATE TEMP TABLE {table} (a int, pad text); "
            f"INSERT INTO {table} SELECT g, repeat('x', 100) FROM generate_series(1, 1000000) g "
            f"RETURNING *; SELECT count(*) AS n FROM {table}"
        )
    )
    assert result.rows == [{"n": 1_000_000}]
    assert growth < 100 * MB, f"grew by {growth / MB:.0f} MB"


def test_returning_rows_are_capped_but_every_row_is_written(client: GatewayClient) -> None:
    table = f"ret_{uuid.uuid4().hex[:8]}"
    client.execute_query(f"CREATE TABLE {table} (id int PRIMARY KEY, label text)")
    # A statement with a WITH of its own: ours is hoisted around it.
    result = client.execute_query(
        f"WITH src AS (SELECT g FROM generate_series(1, 20) g) "
        f"INSERT INTO {table} SELECT g, $1 FROM src RETURNING id, label",
        ["from-with"],
        max_rows=5,
    )
    assert (result.row_count, result.truncated, result.rows_affected) == (5, True, 20)
    assert result.command == "INSERT"
    assert [c.name for c in result.columns] == ["id", "label"]
    assert result.rows[0]["label"] == "from-with"
    updated = client.execute_query(
        f"UPDATE {table} SET label = 'u' WHERE id <= $1 RETURNING id", [3], max_rows=10
    )
    assert (updated.row_count, updated.truncated, updated.rows_affected) == (3, False, 3)
    assert updated.command == "UPDATE"
    nothing = client.execute_query(f"DELETE FROM {table} WHERE id < 0 RETURNING id")
    assert (nothing.row_count, nothing.rows_affected, nothing.command) == (0, 0, "DELETE")
    assert [c.name for c in nothing.columns] == ["id"]
    left = client.execute_query(f"SELECT count(*) AS n FROM {table} WHERE label = 'u'")
    assert left.rows == [{"n": 3}]


def test_parameters_reach_every_statement(client: GatewayClient) -> None:
    table = f"params_{uuid.uuid4().hex[:8]}"
    result = client.execute_query(
        f"CREATE TEMP TABLE {table} (id int, label text); "
        f"INSERT INTO {table} VALUES ($1, $2); "
        f"INSERT INTO {table} VALUES ($1 + 1, $2 || '%') RETURNING id; "
        f"SELECT label FROM {table} WHERE id = $1 + 1",
        [7, "seven"],
    )
    assert result.rows == [{"label": "seven%"}]


def test_a_callers_fetch_is_capped(client: GatewayClient) -> None:
    result = client.execute_query(
        "DECLARE c CURSOR FOR SELECT g FROM generate_series(1, 1000000) g; FETCH ALL FROM c",
        max_rows=10,
    )
    assert (result.row_count, result.truncated, result.command) == (10, True, "FETCH")
    earlier = client.execute_query(
        "DECLARE c CURSOR FOR SELECT g FROM generate_series(1, 100) g; "
        "FETCH 50 FROM c; FETCH FORWARD 1 FROM c"
    )
    assert earlier.rows == [{"g": 51}]


def test_show_explain_and_call_still_answer(client: GatewayClient) -> None:
    assert client.execute_query("SHOW search_path").command == "SHOW"
    explained = client.execute_query("EXPLAIN SELECT 1")
    assert explained.command == "EXPLAIN"
    assert explained.row_count >= 1
