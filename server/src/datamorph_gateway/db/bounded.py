"""Reading a result bounded in rows and in bytes, however many rows it has.

No answer and no batch of a stream holds more than its ``Limits`` (``max_rows``, and about
``max_bytes`` of values), and no more is read than one step past them, whatever the query
returns. ``read_bounded`` reads one answer, ``read_batch`` one batch of a stream.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Limits:
    """How much of a result an answer may carry."""

    max_rows: int
    max_bytes: int
    """About how many bytes of values (``row_bytes``); see ``read_bounded``."""


# The first step of a bounded read: enough for most answers in one round trip, small
# enough that wide rows cannot overshoot the byte budget by much.
_FIRST_STEP_ROWS = 16


def read_bounded(
    fetch: Callable[[int], list[tuple[Any, ...]]], limits: Limits
) -> tuple[list[tuple[Any, ...]], bool]:
    """Rows from ``fetch(n)`` up to ``max_rows`` and about ``max_bytes``; and whether more exist.

    When a limit stops the read, one more row is read to tell whether any was left out.
    """
    rows, left, ended = read_batch(fetch, limits.max_rows + 1, limits.max_bytes)
    if len(rows) > limits.max_rows:
        return rows[: limits.max_rows], True
    if left or not ended:
        return rows, bool(left) or bool(fetch(1))
    return rows, False


def read_batch(
    fetch: Callable[[int], list[tuple[Any, ...]]],
    max_rows: int,
    max_bytes: int,
    carry: Sequence[tuple[Any, ...]] = (),
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], bool]:
    """One batch: at most ``max_rows`` rows and ``max_bytes`` (at least one row, however wide).

    Returns the batch, the rows read past it (the next batch starts with them, as
    ``carry``), and whether the result has ended. Steps after the first are sized by the
    rows' average size so far, so narrow rows still come in one or two round trips, and
    wide ones are read past the budget by one step at most.
    """
    rows = list(carry)
    size = sum(row_bytes(row) for row in rows)
    ended = False
    step = min(max_rows, _FIRST_STEP_ROWS)
    while len(rows) < max_rows and size < max_bytes:
        got = fetch(step)
        rows.extend(got)
        size += sum(row_bytes(row) for row in got)
        if len(got) < step:
            ended = True
            break
        average = max(size // len(rows), 1)
        step = max(1, min(max_rows - len(rows), (max_bytes - size) // average + 1))
    keep = min(len(rows), max_rows)
    if size > max_bytes:
        keep, total = 0, 0
        while keep < min(len(rows), max_rows):
            total += row_bytes(rows[keep])
            if total > max_bytes and keep:
                break
            keep += 1
    return rows[:keep], rows[keep:], ended


def row_bytes(row: Sequence[Any]) -> int:
    """About what a row weighs: its strings' and byte strings' lengths, 8 for anything else."""
    total = 0
    for value in row:
        if isinstance(value, (str, bytes, memoryview)):
            total += len(value)
        elif isinstance(value, (list, dict)):
            total += 8 * (len(value) + 1)
        else:
            total += 8
    return total
