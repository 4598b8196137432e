"""How the command prints what the client answers: a table for people, JSON/CSV for programs.

Values go back to the contract's JSON (CONTRACT.md's value table), so that piped output
reads like a REST answer: ``numeric`` as a decimal string, ``int8`` beyond 2^53 as a
string, timestamps ISO-8601, ``bytea`` base64, NaN and infinities as strings. In a table
or CSV cell a value is its text: NULL empty (``NULL`` in a table), ``bytea`` as
PostgreSQL prints it (``\\x00ff``), arrays and JSON as compact JSON.
"""

from __future__ import annotations

import base64
import csv
import json
import math
import os
import sys
import uuid
from collections.abc import Iterable, Sequence
from datetime import date, time
from decimal import Decimal
from enum import Enum
from typing import TextIO

from rich.console import Console
from rich.table import Table
from rich.text import Text

from datamorph_client.models import Column, JsonValue, Row, Value
from datamorph_client.values import MAX_SAFE_INTEGER

__all__ = [
    "Display",
    "Output",
    "RowsOut",
    "choose",
    "csv_writer",
    "dumps",
    "ndjson_line",
    "rows_table",
    "stdout_is_terminal",
    "text",
    "to_json",
]


class Output(str, Enum):  # noqa: UP042 - StrEnum is Python 3.11+, the client runs on 3.10
    """``--output``'s choices."""

    table = "table"
    json = "json"
    csv = "csv"
    ndjson = "ndjson"


class Display(str, Enum):  # noqa: UP042
    """``--output``'s choices where the answer is not rows: a table for people, or JSON."""

    table = "table"
    json = "json"


class RowsOut(str, Enum):  # noqa: UP042
    """``stream``'s formats: one row a line."""

    csv = "csv"
    ndjson = "ndjson"


AUTO_HELP = "\\[default: a table on a terminal, else json]"
"""How ``--output`` defaults, for help texts (``\\[``: not rich markup)."""


def stdout_is_terminal() -> bool:
    """Whether people read stdout: a terminal, or ``TTY_COMPATIBLE=1`` (rich's switch).

    ``FORCE_COLOR`` colors output but does not make a pipe a terminal: a script that pipes
    the command keeps getting JSON wherever it runs.
    """
    forced = os.environ.get("TTY_COMPATIBLE", "")
    if forced in ("0", "1"):
        return forced == "1"
    return sys.stdout.isatty()


def choose(chosen: Output | Display | None) -> Output:
    """``--output`` if given, else a table on a terminal and JSON otherwise."""
    if chosen is not None:
        return Output(chosen.value)
    return Output.table if stdout_is_terminal() else Output.json


def console() -> Console:
    """A console on stdout, a terminal's when ``stdout_is_terminal`` says so."""
    return Console(force_terminal=stdout_is_terminal() or None, highlight=False)


def _float(value: float) -> JsonValue:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def to_json(value: Value) -> JsonValue:
    """A decoded value as the contract's JSON (what the REST routes answer)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value if abs(value) <= MAX_SAFE_INTEGER else str(value)
    if isinstance(value, float):
        return _float(value)
    if isinstance(value, (Decimal, uuid.UUID)):
        return str(value)
    if isinstance(value, (date, time)):  # datetime is a date
        return value.isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, list):
        return [to_json(v) for v in value]
    return {k: to_json(v) for k, v in value.items()}


def dumps(value: JsonValue) -> str:
    return json.dumps(value, ensure_ascii=False)


def text(value: Value) -> str:
    """A value as a cell's text; NULL is empty."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, bytes):
        return "\\x" + value.hex()
    if isinstance(value, (list, dict)):
        return json.dumps(to_json(value), ensure_ascii=False, separators=(",", ":"))
    converted = to_json(value)
    return converted if isinstance(converted, str) else str(converted)


def ndjson_line(row: Row) -> str:
    return dumps({k: to_json(v) for k, v in row.items()}) + "\n"


def csv_writer(file: TextIO, columns: Sequence[Column]) -> csv.DictWriter[str]:
    """A CSV writer for object rows, its header (the columns' names) written."""
    writer = csv.DictWriter(file, fieldnames=[c.key for c in columns], lineterminator="\n")
    writer.writerow({c.key: c.name for c in columns})
    return writer


def csv_row(row: Row) -> dict[str, str]:
    return {k: text(v) for k, v in row.items()}


def rows_table(columns: Sequence[Column], rows: Iterable[Row], *, title: str = "") -> Table:
    """A rich table of object rows: one column per result column, NULL dimmed."""
    table = Table(title=title or None, title_justify="left", header_style="bold")
    for column in columns:
        table.add_column(column.name, no_wrap=False)
    for row in rows:
        table.add_row(
            *(
                Text("NULL", style="dim") if row[c.key] is None else Text(text(row[c.key]))
                for c in columns
            )
        )
    return table
