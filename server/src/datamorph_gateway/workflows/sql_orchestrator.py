"""The built-in development orchestrator: a SQL query's result, materialized into a new table.

The default when no orchestrator is configured, so StartWorkflow works on a
fresh machine with no AI and no AWS behind it. It plays DataMorph's
orchestrator at its simplest: the prompt is one query (SELECT, WITH, VALUES or
TABLE), the result becomes ``target_table``, the table is checked (row count,
columns), and the run is logged as DataMorph's agents log it: start, status,
result, success, end, or error and end.

The materialization is one transaction: the target must not exist yet, and a
failure anywhere (including a query that modifies data, which a "materialize
a query" workflow must not do) leaves no table behind. Anything that is not a
query is FAILED_PRECONDITION: natural-language prompts need a real
orchestrator.
"""

from __future__ import annotations

import json
import time
from typing import Any

import psycopg2
from psycopg2 import sql

from datamorph_gateway.db import sqltext
from datamorph_gateway.db.names import InvalidTableName, TableName, parse_table_name
from datamorph_gateway.db.pool import Connection
from datamorph_gateway.errors import (
    AlreadyExists,
    FailedPrecondition,
    GatewayError,
    InvalidArgument,
    clip,
    from_database_error,
)
from datamorph_gateway.logstore import make_entry
from datamorph_gateway.workflows.base import WorkflowError
from datamorph_gateway.workflows.handler_orchestrator import LocalContext

NAME = "Development Orchestrator"
QUERY_KEYWORDS = frozenset({"SELECT", "WITH", "VALUES", "TABLE"})
# Leading words that make a prompt SQL rather than prose, for a clearer refusal.
_STATEMENT_KEYWORDS = QUERY_KEYWORDS | frozenset(
    {
        "INSERT", "UPDATE", "DELETE", "MERGE", "CREATE", "DROP", "ALTER", "TRUNCATE",
        "GRANT", "REVOKE", "COPY", "CALL", "DO", "EXPLAIN", "SET", "SHOW", "RESET",
        "BEGIN", "START", "COMMIT", "ROLLBACK", "VACUUM", "ANALYZE", "REFRESH", "LOCK",
        "COMMENT", "DECLARE", "FETCH", "PREPARE", "EXECUTE", "LISTEN", "NOTIFY",
    }
)  # fmt: skip
# What every refused prompt's message ends with: what the built-in orchestrator accepts, and
# how to configure a real one.
_ACCEPTS = (
    "the built-in development orchestrator only materializes a single SQL query (SELECT, "
    "WITH, VALUES or TABLE) into a new target_table; for anything else set "
    "ORCHESTRATOR_FUNCTION to a DataMorph orchestrator Lambda, or ORCHESTRATOR_HANDLER to a "
    "local module:function"
)
_NEEDS_ORCHESTRATOR = f"natural-language prompts need an orchestrator: {_ACCEPTS}"
_SYNTAX_ERROR = "42601"


def handler(event: dict[str, Any], context: LocalContext) -> dict[str, Any]:
    """Lambda-style entry point; raises ``GatewayError`` for a failed run (after logging it)."""
    started = time.monotonic()
    run_id = str(event.get("run_id") or "")
    prompt = str(event.get("prompt") or event.get("user_prompt") or "")
    target_text = str(event.get("target_table") or "")
    _check_prompt(prompt)
    target = _target(target_text)
    source_tables = event.get("source_tables") or []

    context.append_log(
        make_entry(
            "start",
            f"Starting {NAME}",
            f"Starting workflow with run_id: {run_id}",
            {"source_tables": source_tables, "target_table": target_text},
        )
    )
    try:
        context.append_log(
            make_entry(
                "status",
                "Materializing Query Result",
                f"Creating table {target_text} from the prompt's query",
                {"query": prompt},
            )
        )
        table = _materialize(context, prompt, target, target_text)
    except GatewayError as exc:
        context.append_log(
            make_entry(
                "error",
                f"Error: {exc.reason}",
                f"{NAME}: {exc.message}",
                {"error_type": exc.reason, "error_message": exc.message},
            )
        )
        _end(context, started, "failed")
        raise

    qualified, rows, columns = table
    context.append_log(
        make_entry(
            "result",
            "Table Created Successfully",
            f"{rows} rows written to {qualified}",
            {"target_table": qualified, "row_count": rows, "columns": columns},
        )
    )
    context.append_log(
        make_entry(
            "success",
            "Workflow Completed Successfully",
            f"All steps completed. Data loaded to '{qualified}' and validated.",
            {
                "workflow_status": "completed",
                "target_table": qualified,
                "validation_status": "pass",
            },
        )
    )
    _end(context, started, "completed")
    return {
        "statusCode": 200,
        "body": {
            "status": "completed",
            "run_id": run_id,
            "target_table": qualified,
            "row_count": rows,
            "columns": columns,
            "validation_status": "pass",
            "message": f"Query result materialized into {qualified} ({rows} rows)",
        },
    }


def _end(context: LocalContext, started: float, status: str) -> None:
    context.append_log(
        make_entry(
            "end",
            f"Completed {NAME}",
            "Orchestrator execution completed",
            {
                "workflow_status": status,
                "execution_time_seconds": round(time.monotonic() - started, 3),
            },
        )
    )


def _check_prompt(prompt: str) -> None:
    """Refuse, before anything is logged, a prompt that is not one query."""
    if "\x00" in prompt:
        raise InvalidArgument.field("prompt", f"must not contain NUL characters; {_ACCEPTS}")
    keyword = sqltext.first_word(prompt)
    try:
        script = sqltext.parse(prompt)
    except sqltext.SqlSyntaxError:
        # Prose, or a query with a typo: the latter gets the server's own message.
        script = None
    if script is None and keyword in QUERY_KEYWORDS:
        return
    if script is not None and len(script.statements) == 1:
        statement = script.statements[0]
        if statement.node_type == "SelectStmt" and statement.mode is not sqltext.Mode.PLAIN:
            return  # a data-modifying WITH is refused with its own message when planned
    if keyword not in _STATEMENT_KEYWORDS:
        raise FailedPrecondition(_NEEDS_ORCHESTRATOR, reason="ORCHESTRATOR_NOT_CONFIGURED")
    count = len(script.statements) if script is not None else 1
    what = f"{count} statements" if count > 1 else f"a {keyword} statement"
    raise FailedPrecondition(f"the prompt is {what}; {_ACCEPTS}", reason="NOT_A_QUERY")


def _target(text: str) -> TableName:
    if not text.strip():
        raise InvalidArgument.field(
            "target_table",
            "is required by the built-in development orchestrator: it names the new table "
            "the query's result goes to",
        )
    try:
        return parse_table_name(text)
    except InvalidTableName as exc:
        raise InvalidArgument.field("target_table", f"{clip(text)!r}: {exc}") from None


def _materialize(
    context: LocalContext, prompt: str, target: TableName, target_text: str
) -> tuple[str, int, list[dict[str, str]]]:
    """Create and check the table in one transaction: (qualified name, rows, columns)."""
    ident = (
        sql.Identifier(target.name)
        if target.schema is None
        else sql.Identifier(target.schema, target.name)
    )
    try:
        with context.connection() as conn:
            with conn.cursor() as cur:
                cur.execute(
                    "SET LOCAL statement_timeout = %s",
                    (max(1, context.get_remaining_time_in_millis()),),
                )
            _refuse_data_changes(conn, prompt)
            with conn.cursor() as cur:
                cur.execute("SELECT to_regclass(%s) IS NOT NULL", (target.regclass_text(),))
                row = cur.fetchone()
                if row is not None and row[0]:
                    raise _exists(target_text)
                # The prompt is SQL text by definition; the name never is.
                cur.execute(sql.SQL("CREATE TABLE {} AS ").format(ident) + sql.SQL(prompt))
                created = cur.rowcount
                result = _check_table(conn, ident, target.regclass_text(), created)
            conn.commit()
    except psycopg2.Error as exc:
        if exc.pgcode == "42P07":  # duplicate_table: created meanwhile by someone else
            raise _exists(target_text) from None
        raise from_database_error(exc) from None
    return result


def _refuse_data_changes(conn: Connection, prompt: str) -> None:
    """Plan the query first: a syntax error is most likely prose, and a data-modifying
    WITH (``WITH d AS (DELETE ...) SELECT ...``) would change data while "materializing"."""
    try:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("EXPLAIN (FORMAT JSON) ") + sql.SQL(prompt))
            row = cur.fetchone()
    except psycopg2.Error as exc:
        if exc.pgcode != _SYNTAX_ERROR:
            raise
        primary = exc.diag.message_primary or "syntax error"
        raise FailedPrecondition(
            f"the prompt is not a query the development orchestrator can run ({primary}); "
            + _NEEDS_ORCHESTRATOR,
            reason="ORCHESTRATOR_NOT_CONFIGURED",
        ) from None
    plan = row[0] if row is not None else []
    if isinstance(plan, str):
        plan = json.loads(plan)
    if _modifies(plan):
        raise FailedPrecondition(
            "the prompt's query modifies data (INSERT, UPDATE, DELETE or MERGE in a WITH); "
            + _ACCEPTS,
            reason="NOT_A_QUERY",
        )


def _modifies(plan: Any) -> bool:
    if isinstance(plan, dict):
        if plan.get("Node Type") == "ModifyTable":
            return True
        return any(_modifies(v) for v in plan.values())
    if isinstance(plan, list):
        return any(_modifies(v) for v in plan)
    return False


def _check_table(
    conn: Connection, ident: sql.Identifier, regclass: str, created: int
) -> tuple[str, int, list[dict[str, str]]]:
    """The validation step: the table holds the rows the query produced, in named columns."""
    with conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT count(*) FROM {}").format(ident))
        count_row = cur.fetchone()
        rows = int(count_row[0]) if count_row is not None else -1
        cur.execute(
            "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.oid = %s::regclass",
            (regclass,),
        )
        name_row = cur.fetchone()
        qualified = str(name_row[0]) if name_row is not None else regclass
        cur.execute(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            (regclass,),
        )
        columns = [{"name": str(name), "type": str(kind)} for name, kind in cur.fetchall()]
    if not columns:
        raise FailedPrecondition(
            f"the query returns no columns; a table needs at least one; {_ACCEPTS}",
            reason="VALIDATION_FAILED",
        )
    if rows != created:
        raise WorkflowError(
            f"validation failed: the query produced {created} rows but {qualified} holds {rows}",
            reason="VALIDATION_FAILED",
        )
    return qualified, rows, columns


def _exists(target_text: str) -> GatewayError:
    return WorkflowError(
        f"target_table {clip(target_text)!r} already exists; the development orchestrator only "
        "creates new tables (drop it, or choose another name)",
        kind=AlreadyExists,
        reason="TARGET_TABLE_EXISTS",
    )
