"""No superuser on the serving path (issue 10): roles, the start-up check, TLS to the database.

Everything here runs on a real PostgreSQL (the embedded one, or DATABASE_URL's): the
session's roles come from deploy/sql/roles.sql (tests/fixtures/roles.py), so what these
tests see is what a deployment's DBA gets from that script.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
from psycopg2 import sql
from psycopg2.extensions import make_dsn, parse_dsn

from datamorph_client import GatewayClient, GatewayError
from datamorph_gateway.app import Gateway
from datamorph_gateway.config import Settings
from datamorph_gateway.db.connect import RoleDsns
from datamorph_gateway.db.privileges import PRIVILEGED_ROLES
from datamorph_gateway.errors import ConfigError

from .fixtures.gateway import GatewayFactory, gateway_settings
from .fixtures.roles import roles_for


def _who(client: GatewayClient, *, read_only: bool) -> dict[str, object]:
    result = client.execute_query(
        "SELECT current_user::text AS role, r.rolsuper AS superuser,"
        " current_setting('default_transaction_read_only') AS read_only_default"
        " FROM pg_roles r WHERE r.rolname = current_user",
        read_only=read_only,
    )
    return dict(result.rows[0])


def test_the_gateway_serves_as_a_role_without_superuser(
    client: GatewayClient, seeded_database: str
) -> None:
    made = roles_for(seeded_database)
    assert made is not None
    assert _who(client, read_only=False) == {
        "role": made.app,
        "superuser": False,
        "read_only_default": "off",
    }
    # read_only requests run on the second pool, as the reader role.
    assert _who(client, read_only=True) == {
        "role": made.reader,
        "superuser": False,
        "read_only_default": "on",
    }
    rows = client.execute_query(
        "SELECT count(*) AS n FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid"
        " WHERE m.member = (SELECT oid FROM pg_roles WHERE rolname = current_user)"
        " AND g.rolname = ANY($1::text[])",
        ["{" + ",".join(PRIVILEGED_ROLES) + "}"],
    ).rows
    assert rows == [{"n": 0}]


@pytest.fixture
def unchecked(make_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch) -> GatewayClient:
    """A gateway whose own SQL policy lets everything through: PostgreSQL must refuse."""
    gateway = make_gateway()
    monkeypatch.setattr(gateway.servicer._policy, "check", lambda *args, **kwargs: None)
    return GatewayClient(gateway.address, timeout_s=20)


@pytest.mark.parametrize(
    ("query", "refused"),
    [
        ("COPY (SELECT 1) TO PROGRAM 'touch /tmp/dmgw-pwned'", "42501"),
        ("COPY pg_catalog.pg_class FROM PROGRAM 'id'", "42501"),
        ("SELECT pg_read_file('/etc/passwd')", "42501"),
        ("SELECT pg_read_binary_file('postgresql.conf')", "42501"),
        ("SELECT pg_ls_dir('.')", "42501"),
        ("SELECT lo_import('/etc/passwd')", "42501"),
        ("COPY (SELECT 1) TO '/tmp/dmgw-pwned'", "42501"),
        ("CREATE ROLE dmgw_intruder SUPERUSER", "42501"),
        ("SET ROLE postgres", "42501"),
        ("SELECT pg_reload_conf()", "42501"),
    ],
)
def test_postgresql_itself_refuses_what_reaches_outside_the_database(
    unchecked: GatewayClient, query: str, refused: str
) -> None:
    with pytest.raises(GatewayError) as err:
        unchecked.execute_query(query)
    assert err.value.metadata.get("sqlstate") == refused, err.value
    assert not Path("/tmp/dmgw-pwned").exists()  # noqa: S108 - the path the attack names


def test_caller_sql_cannot_signal_the_gateways_other_sessions(
    unchecked: GatewayClient,
) -> None:
    with pytest.raises(GatewayError) as err:
        unchecked.execute_query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid()"
        )
    assert err.value.metadata.get("sqlstate") == "42501"
    with pytest.raises(GatewayError) as err:
        unchecked.execute_query("SELECT pg_cancel_backend(pg_backend_pid())")
    assert err.value.metadata.get("sqlstate") == "42501"


def test_a_read_only_write_is_refused_by_the_reader_role_itself(
    unchecked: GatewayClient, seeded_database: str
) -> None:
    # Through the gateway (its own checks off): the transaction is read-only.
    with pytest.raises(GatewayError) as err:
        unchecked.execute_query("DELETE FROM customers", read_only=True)
    assert err.value.metadata.get("sqlstate") in ("25006", "42501")
    # And the role: even in a read-write transaction it may not write.
    made = roles_for(seeded_database)
    assert made is not None
    conn = psycopg2.connect(made.dsn(made.reader))
    try:
        with conn.cursor() as cur:
            cur.execute("SET default_transaction_read_only = off")
            conn.commit()
            cur.execute("BEGIN READ WRITE")
            for statement in (
                "DELETE FROM customers",
                "INSERT INTO customers (name) VALUES ('x')",
                "CREATE TABLE public.reader_was_here (a int)",
                "TRUNCATE orders",
            ):
                with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                    cur.execute(statement)
                conn.rollback()
                cur.execute("BEGIN READ WRITE")
            cur.execute("SELECT count(*) FROM customers")
            assert cur.fetchone()[0] > 0
    finally:
        conn.close()
    count = unchecked.execute_query("SELECT count(*) AS n FROM customers", read_only=True).rows
    assert count[0]["n"] > 0


def test_the_reader_sees_tables_the_app_creates_later(client: GatewayClient) -> None:
    name = f"later_{uuid.uuid4().hex[:8]}"
    client.execute_query(
        f"CREATE SCHEMA {name}; CREATE TABLE {name}.t (a int); INSERT INTO {name}.t VALUES (7)"
    )
    assert client.execute_query(f"SELECT a FROM {name}.t", read_only=True).rows == [{"a": 7}]
    client.execute_query(f"DROP SCHEMA {name} CASCADE")


# -- the start-up check ----------------------------------------------------------------------


def test_a_superuser_login_is_refused_at_start_with_the_fix(server_url: str) -> None:
    settings = gateway_settings(server_url, db_pool_min=0)
    with pytest.raises(ConfigError) as err:
        Gateway(settings)
    message = str(err.value)
    role = parse_dsn(server_url).get("user") or "postgres"
    assert f"database role {role!r} (serving role) is a superuser" in message
    assert "deploy/sql/roles.sql" in message
    assert "DB_ALLOW_PRIVILEGED=true" in message
    assert "\n" not in message


def test_a_superuser_is_served_only_when_allowed_and_then_with_a_warning(
    server_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="datamorph_gateway")
    gateway = Gateway(gateway_settings(server_url, db_pool_min=0, db_allow_privileged=True))
    try:
        gateway.start()
        with GatewayClient(gateway.address, timeout_s=10) as c:
            assert c.execute_query("SELECT 1 AS one").rows == [{"one": 1}]
    finally:
        gateway.stop(0)
    warnings = [
        r.getMessage() for r in caplog.records if "DB_ALLOW_PRIVILEGED=true" in r.getMessage()
    ]
    assert len(warnings) == 1
    assert "superuser" in warnings[0]


@pytest.fixture
def plain_role(server_url: str, seeded_database: str) -> Iterator[tuple[str, str]]:
    """A login role with nothing (yet), and its DSN on the session database."""
    made = roles_for(seeded_database)
    assert made is not None
    role = f"dmgw_plain_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(server_url)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
            cur.execute(
                sql.SQL("GRANT {} TO {}").format(sql.Identifier(made.app), sql.Identifier(role))
            )
            verifier = psycopg2.extensions.encrypt_password(
                "plain-pw", role, admin, "scram-sha-256"
            )
            cur.execute(
                sql.SQL("ALTER ROLE {} PASSWORD %s").format(sql.Identifier(role)), (verifier,)
            )
        params = parse_dsn(seeded_database)
        params.pop("passfile", None)
        yield role, make_dsn(**dict(params, user=role, password="plain-pw"))
    finally:
        with admin.cursor() as cur:
            cur.execute(
                sql.SQL("REVOKE {} FROM {}").format(sql.Identifier(made.app), sql.Identifier(role))
            )
            for granted in PRIVILEGED_ROLES:
                cur.execute(
                    sql.SQL("REVOKE {} FROM {}").format(
                        sql.Identifier(granted), sql.Identifier(role)
                    )
                )
            cur.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
        admin.close()


@pytest.mark.parametrize("granted", PRIVILEGED_ROLES)
def test_a_member_of_a_privileged_predefined_role_is_refused(
    server_url: str, plain_role: tuple[str, str], granted: str
) -> None:
    role, dsn = plain_role
    admin = psycopg2.connect(server_url)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(
                sql.SQL("GRANT {} TO {}").format(sql.Identifier(granted), sql.Identifier(role))
            )
    finally:
        admin.close()
    with pytest.raises(ConfigError) as err:
        Gateway(gateway_settings(dsn, db_pool_min=0))
    assert f"database role {role!r} (serving role) is a member of {granted}" in str(err.value)


def test_a_role_granted_more_after_start_is_refused_on_its_next_connection(
    server_url: str, plain_role: tuple[str, str]
) -> None:
    role, dsn = plain_role
    gateway = Gateway(gateway_settings(dsn, db_pool_min=0))
    gateway.start()
    try:
        admin = psycopg2.connect(server_url)
        admin.autocommit = True
        try:
            with admin.cursor() as cur:
                cur.execute(
                    sql.SQL("GRANT pg_execute_server_program TO {}").format(sql.Identifier(role))
                )
        finally:
            admin.close()
        gateway.database.pool.close()  # the next call needs a new connection
        gateway.database.pool._closed = False
        with GatewayClient(gateway.address, timeout_s=10) as c, pytest.raises(GatewayError) as err:
            c.execute_query("SELECT 1")
        assert err.value.code.name == "FAILED_PRECONDITION"
        assert "pg_execute_server_program" in err.value.message
    finally:
        gateway.stop(0)


def test_a_reader_that_is_privileged_is_refused_too(
    server_url: str, seeded_database: str, plain_role: tuple[str, str]
) -> None:
    role, _ = plain_role
    admin = psycopg2.connect(server_url)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(sql.SQL("GRANT pg_read_server_files TO {}").format(sql.Identifier(role)))
    finally:
        admin.close()
    settings = gateway_settings(
        seeded_database, db_pool_min=0, db_readonly_user=role, db_readonly_password="plain-pw"
    )
    with pytest.raises(ConfigError) as err:
        Gateway(settings)
    assert f"{role!r} (read-only role) is a member of pg_read_server_files" in str(err.value)


# -- TLS to the database ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dsn", "overrides", "sslmode"),
    [
        ("postgresql://u@db.example.com/d", {}, "verify-full"),
        ("postgresql://u@10.0.0.5:5432/d", {}, "verify-full"),
        ("postgresql://u@127.0.0.1/d", {}, None),
        ("postgresql://u@localhost/d", {}, None),
        ("postgresql://u@[::1]/d", {}, None),
        ("host=/var/run/postgresql dbname=d", {}, None),
        ("postgresql://u@db.example.com/d?sslmode=require", {}, "require"),
        ("postgresql://u@db.example.com/d", {"db_sslmode": "disable"}, "disable"),
        ("postgresql://u@127.0.0.1/d", {"db_sslmode": "verify-ca"}, "verify-ca"),
        ("postgresql://u@127.0.0.1,db.example.com/d", {}, "verify-full"),
    ],
)
def test_remote_databases_default_to_verify_full(
    dsn: str, overrides: dict[str, str], sslmode: str | None
) -> None:
    dsns = RoleDsns(dataclasses.replace(Settings(), **overrides), dsn)
    assert parse_dsn(dsns.serving).get("sslmode") == sslmode


def test_reader_and_watchdog_dsns_change_only_the_login() -> None:
    settings = dataclasses.replace(
        Settings(),
        db_readonly_user="reader",
        db_readonly_password="r-secret",
        db_watchdog_user="watchdog",
        db_sslrootcert="/etc/ssl/rds.pem",
    )
    dsns = RoleDsns(
        settings, "postgresql://app:app-secret@db.example.com:6432/dm?connect_timeout=3"
    )
    reader = parse_dsn(dsns.reader or "")
    assert (reader["user"], reader["password"], reader["host"], reader["port"]) == (
        "reader",
        "r-secret",
        "db.example.com",
        "6432",
    )
    assert reader["sslrootcert"] == "/etc/ssl/rds.pem"
    assert reader["sslmode"] == "verify-full"
    watchdog = parse_dsn(dsns.watchdog or "")
    assert watchdog["user"] == "watchdog"
    assert "password" not in watchdog  # never the app's password for another login
    assert RoleDsns(Settings(), "postgresql://app@h/d").reader is None


def test_db_sslmode_is_validated() -> None:
    from datamorph_gateway.config import load_settings

    with pytest.raises(ConfigError, match="DB_SSLMODE"):
        load_settings({"DB_SSLMODE": "verify_full"})
    with pytest.raises(ConfigError, match="DB_READONLY_PASSWORD"):
        load_settings({"DB_READONLY_PASSWORD": "x"})
    assert "r-secret" not in str(
        load_settings({"DB_READONLY_USER": "r", "DB_READONLY_PASSWORD": "r-secret"}).redacted()
    )
