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
from datamorph_gateway.db.bounded import Limits, read_batch, read_bounded, row_bytes

from ..fixtures.gateway import GatewayFactory

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


@pytest.mark.slow
def test_wide_rows_stop_at_the_byte_budget(client: GatewayClient) -> None:
    """10,000 rows of 100 kB each (1 GB) fit max_rows: MAX_RESULT_BYTES (32 MiB) stops them."""
    result, growth = measured(
        lambda: client.execute_query(
            "SELECT g, repeat('x', 100000) AS v FROM generate_series(1, 10000) g"
        )
    )
    assert result.truncated is True
    assert 300 <= result.row_count <= 340  # about 32 MiB of values
    assert [row["g"] for row in result.rows] == list(range(1, result.row_count + 1))
    assert growth < 200 * MB, f"grew by {growth / MB:.0f} MB"


def test_the_byte_budget_applies_to_every_kind_of_result(make_gateway: GatewayFactory) -> None:
    gateway = make_gateway(max_result_bytes=1000)
    table = f"bytes_{uuid.uuid4().hex[:8]}"
    with GatewayClient(gateway.address) as c:
        query = c.execute_query("SELECT g, repeat('x', 100) AS v FROM generate_series(1, 50) g")
        assert query.truncated is True
        assert 5 <= query.row_count <= 12
        c.execute_query(f"CREATE TABLE {table} (id int, v text)")
        returned = c.execute_query(
            f"INSERT INTO {table} SELECT g, repeat('y', 100) FROM generate_series(1, 50) g "
            "RETURNING id, v"
        )
        assert (returned.truncated, returned.rows_affected) == (True, 50)
        assert 5 <= returned.row_count <= 12
        # Only what is returned counts: 20 narrow rows fit, whatever the rows written weigh.
        narrow = c.execute_query(
            f"UPDATE {table} SET v = repeat('z', 5000) WHERE id <= 20 RETURNING id"
        )
        assert (narrow.row_count, narrow.truncated, narrow.rows_affected) == (20, False, 20)
        # Compressible values weigh what they are sent as, not what they are stored as.
        c.execute_query(f"UPDATE {table} SET v = repeat('z', 5000)")
        first_only = c.execute_query(f"DELETE FROM {table} RETURNING v")
        # One row is over the budget by itself: it still comes, with the count.
        assert (first_only.row_count, first_only.truncated, first_only.rows_affected) == (
            1,
            True,
            50,
        )
        fetched = c.execute_query(
            "DECLARE c CURSOR FOR SELECT g, repeat('x', 100) AS v FROM generate_series(1, 50) g;"
            " FETCH ALL FROM c"
        )
        assert fetched.truncated is True
        assert 5 <= fetched.row_count <= 12
        exact = c.execute_query("SELECT g FROM generate_series(1, 50) g")
        assert (exact.row_count, exact.truncated) == (50, False)


def test_stream_batches_stop_at_the_byte_budget_and_lose_no_row(
    make_gateway: GatewayFactory,
) -> None:
    gateway = make_gateway(max_result_bytes=1000)
    with GatewayClient(gateway.address) as c:
        batches = list(
            c.stream_query(
                "SELECT g, repeat('x', 100) AS v FROM generate_series(1, 200) g", batch_rows=100
            )
        )
    assert len(batches) > 10  # about 10 rows a message, not 100
    seen = [row["g"] for batch in batches for row in batch.rows]
    assert seen == list(range(1, 201))


class _Source:
    """Rows of a given width served ``fetchmany``-style, recording each step asked for."""

    def __init__(self, count: int, width: int) -> None:
        value = "x" * width  # one string shared by every row
        self.rows = [(i, value) for i in range(count)]
        self.steps: list[int] = []

    def fetch(self, n: int) -> list[tuple[int, str]]:
        self.steps.append(n)
        taken, self.rows = self.rows[:n], self.rows[n:]
        return taken


@pytest.mark.parametrize(
    ("count", "width", "max_rows", "max_bytes", "kept", "truncated"),
    [
        (10, 10, 100, 10_000, 10, False),  # everything fits
        (100, 10, 100, 10_000, 100, False),  # exactly max_rows
        (101, 10, 100, 10_000, 100, True),  # one row over
        (1000, 92, 1000, 10_000, 100, True),  # 100-byte rows, 10 kB budget
        (1000, 92, 1000, 10_000 - 1, 99, True),
        (5, 50_000, 1000, 10_000, 1, True),  # one row is over by itself: it comes alone
        (1, 50_000, 1000, 10_000, 1, False),
        (0, 10, 100, 10_000, 0, False),
    ],
)
def test_read_bounded(
    count: int, width: int, max_rows: int, max_bytes: int, kept: int, truncated: bool
) -> None:
    source = _Source(count, width)
    rows, more = read_bounded(source.fetch, Limits(max_rows, max_bytes))
    assert (len(rows), more) == (kept, truncated)
    assert [r[0] for r in rows] == list(range(kept))


def test_read_bounded_sizes_its_steps_by_the_rows_seen() -> None:
    narrow = _Source(10_000, 10)
    read_bounded(narrow.fetch, Limits(10_000, 32 * MB))
    assert narrow.steps == [16, 9985]  # the first step, then the rest in one go
    wide = _Source(10_000, 1_000_000)
    rows, more = read_bounded(wide.fetch, Limits(10_000, 32 * MB))
    assert (len(rows), more) == (33, True)  # 33 rows of 1 MB fit 32 MiB
    assert sum(wide.steps) <= 33 + 1  # the budget and the row that tells there is more


def test_read_batch_carries_what_it_read_past_the_budget() -> None:
    source = _Source(100, 92)
    first, left, ended = read_batch(source.fetch, 50, 1000)
    assert (len(first), ended) == (10, False)
    second, left, ended = read_batch(source.fetch, 50, 1000, left)
    assert [r[0] for r in first + second] == list(range(20))
    assert row_bytes((1, "abc", b"de", [1, 2], None)) == 8 + 3 + 2 + 24 + 8


@pytest.mark.slow
def test_notices_are_not_kept_on_pooled_connections(client: GatewayClient) -> None:
    """psycopg2 keeps a connection's last 50 notices: 60 of 8 MB once held 1 GB for good."""
    _, growth = measured(
        lambda: client.execute_query(
            "DO $$ BEGIN FOR i IN 1..30 LOOP RAISE NOTICE '%', repeat('n', 8000000); "
            "END LOOP; END $$"
        )
    )
    assert growth < 100 * MB, f"grew by {growth / MB:.0f} MB"


@pytest.mark.slow
def test_very_wide_rows_cost_no_more_than_the_first_step(client: GatewayClient) -> None:
    """64 values of 5 MB once came in one fetch (320 MB) before any byte was counted."""
    result, growth = measured(
        lambda: client.execute_query(
            "SELECT repeat('x', 5000000) AS v FROM generate_series(1, 64)", max_rows=100
        )
    )
    assert (result.row_count, result.truncated) == (6, True)  # 32 MiB of 5 MB values
    assert growth < 200 * MB, f"grew by {growth / MB:.0f} MB"
