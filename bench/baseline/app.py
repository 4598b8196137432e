"""The original Flask gateway, rebuilt from its design doc as the benchmark's baseline.

Kept faithful on purpose, costs included: a new psycopg2 connection per request,
RealDictCursor rows, three catalog queries per table for /get/schemas, and
``ORDER BY RANDOM() LIMIT n`` sampling, served by gunicorn with 4 sync workers
(see bench/stack.py). Two deliberate differences, neither changing what is measured:
table names are quoted as identifiers instead of pasted into the SQL text, and /start
answers 501 because there is no orchestrator Lambda to invoke here. It lives only
under bench/ and is never shipped.
"""

from __future__ import annotations

import logging
import os
import random
import time
from logging.handlers import RotatingFileHandler
from typing import Any

import psycopg2
from flask import Flask, Response, jsonify, request
from psycopg2 import sql
from psycopg2.extras import RealDictCursor

VERSION = "flask-baseline"
CONNECT_ATTEMPTS = 3

app = Flask(__name__)
log = logging.getLogger("flask_app")


def _configure_logging() -> None:
    """File logging with rotation, one line per request and query, as the design describes."""
    path = os.environ.get("BASELINE_LOG_FILE", "")
    if not path or log.handlers:
        return
    handler = RotatingFileHandler(path, maxBytes=10 * 1024 * 1024, backupCount=5)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(funcName)s:%(lineno)d %(message)s")
    )
    log.addHandler(handler)
    log.setLevel(logging.INFO)


_configure_logging()


def get_db_connection() -> psycopg2.extensions.connection:
    """A new connection per request, retried with exponential backoff on connection errors."""
    dsn = os.environ["BASELINE_DSN"]
    for attempt in range(CONNECT_ATTEMPTS):
        try:
            return psycopg2.connect(dsn)
        except psycopg2.OperationalError:
            if attempt == CONNECT_ATTEMPTS - 1:
                raise
            time.sleep(0.1 * 2**attempt * (1 + random.random()))  # noqa: S311 - jitter
    raise AssertionError("unreachable")


def _split(name: str) -> tuple[str, str]:
    schema, _, table = name.rpartition(".")
    return schema or "public", table


def _error(message: str, status: int) -> tuple[Response, int]:
    return jsonify({"status": "error", "message": message}), status


def _table_names() -> list[str] | None:
    body = request.get_json(silent=True) or {}
    names = body.get("table_names")
    if not isinstance(names, list) or not names:
        return None
    return [str(n) for n in names]


@app.route("/health", methods=["GET"])
def health() -> Any:
    start = time.perf_counter()
    try:
        conn = get_db_connection()
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
                cur.fetchone()
        finally:
            conn.close()
    except psycopg2.Error as exc:
        log.error("health check failed: %s", exc)
        body = {"status": "unhealthy", "checks": {"database": {"status": "unhealthy"}}}
        return jsonify(body), 503
    latency_ms = (time.perf_counter() - start) * 1000
    checks = {"database": {"status": "healthy", "latency_ms": latency_ms}}
    return jsonify({"status": "healthy", "checks": checks, "version": VERSION})


_COLUMNS = """
SELECT column_name, data_type, is_nullable, column_default, ordinal_position,
       character_maximum_length, numeric_precision, numeric_scale
  FROM information_schema.columns
 WHERE table_schema = %s AND table_name = %s
 ORDER BY ordinal_position
"""
_PRIMARY_KEYS = """
SELECT a.attname AS column_name
  FROM pg_index i
  JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
 WHERE i.indrelid = %s::regclass AND i.indisprimary
"""
_FOREIGN_KEYS = """
SELECT kcu.column_name, ccu.table_schema AS foreign_table_schema,
       ccu.table_name AS foreign_table_name, ccu.column_name AS foreign_column_name,
       tc.constraint_name
  FROM information_schema.table_constraints AS tc
  JOIN information_schema.key_column_usage AS kcu
    ON tc.constraint_name = kcu.constraint_name AND tc.table_schema = kcu.table_schema
  JOIN information_schema.constraint_column_usage AS ccu
    ON ccu.constraint_name = tc.constraint_name AND ccu.table_schema = tc.table_schema
 WHERE tc.constraint_type = 'FOREIGN KEY' AND tc.table_schema = %s AND tc.table_name = %s
"""


@app.route("/get/schemas", methods=["POST"])
def get_schemas() -> Any:
    names = _table_names()
    if names is None:
        return _error("table_names must be a non-empty list", 400)
    log.info("get_schemas %s", names)
    conn = get_db_connection()
    try:
        schemas: dict[str, Any] = {}
        with conn.cursor(cursor_factory=RealDictCursor) as cur:
            for name in names:
                schema, table = _split(name)
                cur.execute(_COLUMNS, (schema, table))
                columns = cur.fetchall()
                if not columns:
                    return _error(f"Table {name} not found", 404)
                cur.execute(_PRIMARY_KEYS, (f"{schema}.{table}",))
                primary_keys = [row["column_name"] for row in cur.fetchall()]
                cur.execute(_FOREIGN_KEYS, (schema, table))
                foreign_keys = cur.fetchall()
                schemas[name] = {
                    "table_name": table,
                    "schema": schema,
                    "columns": columns,
                    "primary_keys": primary_keys,
                    "foreign_keys": foreign_keys,
                }
        return jsonify({"status": "success", "schemas": schemas})
    except psycopg2.Error as exc:
        log.error("get_schemas failed: %s", exc)
        return _error(str(exc).strip(), 500)
    finally:
        conn.close()


@app.route("/get/data", methods=["POST"])
def get_data() -> Any:
    names = _table_names()
    if names is None:
        return _error("table_names must be a non-empty list", 400)
    limit = int((request.get_json(silent=True) or {}).get("limit", 10))
    log.info("get_data %s limit=%d", names, limit)
    conn = get_db_connection()
    try:
        data: dict[str, Any] = {}
        with conn.cursor(cursor_factory=RealDictCursor) as cur:
            for name in names:
                schema, table = _split(name)
                cur.execute(
                    sql.SQL("SELECT * FROM {} ORDER BY RANDOM() LIMIT %s").format(
                        sql.Identifier(schema, table)
                    ),
                    (limit,),
                )
                data[name] = cur.fetchall()
        return jsonify({"status": "success", "data": data})
    except psycopg2.Error as exc:
        log.error("get_data failed: %s", exc)
        return _error(str(exc).strip(), 500)
    finally:
        conn.close()


@app.route("/execute/query", methods=["POST"])
def execute_query() -> Any:
    query = (request.get_json(silent=True) or {}).get("query")
    if not isinstance(query, str) or not query.strip():
        return _error("query is required", 400)
    log.info("execute_query: %s", query)
    conn = get_db_connection()
    try:
        with conn.cursor(cursor_factory=RealDictCursor) as cur:
            cur.execute(query)
            if cur.description is None:
                conn.commit()
                return jsonify({"status": "success", "rows_affected": cur.rowcount})
            rows = cur.fetchall()
            columns = [{"name": d.name, "type": d.type_code} for d in cur.description]
        conn.commit()
        return jsonify(
            {"status": "success", "columns": columns, "rows": rows, "row_count": len(rows)}
        )
    except psycopg2.Error as exc:
        conn.rollback()
        log.error("execute_query failed: %s", exc)
        return _error(str(exc).strip(), 400)
    finally:
        conn.close()


@app.route("/start", methods=["POST"])
def start() -> Any:
    return _error("the orchestrator Lambda is not available to the benchmark baseline", 501)
