"""The embedded PostgreSQL keeps callers' SQL and values out of its own log file.

A failed statement's text (``STATEMENT:`` lines) and the values an error message quotes
may be secrets; the caller gets the error, the server log gets neither.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import psycopg2
import pytest

from datamorph_gateway.pg.server import EmbeddedPostgres

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("DATABASE_URL")),
    reason="starts its own embedded server; skipped when DATABASE_URL names the server",
)


def _fail(dsn: str, statement: str) -> None:
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur, pytest.raises(psycopg2.Error):
            cur.execute(statement)
    finally:
        conn.close()


def _settings(dsn: str, *names: str) -> list[str]:
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            return [_show(cur, name) for name in names]
    finally:
        conn.close()


def _show(cur: psycopg2.extensions.cursor, name: str) -> str:
    cur.execute("SELECT current_setting(%s)", (name,))
    row = cur.fetchone()
    assert row is not None
    return str(row[0])


def test_failed_statements_and_their_values_stay_out_of_the_server_log(tmp_path: Path) -> None:
    with EmbeddedPostgres(tmp_path / "pg" / "data") as pg:
        in_text = f"marker_text_{uuid.uuid4().hex}"
        in_value = f"marker_value_{uuid.uuid4().hex}"
        _fail(pg.dsn, f"SELECT '{in_text}' AS secret FROM no_such_table_at_all")
        _fail(pg.dsn, f"SELECT '{in_value}'::int")
        # Even a superuser's ALTER SYSTEM cannot turn statement logging back on.
        conn = psycopg2.connect(pg.dsn)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute("ALTER SYSTEM SET log_min_error_statement = 'error'")
                cur.execute("ALTER SYSTEM SET log_statement = 'all'")
                cur.execute("SELECT pg_reload_conf()")
        finally:
            conn.close()
        pg.restart()
        in_restarted = f"marker_restart_{uuid.uuid4().hex}"
        _fail(pg.dsn, f"SELECT '{in_restarted}' FROM no_such_table_at_all")
        assert _settings(
            pg.dsn, "log_min_error_statement", "log_statement", "log_min_duration_statement"
        ) == ["panic", "none", "-1"]
        log = pg.log_path.read_text(encoding="utf-8", errors="replace")
    assert log  # the server does log (start-up, shut-down)
    for marker in (in_text, in_value, in_restarted):
        assert marker not in log
