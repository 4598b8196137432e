"""What the client's calls return: frozen dataclasses of plain Python values.

No protobuf message reaches a caller. Row values are decoded by their column's
PostgreSQL type (``datamorph_client.values`` has the table), so every value of a column
has one Python type, or is None. The instances are frozen: their fields cannot be
reassigned; the lists and dicts they hold are the caller's to use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "Column",
    "ColumnSchema",
    "FieldViolation",
    "ForeignKey",
    "HealthCheck",
    "HealthReport",
    "LogEntry",
    "LogEvent",
    "QueryResult",
    "RowBatch",
    "RunLogs",
    "Sample",
    "TableSchema",
    "WorkflowResult",
]


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
    rows: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class QueryResult:
    """ExecuteQuery's answer: the last statement's result.

    ``rows`` are dicts keyed by ``Column.key``, or lists in column order when the query
    asked for ``row_format="array"``.
    """

    columns: list[Column]
    rows: list[Any]
    row_count: int
    rows_affected: int
    command: str
    """The command tag's verb: ``SELECT``, ``INSERT``, ``CREATE TABLE``..."""
    truncated: bool
    """True when the result had more rows than were returned."""


@dataclass(frozen=True, slots=True)
class RowBatch:
    """One batch of a streamed query's rows; every batch carries the result's columns."""

    columns: list[Column]
    rows: list[Any]
    rows_sent: int
    """Rows streamed so far, this batch included."""


# -- workflows and their logs ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WorkflowResult:
    """A finished workflow run: its id, the orchestrator's summary and result body."""

    run_id: str
    message: str
    details: dict[str, Any]


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One event a DataMorph agent wrote during a run."""

    timestamp: str
    """ISO-8601, as the agent wrote it."""
    type: str
    """start, status, info, code, result, warning, error, success or end."""
    title: str
    description: str
    metadata: dict[str, Any]


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
