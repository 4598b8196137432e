"""The embedded default: scram, random passwords in DATA_DIR, serving as datamorph_app.

And a data directory made by an earlier version (trust for every local login, everything
owned by the bootstrap superuser) moved to that on its first start, with nothing lost.
"""

from __future__ import annotations

import stat
from pathlib import Path

import psycopg2
import pytest
from psycopg2.extensions import make_dsn, parse_dsn

from datamorph_gateway.config import EmbeddedSettings
from datamorph_gateway.pg.devdb import (
    APP_ROLE,
    EMBEDDED_DBNAME,
    PGPASS_NAME,
    READER_ROLE,
    STATE_ROLE,
    WATCHDOG_ROLE,
    start_embedded_database,
)
from datamorph_gateway.pg.server import SUPERUSER, EmbeddedPostgres


def _one(dsn: str, query: str) -> tuple:  # type: ignore[type-arg]
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(query)
            row = cur.fetchone()
            assert row is not None
            return row
    finally:
        conn.close()


def _refused_without_password(dsn: str, role: str) -> None:
    params = parse_dsn(dsn)
    with pytest.raises(psycopg2.OperationalError, match="password"):
        psycopg2.connect(
            host=params["host"],
            port=params["port"],
            dbname=EMBEDDED_DBNAME,
            user=role,
            passfile=str(Path(params["passfile"]).with_name("none")),
        ).close()


def test_a_fresh_data_dir_serves_as_datamorph_app_with_scram(tmp_path: Path) -> None:
    settings = EmbeddedSettings(data_dir=str(tmp_path / "data"))
    embedded = start_embedded_database(settings)
    try:
        dsn = embedded.dsn
        params = parse_dsn(dsn)
        assert params["user"] == APP_ROLE
        assert params["dbname"] == EMBEDDED_DBNAME
        assert "password" not in params
        passfile = Path(params["passfile"])
        assert passfile == tmp_path / "data" / PGPASS_NAME
        assert stat.S_IMODE(passfile.stat().st_mode) == 0o600
        # Who the gateway is, and what it owns.
        assert _one(
            dsn, "SELECT current_user::text, rolsuper FROM pg_roles WHERE rolname = current_user"
        ) == (APP_ROLE, False)
        # The database stays the administrator's (an owner could plant settings for every
        # role, or lock everyone out); the app owns the schemas it works in.
        assert _one(
            dsn,
            "SELECT pg_get_userbyid(datdba)::text,"
            " has_database_privilege(current_database(), 'CREATE'),"
            " (SELECT pg_get_userbyid(nspowner)::text FROM pg_namespace WHERE nspname = 'public')"
            " FROM pg_database WHERE datname = current_database()",
        ) == (SUPERUSER, True, APP_ROLE)
        assert _one(
            dsn, "SELECT tableowner::text FROM pg_tables WHERE tablename = 'customers'"
        ) == (APP_ROLE,)
        reader = make_dsn(dsn, user=READER_ROLE)
        assert _one(
            reader,
            "SELECT current_setting('default_transaction_read_only'), count(*) > 0 FROM customers",
        ) == ("on", True)
        # Nobody gets in without the password, not even the superuser.
        for role in (SUPERUSER, APP_ROLE, READER_ROLE, WATCHDOG_ROLE, STATE_ROLE):
            _refused_without_password(dsn, role)
        # The gateway's own schema is the state role's; the app role has nothing there.
        state = make_dsn(dsn, user=STATE_ROLE)
        assert _one(
            state,
            "SELECT pg_get_userbyid(nspowner)::text, has_schema_privilege("
            f"'{APP_ROLE}', 'datamorph_gateway', 'USAGE') FROM pg_namespace"
            " WHERE nspname = 'datamorph_gateway'",
        ) == (STATE_ROLE, False)
        # The DDL counter stays the superuser's (a start hands the rest over to the app).
        assert _one(
            dsn,
            "SELECT pg_get_userbyid(n.nspowner)::text, pg_get_userbyid(c.relowner)::text,"
            " pg_get_userbyid(p.proowner)::text, e.evtenabled::text"
            " FROM pg_namespace n, pg_class c, pg_proc p, pg_event_trigger e"
            " WHERE n.nspname = 'datamorph_ddl' AND c.oid = 'datamorph_ddl.epoch'::regclass"
            " AND p.oid = 'datamorph_ddl.count_ddl()'::regprocedure"
            " AND e.evtname = 'datamorph_ddl_epoch'",
        ) == (SUPERUSER, SUPERUSER, SUPERUSER, "A")
        hba = (tmp_path / "data" / "postgres" / "pg_hba.conf").read_text()
        assert "trust" not in [
            line.split()[-1]
            for line in hba.splitlines()
            if line.strip() and not line.startswith("#")
        ]
        # The signal and file functions are revoked from PUBLIC; the watchdog may signal.
        assert _one(
            dsn,
            "SELECT has_function_privilege('pg_terminate_backend(integer,bigint)',"
            " 'EXECUTE'), has_function_privilege('pg_read_file(text)', 'EXECUTE')",
        ) == (False, False)
        watchdog = make_dsn(dsn, user=WATCHDOG_ROLE)
        assert _one(
            watchdog,
            "SELECT has_function_privilege('pg_terminate_backend(integer,bigint)', 'EXECUTE')",
        ) == (True,)
    finally:
        embedded.stop()
    # A second start: same passwords, same roles, nothing re-seeded.
    embedded = start_embedded_database(settings)
    try:
        assert _one(embedded.dsn, "SELECT current_user::text") == (APP_ROLE,)
    finally:
        embedded.stop()


def test_a_data_dir_from_an_earlier_version_is_migrated_with_nothing_lost(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    cluster = data_dir / "postgres"
    # What an earlier version left: a trusting cluster, everything owned by `postgres`.
    old = EmbeddedPostgres(cluster, password_file=data_dir / PGPASS_NAME)
    old.start()
    try:
        conn = psycopg2.connect(old.dsn)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE {EMBEDDED_DBNAME}")
        conn.close()
        conn = psycopg2.connect(old.dsn_for(SUPERUSER, EMBEDDED_DBNAME))
        with conn, conn.cursor() as cur:
            cur.execute(
                "CREATE TABLE public.customers (id serial PRIMARY KEY, name text);"
                "INSERT INTO public.customers (name) VALUES ('kept');"
                "CREATE SCHEMA mine; CREATE TABLE mine.notes (id int GENERATED ALWAYS AS"
                " IDENTITY, body text); INSERT INTO mine.notes (body) VALUES ('also kept');"
                "CREATE VIEW mine.v AS SELECT body FROM mine.notes;"
                "CREATE SEQUENCE mine.standalone; CREATE TYPE mine.mood AS ENUM ('ok');"
                "CREATE DOMAIN mine.positive AS int CHECK (VALUE > 0);"
                "CREATE FUNCTION mine.f() RETURNS int LANGUAGE sql AS 'SELECT 1';"
                "CREATE SCHEMA datamorph_gateway;"
                "CREATE TABLE datamorph_gateway.workflow_runs (run_id text PRIMARY KEY)"
            )
        conn.close()
    finally:
        old.stop()
    hba = cluster / "pg_hba.conf"
    hba.write_text(hba.read_text().replace("scram-sha-256", "trust"))
    (data_dir / PGPASS_NAME).unlink()

    settings = EmbeddedSettings(data_dir=str(data_dir))
    embedded = start_embedded_database(settings)
    try:
        dsn = embedded.dsn
        assert _one(
            dsn, "SELECT current_user::text, rolsuper FROM pg_roles WHERE rolname = current_user"
        ) == (APP_ROLE, False)
        assert _one(dsn, "SELECT name FROM customers") == ("kept",)
        assert _one(dsn, "SELECT body FROM mine.v") == ("also kept",)
        # The app owns what it serves, so it can write and change it.
        conn = psycopg2.connect(dsn)
        with conn, conn.cursor() as cur:
            cur.execute("INSERT INTO customers (name) VALUES ('new') RETURNING id")
            cur.execute("INSERT INTO mine.notes (body) VALUES ('new')")
            cur.execute("ALTER TABLE mine.notes ADD COLUMN extra int")
            cur.execute(
                "SELECT nextval('mine.standalone'), mine.f(), 'ok'::mine.mood, 5::mine.positive"
            )
        conn.close()
        owners = _one(
            dsn,
            "SELECT array_agg(DISTINCT pg_get_userbyid(relowner)::text) FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname IN ('public', 'mine')",
        )
        assert owners == ([APP_ROLE],)
        # The gateway's own tables go on to the state role.
        assert _one(
            dsn,
            "SELECT pg_get_userbyid(c.relowner)::text FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'datamorph_gateway' AND c.relname = 'workflow_runs'",
        ) == (STATE_ROLE,)
        reader = make_dsn(dsn, user=READER_ROLE)
        assert _one(reader, "SELECT count(*) FROM mine.notes") == (2,)
        for role in (SUPERUSER, APP_ROLE):
            _refused_without_password(dsn, role)
    finally:
        embedded.stop()
