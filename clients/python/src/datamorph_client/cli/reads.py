"""``health``, ``schemas``, ``sample`` and ``query``: one call each, its answer printed.

On a terminal each prints tables; piped, JSON (``--output`` chooses either way).
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from datamorph_client.cli import output
from datamorph_client.cli.output import Display, Output
from datamorph_client.cli.session import reported, session
from datamorph_client.models import HealthReport, JsonValue, QueryResult, Row, TableSchema

__all__ = ["register"]

OutputOption = Annotated[
    Output | None,
    typer.Option("--output", "-o", help="table, json, csv or ndjson " + output.AUTO_HELP),
]
DisplayOption = Annotated[
    Display | None,
    typer.Option("--output", "-o", help="table or json " + output.AUTO_HELP),
]


def health(ctx: typer.Context, output_: DisplayOption = None) -> None:
    """The gateway's health and its dependencies'; exits 1 when it is unhealthy.

    [bold]datamorph health[/bold]
    """
    chosen = output.choose(output_)
    with reported(), session(ctx).client() as client:
        report = client.health()
    if chosen is Output.json:
        print(output.dumps(_health_json(report)))
    else:
        table = Table("check", "status", "latency ms", "message", header_style="bold")
        for name, check in sorted(report.checks.items()):
            table.add_row(name, _status(check.status), f"{check.latency_ms:.2f}", check.message)
        console = output.console()
        console.print(Text.assemble(_status(report.status), f"  version {report.version}"))
        console.print(table)
    if not report.healthy:
        raise typer.Exit(1)


def _status(status: str) -> Text:
    style = {"healthy": "green", "degraded": "yellow"}.get(status, "red")
    return Text(status, style=style)


def _health_json(report: HealthReport) -> JsonValue:
    checks: dict[str, JsonValue] = {
        name: {"status": c.status, "latency_ms": c.latency_ms, "message": c.message}
        for name, c in report.checks.items()
    }
    return {"status": report.status, "checks": checks, "version": report.version}


def schemas(
    ctx: typer.Context,
    tables: Annotated[list[str], typer.Argument(help="Tables: orders, sales.orders...")],
    output_: DisplayOption = None,
) -> None:
    """Each table's columns, primary key and foreign keys.

    [bold]datamorph schemas customers orders[/bold]
    """
    chosen = output.choose(output_)
    with reported(), session(ctx).client() as client:
        answer = client.get_schemas(tables)
    if chosen is Output.json:
        print(output.dumps({name: _schema_json(s) for name, s in answer.items()}))
        return
    console = output.console()
    for schema in answer.values():
        table = Table(
            "column", "type", "null", "default",
            title=f"{schema.schema}.{schema.name} ({schema.table_type})",
            title_justify="left", header_style="bold",
        )  # fmt: skip
        for c in schema.columns:
            table.add_row(c.name, c.type, "yes" if c.nullable else "no", c.default or "")
        console.print(table)
        if schema.primary_keys:
            console.print(f"primary key: {', '.join(schema.primary_keys)}", markup=False)
        for fk in schema.foreign_keys:
            target = f"{fk.foreign_table_schema}.{fk.foreign_table_name}.{fk.foreign_column_name}"
            console.print(f"foreign key: {fk.column_name} -> {target}", markup=False)


def _schema_json(schema: TableSchema) -> JsonValue:
    columns: list[JsonValue] = [
        {
            "column_name": c.name,
            "type": c.type,
            "data_type": c.data_type,
            "udt_name": c.udt_name,
            "is_nullable": "YES" if c.nullable else "NO",
            "column_default": c.default,
            "ordinal_position": c.ordinal_position,
            "character_maximum_length": c.character_maximum_length,
            "numeric_precision": c.numeric_precision,
            "numeric_scale": c.numeric_scale,
        }
        for c in schema.columns
    ]
    foreign_keys: list[JsonValue] = [
        {
            "column_name": fk.column_name,
            "foreign_table_schema": fk.foreign_table_schema,
            "foreign_table_name": fk.foreign_table_name,
            "foreign_column_name": fk.foreign_column_name,
            "constraint_name": fk.constraint_name,
        }
        for fk in schema.foreign_keys
    ]
    primary_keys: list[JsonValue] = list(schema.primary_keys)
    return {
        "table_name": schema.name,
        "schema": schema.schema,
        "table_type": schema.table_type,
        "columns": columns,
        "primary_keys": primary_keys,
        "foreign_keys": foreign_keys,
    }


def sample(
    ctx: typer.Context,
    tables: Annotated[list[str], typer.Argument(help="Tables to sample.")],
    limit: Annotated[
        int | None, typer.Option("--limit", "-n", min=1, help="Rows per table \\[default: 10].")
    ] = None,
    output_: DisplayOption = None,
) -> None:
    """A random sample of each table's rows.

    [bold]datamorph sample customers --limit 5[/bold]
    """
    chosen = output.choose(output_)
    with reported(), session(ctx).client() as client:
        answer = client.get_data(tables, limit=limit)
    if chosen is Output.json:
        rows: dict[str, JsonValue] = {
            name: [output.to_json(dict(row)) for row in s.rows] for name, s in answer.items()
        }
        print(output.dumps(rows))
        return
    console = output.console()
    for name, found in answer.items():
        console.print(output.rows_table(found.columns, found.rows, title=name))


def query(
    ctx: typer.Context,
    sql: Annotated[str, typer.Argument(help="The SQL; $1, $2... take the -p values.")],
    params: Annotated[
        list[str] | None,
        typer.Option(
            "--param",
            "-p",
            help="A value for $1, $2... in order; sent as text, typed by where it stands.",
        ),
    ] = None,
    read_only: Annotated[
        bool, typer.Option("--read-only", help="Run it as the read-only role: no writes.")
    ] = False,
    max_rows: Annotated[
        int | None, typer.Option(min=1, help="Return at most this many rows.")
    ] = None,
    output_: OutputOption = None,
) -> None:
    """Run SQL in one transaction and print its result.

    [bold]datamorph query "SELECT id, name FROM customers WHERE country = $1" -p DE[/bold]

    [bold]datamorph query "SELECT * FROM orders" --read-only -o csv > orders.csv[/bold]
    """
    chosen = output.choose(output_)
    with reported(), session(ctx).client() as client:
        result = client.execute_query(sql, params or [], read_only=read_only, max_rows=max_rows)
        print_result(result, chosen)
    if result.truncated:
        print(
            f"warning: only the first {result.row_count} rows; `datamorph stream` sends them all",
            file=sys.stderr,
        )


def print_result(result: QueryResult[Row], chosen: Output) -> None:
    if chosen is Output.json:
        print(output.dumps([output.to_json(dict(row)) for row in result.rows]))
    elif chosen is Output.ndjson:
        sys.stdout.writelines(output.ndjson_line(row) for row in result.rows)
    elif chosen is Output.csv:
        writer = output.csv_writer(sys.stdout, result.columns)
        writer.writerows(output.csv_row(row) for row in result.rows)
    elif not result.columns:  # a command without a result: INSERT, CREATE TABLE...
        output.console().print(f"{result.command} {result.rows_affected}", markup=False)
    else:
        console = output.console()
        console.print(output.rows_table(result.columns, result.rows))
        count = "1 row" if result.row_count == 1 else f"{result.row_count} rows"
        console.print(Text(count, style="dim"))


def register(app: typer.Typer) -> None:
    app.command()(health)
    app.command()(schemas)
    app.command()(sample)
    app.command()(query)
