"""ExecuteQuery: results, DML, parameters, read-only, row caps, timeouts, rollback."""

from __future__ import annotations

import datetime
import uuid

import grpc
import psycopg2
import pytest

from datamorph_client import GatewayClient, GatewayError
from datamorph_gateway.db.query import command_verb, unique_keys

from ..fixtures.gateway import GatewayFactory


def scratch_table(client: GatewayClient) -> str:
    name = f"scratch_{uuid.uuid4().hex[:8]}"
    client.execute_query(f"CREATE TABLE {name} (id int PRIMARY KEY, label text)")
    return name


def count(database_url: str, table: str) -> int:
    conn = psycopg2.connect(database_url)
    try:
        with conn.cursor() as cur:
            cur.execute(f"SELECT count(*) FROM {table}")
            row = cur.fetchone()
            assert row is not None
            return int(row[0])
    finally:
        conn.close()


def test_select_returns_columns_and_rows(client: GatewayClient) -> None:
    result = client.execute_query("SELECT id, name FROM customers ORDER BY id LIMIT 3")
    assert [(c.name, c.type) for c in result.columns] == [("id", "int8"), ("name", "text")]
    assert [r["id"] for r in result.rows] == [1, 2, 3]
    assert result.row_count == 3
    assert result.command == "SELECT"
    assert result.rows_affected == 0
    assert result.truncated is False


def test_dml_commits_and_reports_rows_affected(client: GatewayClient, seeded_database: str) -> None:
    table = scratch_table(client)
    result = client.execute_query(f"INSERT INTO {table} SELECT g, 'x' FROM generate_series(1, 4) g")
    assert (result.command, result.rows_affected, result.columns) == ("INSERT", 4, [])
    assert count(seeded_database, table) == 4
    updated = client.execute_query(f"UPDATE {table} SET label = 'y' WHERE id > 1")
    assert (updated.command, updated.rows_affected) == ("UPDATE", 3)
    returning = client.execute_query(f"DELETE FROM {table} WHERE id = 1 RETURNING id, label")
    assert returning.command == "DELETE"
    assert returning.rows_affected == 1
    assert returning.rows == [{"id": 1, "label": "x"}]


def test_ddl_reports_its_command(client: GatewayClient) -> None:
    name = f"ddl_{uuid.uuid4().hex[:8]}"
    assert client.execute_query(f"CREATE TABLE {name} (a int)").command == "CREATE TABLE"
    assert client.execute_query(f"DROP TABLE {name}").command == "DROP TABLE"


def test_failing_multi_statement_query_rolls_everything_back(
    client: GatewayClient, seeded_database: str
) -> None:
    table = scratch_table(client)
    with pytest.raises(GatewayError) as err:
        client.execute_query(
            f"INSERT INTO {table} VALUES (1, 'a'); INSERT INTO {table} VALUES (2, 'b');"
            f" INSERT INTO {table} VALUES (1, 'duplicate')"
        )
    assert err.value.code == grpc.StatusCode.ALREADY_EXISTS
    assert err.value.sqlstate == "23505"
    assert count(seeded_database, table) == 0


def test_multi_statement_returns_the_last_result(client: GatewayClient) -> None:
    result = client.execute_query("SELECT 1 AS a; SELECT 2 AS b, 3 AS c")
    assert result.rows == [{"b": 2, "c": 3}]


def test_positional_parameters(client: GatewayClient) -> None:
    result = client.execute_query(
        "SELECT $1::int + $2 AS total, $3::text AS s, $4::jsonb AS doc, $5::int[] AS arr,"
        " $6 IS NULL AS nothing, '100%' AS pct, $$ $1 $$ AS literal",
        [40, 2, "it's; DROP TABLE customers --", {"k": [1, "two"]}, [1, 2, 3], None],
    )
    [row] = result.rows
    assert row == {
        "total": 42,
        "s": "it's; DROP TABLE customers --",
        "doc": {"k": [1, "two"]},
        "arr": [1, 2, 3],
        "nothing": True,
        "pct": "100%",
        "literal": " $1 ",
    }


def test_a_negative_parameter_is_one_value_whatever_surrounds_it(client: GatewayClient) -> None:
    """psycopg2 pastes values into the text: a bare -32768 next to a cast would be
    -(32768::smallint), out of range, and 5-$1 with -3 would be 5--3, a comment."""
    result = client.execute_query(
        "SELECT $1::smallint AS small, $2::int AS int, 5-$3 AS diff, $4::float8 AS f,"
        " $5::int[] AS arr, -$6 AS neg",
        [-32768, -2147483648, -3, -1.5, [-1, 2], -7],
    )
    assert result.rows == [
        {"small": -32768, "int": -2147483648, "diff": 8, "f": -1.5, "arr": [-1, 2], "neg": 7}
    ]


def test_parameters_work_where_values_must_be_integers(client: GatewayClient) -> None:
    result = client.execute_query("SELECT id FROM customers ORDER BY id LIMIT $1", [2])
    assert [r["id"] for r in result.rows] == [1, 2]


@pytest.mark.parametrize(
    ("query", "params", "fragment"),
    [
        ("SELECT $1, $2", [1], "placeholders run from $1 to $2"),
        ("SELECT $1", [1, 2], "placeholders run from $1 to $1"),
        ("SELECT 1", [1], "no $n placeholders"),
        ("SELECT $0", [1], "placeholders run from $1 to $0"),
    ],
)
def test_parameter_count_must_match(
    client: GatewayClient, query: str, params: list[object], fragment: str
) -> None:
    with pytest.raises(GatewayError) as err:
        client.execute_query(query, params)
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.violations[0].field == "params"
    assert fragment in err.value.message


def test_read_only_refuses_writes(client: GatewayClient, seeded_database: str) -> None:
    table = scratch_table(client)
    with pytest.raises(GatewayError) as err:
        client.execute_query(f"INSERT INTO {table} VALUES (1, 'a')", read_only=True)
    assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert err.value.sqlstate == "25006"
    assert count(seeded_database, table) == 0
    assert client.execute_query("SELECT 1 AS one", read_only=True).rows == [{"one": 1}]


def test_read_only_must_be_one_statement(client: GatewayClient) -> None:
    with pytest.raises(GatewayError) as err:
        client.execute_query("SELECT 1; SELECT 2", read_only=True)
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "single statement" in err.value.message


@pytest.mark.parametrize(
    "query",
    [
        "COMMIT",
        "SELECT 1; COMMIT; DROP TABLE customers",
        "begin",
        "ROLLBACK",
        "end",
        "SAVEPOINT a",
        "SELECT 1; RELEASE SAVEPOINT a",
        "start transaction read write",
        "PREPARE TRANSACTION 'x'",
    ],
)
def test_transaction_control_is_refused(client: GatewayClient, query: str) -> None:
    with pytest.raises(GatewayError) as err:
        client.execute_query(query)
    assert err.value.code == grpc.StatusCode.PERMISSION_DENIED
    assert err.value.violations[0].field == "query"
    assert "transaction control" in err.value.message


def test_row_cap_truncates_and_says_so(client: GatewayClient) -> None:
    result = client.execute_query("SELECT g FROM generate_series(1, 50) g", max_rows=7)
    assert result.row_count == 7
    assert result.truncated is True
    exact = client.execute_query("SELECT g FROM generate_series(1, 7) g", max_rows=7)
    assert exact.truncated is False


def test_row_cap_applies_to_returning_rows(client: GatewayClient, seeded_database: str) -> None:
    table = scratch_table(client)
    result = client.execute_query(
        f"INSERT INTO {table} SELECT g, 'r' FROM generate_series(1, 20) g RETURNING id", max_rows=5
    )
    assert (result.row_count, result.truncated, result.rows_affected) == (5, True, 20)
    assert count(seeded_database, table) == 20


@pytest.mark.parametrize("max_rows", [0, -5, 10_001])
def test_max_rows_out_of_range_is_invalid(client: GatewayClient, max_rows: int) -> None:
    with pytest.raises(GatewayError) as err:
        client.execute_query("SELECT 1", max_rows=max_rows)
    assert err.value.violations[0].field == "max_rows"


def test_duplicate_column_names_keep_every_value(client: GatewayClient) -> None:
    result = client.execute_query("SELECT 1 AS a, 2 AS a, 3 AS a_2, 4 AS a")
    assert [c.name for c in result.columns] == ["a", "a", "a_2", "a"]
    assert [c.key for c in result.columns] == ["a", "a_3", "a_2", "a_4"]
    assert result.rows == [{"a": 1, "a_3": 2, "a_2": 3, "a_4": 4}]
    arrays = client.execute_query("SELECT 1 AS a, 2 AS a", row_format="array")
    assert arrays.rows == [[1, 2]]


def test_data_modifying_with_and_select_into_fall_back_from_the_cursor(
    client: GatewayClient, seeded_database: str
) -> None:
    table = scratch_table(client)
    result = client.execute_query(
        f"WITH ins AS (INSERT INTO {table} VALUES (1, 'w') RETURNING id) SELECT id FROM ins"
    )
    assert result.rows == [{"id": 1}]
    target = f"into_{uuid.uuid4().hex[:8]}"
    created = client.execute_query(f"SELECT id INTO {target} FROM {table}")
    assert created.rows_affected == 1
    assert count(seeded_database, target) == 1


def test_session_state_does_not_leak_between_requests(make_gateway: GatewayFactory) -> None:
    gateway = make_gateway(db_pool_max=1)
    with GatewayClient(gateway.address) as c:
        c.execute_query("SET DateStyle = 'German'; CREATE TEMP TABLE leftover (a int)")
        result = c.execute_query("SELECT '2024-01-02'::date AS d, current_setting('DateStyle') s")
        assert result.rows == [{"d": datetime.date(2024, 1, 2), "s": "ISO, YMD"}]
        assert c.execute_query("SELECT to_regclass('leftover') AS t").rows == [{"t": None}]


def test_deadline_becomes_the_statement_timeout(client: GatewayClient) -> None:
    with pytest.raises(GatewayError) as err:
        client.execute_query("SELECT pg_sleep(10)", timeout_s=0.5)
    assert err.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    # The statement was cancelled on the server, so the pool is free again at once.
    assert client.execute_query("SELECT 1 AS ok").rows == [{"ok": 1}]


def test_server_statement_timeout_caps_requests_without_deadline(
    make_gateway: GatewayFactory,
) -> None:
    gateway = make_gateway(statement_timeout_s=0.3)
    with GatewayClient(gateway.address, timeout_s=30) as c, pytest.raises(GatewayError) as err:
        c.execute_query("SELECT pg_sleep(5)")
    assert err.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert err.value.sqlstate == "57014"


def test_command_verb() -> None:
    assert command_verb("INSERT 0 3") == "INSERT"
    assert command_verb("CREATE TABLE") == "CREATE TABLE"
    assert command_verb("SELECT 5") == "SELECT"


def test_unique_keys() -> None:
    assert unique_keys(["a", "b"]) == ["a", "b"]
    assert unique_keys(["?column?", "?column?"]) == ["?column?", "?column?_2"]


def test_a_failed_query_leaves_no_session_state(make_gateway: GatewayFactory) -> None:
    """A rolled-back transaction keeps PREPAREs and session advisory locks: reset them too."""
    gateway = make_gateway(db_pool_max=1)
    key = 424242
    with GatewayClient(gateway.address) as c:
        with pytest.raises(GatewayError) as err:
            c.execute_query(
                f"SELECT pg_advisory_lock({key}); PREPARE leftover AS SELECT 1; SELECT 1/0"
            )
        assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT  # division by zero
        held = c.execute_query(
            "SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory' AND objid = $1",
            params=[key],
        )
        assert held.rows == [{"n": 0}]
        prepared = c.execute_query(
            "SELECT count(*) AS n FROM pg_prepared_statements WHERE name = 'leftover'"
        )
        assert prepared.rows == [{"n": 0}]
        # The gateway's own prepared statements come back on the same, only connection.
        assert c.get_schemas(["customers"])["customers"].name == "customers"
