"""``stream``: a query's rows, however many, as CSV or NDJSON, with progress on stderr.

Rows are written batch by batch as the gateway sends them, so memory stays flat. While
stderr is a terminal a live line shows rows, rows/s and the time so far; when it is not,
one summary line is printed at the end. Ctrl-C stops cleanly: the call is cancelled (the
gateway cancels the query at once), the rows written so far stay whole lines, and the
command exits 130.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterable
from contextlib import closing
from typing import Annotated

import typer
from rich.console import Console
from rich.live import Live
from rich.text import Text

from datamorph_client.cli import output
from datamorph_client.cli.output import RowsOut
from datamorph_client.cli.session import INTERRUPTED, reported, session
from datamorph_client.models import Row, RowBatch

__all__ = ["STREAM_DEADLINE_S", "Progress", "register"]

STREAM_DEADLINE_S = 24 * 3600.0
"""A stream's deadline unless --timeout says otherwise: the gateway's STREAM_TIMEOUT_S
(600 s by default) is what ends a long one."""


class Progress:
    """Rows so far, their rate and the elapsed time: a live line, or a final one."""

    def __init__(self) -> None:
        self.rows = 0
        self.started = time.monotonic()

    def __rich__(self) -> Text:
        return Text(self.line(), style="dim")

    def line(self, ending: str = "") -> str:
        elapsed = time.monotonic() - self.started
        rate = self.rows / elapsed if elapsed > 0 else 0.0
        line = f"{self.rows:,} rows  {rate:,.0f} rows/s  {elapsed:.1f} s"
        return f"{line}  {ending}" if ending else line


def stream(
    ctx: typer.Context,
    sql: Annotated[str, typer.Argument(help="One SELECT, VALUES, TABLE or WITH statement.")],
    params: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", help="A value for $1, $2... in order (as text)."),
    ] = None,
    output_: Annotated[
        RowsOut, typer.Option("--output", "-o", help="csv, or ndjson: one JSON object a line.")
    ] = RowsOut.ndjson,
    batch_rows: Annotated[
        int | None, typer.Option(min=1, help="Rows per message \\[default: the gateway's].")
    ] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress or summary on stderr.")
    ] = False,
) -> None:
    """Stream a read-only query's rows to stdout, with progress on stderr; Ctrl-C cancels.

    [bold]datamorph stream "SELECT * FROM orders" --output csv > orders.csv[/bold]

    [bold]datamorph stream "SELECT * FROM orders WHERE status = $1" -p shipped | gzip > s.gz[/bold]
    """
    progress = Progress()
    stderr = Console(stderr=True)
    # Drawn only when stdout is elsewhere: rows written to the same terminal would tear it.
    live = not quiet and stderr.is_terminal and not output.stdout_is_terminal()
    display = Live(progress, console=stderr, refresh_per_second=4, transient=True,
                   redirect_stdout=False, redirect_stderr=False) if live else None  # fmt: skip
    options = session(ctx)
    timeout_s = options.timeout_s or STREAM_DEADLINE_S
    with reported(), options.client() as client:
        batches = client.stream_query(sql, params or [], batch_rows=batch_rows, timeout_s=timeout_s)
        ending = "failed"
        try:
            if display is not None:
                display.start()
            with closing(batches):
                _write(batches, output_, progress)
            ending = "done"
        except KeyboardInterrupt:
            ending = "stopped: the query was cancelled"
            raise typer.Exit(INTERRUPTED) from None
        except BrokenPipeError:
            ending = "stopped: the reader went away, the query was cancelled"
            raise
        finally:
            with contextlib.suppress(BrokenPipeError):
                sys.stdout.flush()
            if display is not None:
                display.stop()
            if not quiet:
                print(progress.line(ending), file=sys.stderr)


def _write(batches: Iterable[RowBatch[Row]], chosen: RowsOut, progress: Progress) -> None:
    writer = None
    for batch in batches:
        if chosen is RowsOut.csv:
            if writer is None:
                writer = output.csv_writer(sys.stdout, batch.columns)
            writer.writerows(output.csv_row(row) for row in batch.rows)
        else:
            sys.stdout.writelines(output.ndjson_line(row) for row in batch.rows)
        progress.rows = batch.rows_sent


def register(app: typer.Typer) -> None:
    app.command()(stream)
