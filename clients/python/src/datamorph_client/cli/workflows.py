"""``start`` and ``logs``: run a workflow and watch its log as the agents write it.

``start --follow`` starts the run, learns its id as soon as the gateway has one, and
prints each log entry as it is written, with a spinner naming the current step; it exits
0 when the run succeeds and 1 when it fails. Ctrl-C stops the watching, not the run:
``datamorph logs RUN_ID --follow`` picks it up again, and exits the same way: 1 when the
log it followed says the run failed (``Outcome``), so that ``logs --follow && next``
never goes on after a failed run. Piped, entries are NDJSON lines (as REST's
``/watch/logs`` sends them) and the answer is the last line.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.status import Status
from rich.text import Text

from datamorph_client.cli import output
from datamorph_client.cli.output import Display, Output
from datamorph_client.cli.session import INTERRUPTED, interrupted, reported, session
from datamorph_client.errors import GatewayError
from datamorph_client.models import JsonValue, LogEntry, LogEvent, RunLogs, WorkflowResult

__all__ = ["register"]

_STYLES = {
    "start": "cyan",
    "status": "blue",
    "code": "magenta",
    "result": "green",
    "warning": "yellow",
    "error": "bold red",
    "success": "bold green",
    "end": "dim",
}

OutputOption = Annotated[
    Display | None,
    typer.Option("--output", "-o", help="table or json " + output.AUTO_HELP),
]


def _entry_json(entry: LogEntry) -> JsonValue:
    return {
        "timestamp": entry.timestamp,
        "type": entry.type,
        "title": entry.title,
        "description": entry.description,
        "metadata": entry.metadata,
    }


def _event_json(event: LogEvent) -> str:
    return output.dumps(
        {"run_id": event.run_id, "index": event.index, "entry": _entry_json(event.entry)}
    )


def _result_json(result: WorkflowResult) -> str:
    body = {"status": "success", "run_id": result.run_id, "message": result.message}
    return output.dumps({**body, "details": result.details})


# What an ``end`` entry's ``workflow_status`` says of a run that succeeded (the gateway's own
# orchestrator writes "completed"; DataMorph's agents, "completed" or "success").
_SUCCEEDED = frozenset({"completed", "success", "succeeded"})


class Outcome:
    """What a run's log says of its end, entry by entry (a followed log is never kept).

    The ``end`` entry's ``workflow_status``, when it names one, decides: anything but
    completed, success or succeeded (failed, timed_out, abandoned) is a failure. Without
    one, an ``error`` entry with no ``success`` entry after it is. ``failure`` is the entry
    that says why: the error entry when there is one (its title says what went wrong),
    else the ``end`` entry; None when the log says nothing of a failure.
    """

    def __init__(self) -> None:
        self.failure: LogEntry | None = None
        self._error: LogEntry | None = None

    def see(self, entry: LogEntry) -> None:
        if entry.type == "error":
            self._error = self.failure = entry
        elif entry.type == "success":
            self._error = self.failure = None
        elif entry.type == "end":
            status = entry.metadata.get("workflow_status")
            if isinstance(status, str):
                succeeded = status.lower() in _SUCCEEDED
                self.failure = None if succeeded else (self._error or entry)


def _entry_text(entry: LogEntry) -> Text:
    clock = entry.timestamp.partition("T")[2][:8] or entry.timestamp
    line = Text.assemble(
        (f"{clock:<8}  ", "dim"),
        (f"{entry.type:<8}", _STYLES.get(entry.type, "")),
        f" {entry.title}",
    )
    description = entry.description.strip()
    if description:
        line.append("\n" + "\n".join("          " + d for d in description.splitlines()), "dim")
    return line


class Watch:
    """Where a followed run's entries go: a terminal with a spinner, or NDJSON lines."""

    def __init__(self, chosen: Output, waiting: str) -> None:
        self.console: Console | None = output.console() if chosen is Output.table else None
        self.outcome = Outcome()
        self.status: Status | None = None
        if self.console is not None:
            self.status = self.console.status(waiting, spinner="dots")
            self.status.start()

    def entries(self, events: Iterable[LogEvent]) -> None:
        for event in events:
            self.outcome.see(event.entry)
            if self.console is None:
                print(_event_json(event), flush=True)
                continue
            if self.status is not None:
                title = escape(event.entry.title)
                self.status.update(f"{title} [dim](run {event.run_id})[/dim]")
            self.console.print(_entry_text(event.entry))

    def running(self, run_id: str) -> None:
        if self.status is not None:
            self.status.update(f"running [dim](run {run_id})[/dim]")

    def stop(self) -> None:
        if self.status is not None:
            self.status.stop()
            self.status = None


def start(
    ctx: typer.Context,
    prompt: Annotated[
        str, typer.Argument(help="What to do; the built-in orchestrator takes one SELECT.")
    ],
    source: Annotated[
        list[str] | None, typer.Option("--source", "-s", help="A source table (repeat for more).")
    ] = None,
    target_table: Annotated[
        str, typer.Option("--target-table", "-t", help="The table the workflow creates.")
    ] = "",
    key: Annotated[
        str,
        typer.Option(
            "--key", "-k", help="An idempotency key: a repeat gets the first run's answer."
        ),
    ] = "",
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Print the log live while the run goes on.")
    ] = False,
    output_: OutputOption = None,
) -> None:
    """Start a workflow and wait for its end; exits 0 when it succeeds, 1 when it fails.

    [bold]datamorph start "SELECT country, count(*) AS n FROM customers GROUP BY 1"
    --target-table by_country --follow[/bold]
    """
    chosen = output.choose(output_)
    options = session(ctx)
    with reported(), options.client() as client:
        call = client.begin_workflow(
            prompt,
            source_tables=source or [],
            target_table=target_table,
            idempotency_key=key,
            timeout_s=options.timeout_s,
        )
        watch = Watch(chosen, "starting the workflow")
        run_id = None
        try:
            run_id = call.run_id()
            if run_id is not None:
                watch.running(run_id)
            if follow and run_id is not None:
                watch.entries(client.watch_logs(run_id, timeout_s=options.timeout_s))
            result = call.result()
        except (KeyboardInterrupt, GatewayError) as exc:
            if isinstance(exc, GatewayError) and not interrupted():
                raise
            call.cancel()
            watch.stop()
            if run_id is not None:
                print(
                    f"stopped watching run {run_id}; it goes on: datamorph logs {run_id} --follow",
                    file=sys.stderr,
                )
            raise typer.Exit(INTERRUPTED) from None
        finally:
            watch.stop()
    if watch.console is None:
        print(_result_json(result))
    else:
        watch.console.print(Text.assemble(("success", "bold green"), f"  run {result.run_id}"))
        watch.console.print(result.message, markup=False, highlight=False)


def logs(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(help="The run id start printed.")],
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing entries until the run ends.")
    ] = False,
    output_: OutputOption = None,
) -> None:
    """A run's log entries; with --follow, live until the run ends, then exits 1 if it failed.

    [bold]datamorph logs 20261126_105045_45b2aa95 --follow[/bold]
    """
    chosen = output.choose(output_)
    options = session(ctx)
    with reported(), options.client() as client:
        if follow:
            watch = Watch(chosen, f"following run {run_id}")
            try:
                watch.entries(client.watch_logs(run_id, timeout_s=options.timeout_s))
            except (KeyboardInterrupt, GatewayError) as exc:
                if isinstance(exc, GatewayError) and not interrupted():
                    raise
                raise typer.Exit(INTERRUPTED) from None
            finally:
                watch.stop()
            failure = watch.outcome.failure
            if failure is not None:
                print(f"run {run_id} failed: {failure.title}", file=sys.stderr)
                raise typer.Exit(1)
            return
        run = client.get_logs(run_id)
    _print_logs(run, chosen)


def _print_logs(run: RunLogs, chosen: Output) -> None:
    if chosen is Output.json:
        entries: list[JsonValue] = [_entry_json(e) for e in run.logs]
        body: dict[str, JsonValue] = {"run_id": run.run_id, "log_count": run.log_count}
        times = {"created_at": run.created_at, "updated_at": run.updated_at}
        print(output.dumps({**body, "logs": entries, **times}))
        return
    console = output.console()
    for entry in run.logs:
        console.print(_entry_text(entry))
    summary = f"{run.log_count} entries, run {run.run_id}, {run.created_at} .. {run.updated_at}"
    console.print(Text(summary, style="dim"))


def register(app: typer.Typer) -> None:
    app.command()(start)
    app.command()(logs)
