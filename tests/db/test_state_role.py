"""The gateway's own tables belong to the state role (DB_STATE_USER), out of callers' reach.

Caller SQL runs as the serving role; roles.sql makes the state role the owner of schema
``datamorph_gateway`` and leaves the serving role nothing there, so no caller can read or
forge other callers' workflow logs, idempotency outcomes or leases. The session's gateways
run with the session's state role (tests/fixtures/roles.py): every workflow test runs in
this configuration. A real PostgreSQL refuses here, not the gateway's SQL policy, which the
``unchecked`` gateway lets everything through.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import grpc
import psycopg2
import pytest
from psycopg2.extensions import parse_dsn

from datamorph_client import GatewayClient, GatewayError
from datamorph_gateway.app import Gateway
from datamorph_gateway.errors import ConfigError
from datamorph_gateway.pg.passfile import PasswordFile

from ..fixtures.gateway import GatewayFactory, gateway_settings
from ..fixtures.roles import own_tables_dsn, roles_for

TABLES = (
    "datamorph_gateway.workflow_runs",
    "datamorph_gateway.workflow_log_entries",
    "datamorph_gateway.idempotency_keys",
    "datamorph_gateway.run_leases",
)
STATEMENTS = {
    "select": "SELECT * FROM {table}",
    "insert": "INSERT INTO {table} DEFAULT VALUES",
    "update": "UPDATE {table} SET {column} = {column}",
    "delete": "DELETE FROM {table}",
    "truncate": "TRUNCATE {table}",
    "drop": "DROP TABLE {table}",
    "own": "ALTER TABLE {table} OWNER TO CURRENT_USER",
    "grant": "GRANT ALL ON {table} TO CURRENT_USER",
}
COLUMNS = {
    "datamorph_gateway.workflow_runs": "entry_count",
    "datamorph_gateway.workflow_log_entries": "seq",
    "datamorph_gateway.idempotency_keys": "outcome",
    "datamorph_gateway.run_leases": "gateway",
}


def fetch(dsn: str, query: str) -> list[tuple[Any, ...]]:
    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(query)
            return cur.fetchall()
    finally:
        conn.close()


@pytest.fixture
def unchecked(make_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch) -> GatewayClient:
    """A gateway (with its own tables made) whose SQL policy lets everything through."""
    gateway = make_gateway()
    monkeypatch.setattr(gateway.servicer._check.policy, "check", lambda *args, **kwargs: None)
    return GatewayClient(gateway.address, timeout_s=20)


def test_the_state_role_owns_the_schema_and_every_table_in_it(
    make_gateway: GatewayFactory, seeded_database: str
) -> None:
    made = roles_for(seeded_database)
    assert made is not None
    make_gateway()  # creates the tables
    owners = fetch(
        own_tables_dsn(seeded_database),
        "SELECT c.relname::text, pg_get_userbyid(c.relowner)::text FROM pg_class c"
        " WHERE c.relnamespace = 'datamorph_gateway'::regnamespace AND c.relkind = 'r'"
        " UNION ALL SELECT nspname::text, pg_get_userbyid(nspowner)::text FROM pg_namespace"
        " WHERE nspname = 'datamorph_gateway' ORDER BY 1",
    )
    assert {f"datamorph_gateway.{name}" for name, _ in owners} >= set(TABLES)
    assert {owner for _, owner in owners} == {made.state}


@pytest.mark.parametrize("table", TABLES)
@pytest.mark.parametrize("statement", sorted(STATEMENTS))
def test_caller_sql_is_denied_the_gateways_own_tables(
    unchecked: GatewayClient, table: str, statement: str
) -> None:
    query = STATEMENTS[statement].format(table=table, column=COLUMNS[table])
    with pytest.raises(GatewayError) as err:
        unchecked.execute_query(query)
    assert err.value.code == grpc.StatusCode.PERMISSION_DENIED, (query, err.value)
    assert err.value.metadata.get("sqlstate") == "42501", (query, err.value)


@pytest.mark.parametrize(
    "query",
    [
        "SET ROLE {state}",
        "GRANT USAGE ON SCHEMA datamorph_gateway TO CURRENT_USER",
        "ALTER SCHEMA datamorph_gateway OWNER TO CURRENT_USER",
        "DROP SCHEMA datamorph_gateway CASCADE",
        "CREATE TABLE datamorph_gateway.planted (n int)",
    ],
)
def test_caller_sql_cannot_become_the_state_role_or_take_the_schema(
    unchecked: GatewayClient, seeded_database: str, query: str
) -> None:
    made = roles_for(seeded_database)
    assert made is not None
    with pytest.raises(GatewayError) as err:
        unchecked.execute_query(query.format(state=f'"{made.state}"'))
    assert err.value.code == grpc.StatusCode.PERMISSION_DENIED, (query, err.value)
    assert err.value.metadata.get("sqlstate") == "42501", (query, err.value)


def test_workflow_logs_and_keys_are_kept_as_the_state_role(
    make_gateway: GatewayFactory, seeded_database: str
) -> None:
    """StartWorkflow and GetLogs end to end, with DB_STATE_USER: the run's log and its key
    are in the state role's tables, which the serving role cannot read."""
    made = roles_for(seeded_database)
    assert made is not None
    gateway = make_gateway()
    assert gateway.database.roles.state is not None
    key = f"state-role-{gateway.port}"
    with GatewayClient(gateway.address, timeout_s=30) as c:
        started = c.start_workflow(
            prompt="SELECT id FROM customers WHERE id <= 3",
            source_tables=["customers"],
            target_table=f"state_role_{gateway.port}",
            idempotency_key=key,
        )
        logs = c.get_logs(started.run_id)
    assert [e.type for e in logs.logs][-1] == "end"
    state = own_tables_dsn(seeded_database)
    assert fetch(
        state,
        f"SELECT count(*) FROM datamorph_gateway.workflow_log_entries"
        f" WHERE run_id = '{started.run_id}'",
    ) == [(len(logs.logs),)]
    assert fetch(
        state, f"SELECT run_id FROM datamorph_gateway.idempotency_keys WHERE key = '{key}'"
    ) == [(started.run_id,)]
    with pytest.raises(psycopg2.errors.InsufficientPrivilege):
        fetch(seeded_database, "SELECT count(*) FROM datamorph_gateway.workflow_log_entries")


def test_a_superuser_state_role_is_refused_at_start(server_url: str, seeded_database: str) -> None:
    superuser = parse_dsn(server_url)
    role = superuser.get("user") or "postgres"
    password = superuser.get("password", "")
    if not password and superuser.get("passfile"):
        password = PasswordFile(Path(superuser["passfile"]), "*").get(role) or ""
    settings = gateway_settings(
        seeded_database, db_pool_min=0, db_state_user=role, db_state_password=password
    )
    with pytest.raises(ConfigError) as err:
        Gateway(settings)
    assert f"database role {role!r} (state role) is a superuser" in str(err.value)


def test_without_a_state_role_the_start_says_who_can_change_the_tables(
    seeded_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="datamorph_gateway")
    gateway = Gateway(
        gateway_settings(
            seeded_database,
            db_pool_min=0,
            log_store="dynamodb",
            idempotency_store="memory",
            run_lease_s=0,
            db_state_user="",
        )
    )
    try:
        assert gateway.database.roles.own_tables is gateway.database.roles.serving
    finally:
        gateway.stop(0)
    said = [r.getMessage() for r in caplog.records if "DB_STATE_USER is not set" in r.getMessage()]
    assert len(said) == 1
    assert "callers who may write can also read and change them" in said[0]
