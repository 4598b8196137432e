"""What the client's calls return: frozen dataclasses of plain Python values.

No protobuf message reaches a caller. Row values are decoded by their column's
PostgreSQL type (``datamorph_client.values`` has the table), so every value of a column
has one Python type, or is None. The instances are frozen: their fields cannot be
reassigned; the lists and dicts they hold are the caller's to use.

Nothing here is ``Any``: a row value is a ``Value``, a JSON document (a workflow's details,
a log entry's metadata) a ``JsonValue``, so ``mypy --strict`` checks what a caller does
with them. ``QueryResult`` and ``RowBatch`` are generic in their row type: object rows
(``Row``) unless the call asked for ``row_format="array"`` (``ArrayRow``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from typing import Generic, TypeAlias, TypeVar

__all__ = [
    "ArrayRow",
    "Column",
    "ColumnSchema",
    "FieldViolation",
    "ForeignKey",
    "HealthCheck",
    "HealthReport",
    "JsonValue",
    "LogEntry",
    "LogEvent",
    "QueryResult",
    "Row",
    "RowBatch",
    "RunLogs",
    "Sample",
    "TableSchema",
    "Value",
    "WorkflowResult",
]

JsonValue: TypeAlias = bool | int | float | str | list["JsonValue"] | dict[str, "JsonValue"] | None
"""A JSON value as ``json.loads`` reads it (whole numbers as ``int``)."""

Value: TypeAlias = (
    bool
    | int
    | float
    | Decimal
    | str
    | bytes
    | date
    | datetime
    | time
    | uuid.UUID
    | list["Value"]
    | dict[str, "Value"]
    | None
)
"""One decoded row value: ``values``' table says which type each PostgreSQL type gives.

Lists are arrays (or JSON arrays), dicts JSON objects; ``None`` is NULL.
"""

Row: TypeAlias = dict[str, Value]
"""An object row: values keyed by ``Column.key``."""

ArrayRow: TypeAlias = list[Value]
"""An array row (``row_format="array"``): values in column order."""

RowT = TypeVar("RowT", Row, ArrayRow)


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One bad field of a request (google.rpc.BadRequest), e.g. ``table_names[2]``."""

    field: str
    description: str


# -- schemas ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ColumnSchema:
    """One column of a table, with information_schema.columns' facts."""

    name: str
    type: str
    """The full type as PostgreSQL prints it: ``character varying(40)``, ``integer[]``."""
    data_type: str
    """As information_schema names it: ``integer``, ``ARRAY``, ``USER-DEFINED``."""
    udt_name: str
    """The underlying type's name (``int4``, ``_text``, ``mood``): what ``Column.type`` says."""
    nullable: bool
    default: str | None
    """The default expression's text (``nextval('orders_id_seq'::regclass)``), or None."""
    ordinal_position: int
    character_maximum_length: int | None
    numeric_precision: int | None
    numeric_scale: int | None


@dataclass(frozen=True, slots=True)
class ForeignKey:
    """One referencing column of a foreign-key constraint (a two-column key gives two)."""

    column_name: str
    foreign_table_schema: str
    foreign_table_name: str
    foreign_column_name: str
    constraint_name: str


@dataclass(frozen=True, slots=True)
class TableSchema:
    """A table, view or materialized view, as GetSchemas describes it."""

    name: str
    """The relation's name as stored in the catalog (not necessarily as asked for)."""
    schema: str
    table_type: str
    """``table``, ``view``, ``materialized_view``, ``foreign_table`` or ``partitioned_table``."""
    columns: list[ColumnSchema]
    primary_keys: list[str]
    foreign_keys: list[ForeignKey]


# -- rows ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Column:
    """A column of a result: its name, PostgreSQL type name and key in object rows."""

    name: str
    type: str
    """The PostgreSQL type name (``int8``, ``numeric``, ``timestamptz``, ``_text``)."""
    key: str
    """The key of this column in object rows: the name, made unique (``a``, ``a_2``)."""


@dataclass(frozen=True, slots=True)
class Sample:
    """GetData's answer for one table: its columns, and rows keyed by column name."""

    columns: list[Column]
    rows: list[Row]


@dataclass(frozen=True, slots=True)
class QueryResult(Generic[RowT]):
    """ExecuteQuery's answer: the last statement's result.

    ``rows`` are dicts keyed by ``Column.key`` (``QueryResult[Row]``), or lists in column
    order when the query asked for ``row_format="array"`` (``QueryResult[ArrayRow]``).
    """

    columns: list[Column]
    rows: list[RowT]
    row_count: int
    rows_affected: int
    command: str
    """The command tag's verb: ``SELECT``, ``INSERT``, ``CREATE TABLE``..."""
    truncated: bool
    """True when the result had more rows than were returned."""


@dataclass(frozen=True, slots=True)
class RowBatch(Generic[RowT]):
    """One batch of a streamed query's rows; every batch carries the result's columns."""

    columns: list[Column]
    rows: list[RowT]
    rows_sent: int
    """Rows streamed so far, this batch included."""


# -- workflows and their logs ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WorkflowResult:
    """A finished workflow run: its id, the orchestrator's summary and result body."""

    run_id: str
    message: str
    details: dict[str, JsonValue]


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One event a DataMorph agent wrote during a run."""

    timestamp: str
    """ISO-8601, as the agent wrote it."""
    type: str
    """start, status, info, code, result, warning, error, success or end."""
    title: str
    description: str
    metadata: dict[str, JsonValue]


@dataclass(frozen=True, slots=True)
class RunLogs:
    """A run's log entries, oldest first."""

    run_id: str
    log_count: int
    """How many entries the run has written: ``len(logs)`` unless ``truncated``."""
    logs: list[LogEntry]
    created_at: str
    updated_at: str
    truncated: bool = False
    """True when only the newest entries are here (in an error's details); GetLogs has all."""


@dataclass(frozen=True, slots=True)
class LogEvent:
    """One entry of a followed run (``watch_logs``) and its position in the run's log."""

    run_id: str
    index: int
    entry: LogEntry


# -- health ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HealthCheck:
    """One dependency's check: ``healthy``, ``unhealthy`` or ``degraded`` (busy, working)."""

    status: str
    latency_ms: float
    message: str


@dataclass(frozen=True, slots=True)
class HealthReport:
    """The gateway's health and each dependency's (``database``, ``pool``...)."""

    status: str
    checks: dict[str, HealthCheck]
    version: str

    @property
    def healthy(self) -> bool:
        return self.status == "healthy"
