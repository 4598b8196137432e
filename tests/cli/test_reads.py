"""``datamorph health | schemas | sample | query`` against the live stack (Envoy, gateway,
PostgreSQL): what a person sees on a terminal, what a script gets through a pipe, and how
a failure is told."""

from __future__ import annotations

import csv
import io
import json
import subprocess

import pytest

from ..fixtures.cli import Cli, json_lines, plain, spawn
from ..fixtures.envoy import Sidecar

COMMANDS = ["health", "schemas", "sample", "query", "stream", "start", "logs"]


def test_query_prints_json_when_piped(cli: Cli) -> None:
    result = cli("query", "SELECT 1 AS x")
    assert (result.exit_code, result.stdout, result.stderr) == (0, '[{"x": 1}]\n', "")
    assert cli("query", "SELECT 1 AS x", "--output", "json").stdout == '[{"x": 1}]\n'


def test_the_console_script_piped_prints_json(envoy: Sidecar) -> None:
    """The installed ``datamorph`` in a real process, its stdout a pipe."""
    process = spawn(envoy.grpc_address, "query", "SELECT 1 AS x")
    out, err = process.communicate(timeout=60)
    assert (process.returncode, out, err) == (0, '[{"x": 1}]\n', "")


def test_values_print_as_the_contract_writes_them(cli: Cli) -> None:
    sql = (
        "SELECT 9007199254740993::int8 AS big, 7::int8 AS small, 1.10::numeric AS exact,"
        " 'NaN'::float8 AS nan, '\\x00ff'::bytea AS raw, '2024-02-29 13:45:00+00'::timestamptz"
        " AS at, ARRAY[1, NULL]::int4[] AS ints, '{\"a\": [1, 2.5]}'::jsonb AS doc,"
        " NULL::text AS nothing, true AS flag"
    )
    [row] = json.loads(cli("query", sql).stdout)
    assert row == {
        "big": "9007199254740993",  # beyond 2^53: a string, as REST sends it
        "small": 7,
        "exact": "1.10",
        "nan": "NaN",
        "raw": "AP8=",
        "at": "2024-02-29T13:45:00+00:00",
        "ints": [1, None],
        "doc": {"a": [1, 2.5]},
        "nothing": None,
        "flag": True,
    }
    [line] = json_lines(cli("query", sql, "-o", "ndjson").stdout)
    assert line == row
    rows = list(csv.reader(io.StringIO(cli("query", sql, "-o", "csv").stdout)))
    assert rows[0] == list(row)
    assert rows[1] == [
        "9007199254740993", "7", "1.10", "NaN", "\\x00ff", "2024-02-29T13:45:00+00:00",
        "[1,null]", '{"a":[1,2.5]}', "", "true",
    ]  # fmt: skip


def test_query_takes_params_and_read_only(cli: Cli) -> None:
    sql = "SELECT id, country FROM customers WHERE country = $1 ORDER BY id LIMIT $2"
    rows = json.loads(cli("query", sql, "-p", "DE", "-p", "3").stdout)
    assert len(rows) == 3
    assert {r["country"] for r in rows} == {"DE"}
    refused = cli("query", "CREATE TABLE cli_nope (a int)", "--read-only")
    assert refused.exit_code == 1
    assert refused.stdout == ""
    assert refused.stderr.startswith("error: ")
    assert "request id " in refused.stderr


def test_a_truncated_result_says_so(cli: Cli) -> None:
    result = cli("query", "SELECT g FROM generate_series(1, 5) g", "--max-rows", "2")
    assert json.loads(result.stdout) == [{"g": 1}, {"g": 2}]
    assert "only the first 2 rows" in result.stderr


def test_a_terminal_gets_tables(cli: Cli) -> None:
    result = cli("query", "SELECT 1 AS x, NULL::text AS y, 'a' AS z", terminal=True)
    assert result.exit_code == 0
    lines = plain(result.stdout).splitlines()
    assert any(" x " in line and " y " in line and " z " in line for line in lines)
    assert any(" 1 " in line and "NULL" in line and " a " in line for line in lines)
    assert lines[-1] == "1 row"
    created = cli("query", "CREATE TEMP TABLE cli_t (a int)", terminal=True)
    assert created.stdout == "CREATE TABLE 0\n"


def test_a_real_terminal_gets_a_table(envoy: Sidecar) -> None:
    """Under a pseudo-terminal, as a person runs it: no option, no variable."""
    import os
    import pty

    leader, follower = pty.openpty()
    try:
        process = spawn(envoy.grpc_address, "query", "SELECT 42 AS answer", stdout=follower)
        os.close(follower)
        _, err = process.communicate(timeout=60)
        seen = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the other side closed
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(leader)
    assert process.returncode == 0, err
    text = plain(seen.decode())
    assert "answer" in text
    assert "42" in text
    assert "┃" in text or "|" in text  # a table's rules, not JSON
    assert "[{" not in text


def test_health(cli: Cli) -> None:
    result = cli("health")
    assert result.exit_code == 0
    body = json.loads(result.stdout)
    assert body["status"] == "healthy"
    assert body["checks"]["database"]["status"] == "healthy"
    table = plain(cli("health", terminal=True).stdout)
    assert table.startswith("healthy  version ")
    assert "database" in table


def test_schemas(cli: Cli) -> None:
    body = json.loads(cli("schemas", "orders", "customers").stdout)
    assert list(body) == ["orders", "customers"]
    orders = body["orders"]
    assert orders["primary_keys"] == ["id"]
    assert orders["columns"][0]["column_name"] == "id"
    assert orders["foreign_keys"][0]["foreign_table_name"] == "customers"
    text = plain(cli("schemas", "orders", terminal=True).stdout)
    assert "public.orders (table)" in text
    assert "primary key: id" in text
    assert "foreign key: customer_id -> public.customers.id" in text


def test_sample(cli: Cli) -> None:
    body = json.loads(cli("sample", "customers", "--limit", "3").stdout)
    assert len(body["customers"]) == 3
    assert isinstance(body["customers"][0]["lifetime_value"], str)  # numeric: exact text
    text = plain(cli("sample", "customers", "-n", "2", terminal=True).stdout)
    assert "customers" in text
    assert "lifetime_value" in text


def test_an_error_is_one_line_with_its_reason_and_request_id(cli: Cli) -> None:
    result = cli("schemas", "no_such_table_for_cli")
    assert result.exit_code == 1
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith('error: table_names: no such table: "no_such_table_for_cli" (NOT_FOUND')
    assert "reason TABLE_NOT_FOUND" in line
    assert "request id " in line
    assert "Traceback" not in result.stderr
    multi = cli("query", "INSERT INTO orders (customer_id) VALUES (999999)")
    assert multi.exit_code == 1
    [line] = multi.stderr.splitlines()  # the database's DETAIL joins the same line
    assert "DETAIL:" in line
    assert "sqlstate 23503" in line


def test_an_unreachable_gateway_fails_cleanly() -> None:
    result = Cli("127.0.0.1:1")("health", "--output", "json")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ")
    assert "(UNAVAILABLE" in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["query"],  # a missing argument
        ["nope"],  # an unknown command
        ["query", "SELECT 1", "--output", "xml"],
        ["stream", "SELECT 1", "--output", "json"],
        ["health", "--output", "csv"],
        ["sample", "customers", "--limit", "0"],
        ["--cert-file", "c.pem", "health"],
        ["--ca-file", "/nonexistent/ca.pem", "health"],
    ],
)
def test_usage_errors_exit_2(cli: Cli, args: list[str]) -> None:
    result = cli(*args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_everywhere_with_examples(cli: Cli, command: str | None) -> None:
    result = cli(*([command] if command else []), "--help")
    assert result.exit_code == 0
    assert "datamorph " in result.stdout  # an example line
    assert "Usage: datamorph" in result.stdout


def test_help_lists_every_command_and_the_global_options(envoy: Sidecar) -> None:
    process = spawn(envoy.grpc_address, "--help")
    out, _ = process.communicate(timeout=60)
    assert process.returncode == 0
    for word in [*COMMANDS, "--gateway", "DATAMORPH_GATEWAY", "--api-key", "--token", "--aws-iam"]:
        assert word in out
    assert "--ca-file" in out


def test_no_command_shows_help() -> None:
    process = subprocess.run(
        [str(spawn.__globals__["DATAMORPH"])],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert process.returncode == 2
    assert "Usage: datamorph" in process.stdout + process.stderr
