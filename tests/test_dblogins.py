"""Per-principal database users (issue 11, item 3): PostgreSQL's own GRANTs and row-level
security decide what a caller sees.

Real roles in the session database with real GRANTs, their passwords in a real Secrets
Manager (moto as an HTTP server). RDS IAM authentication has no server here to accept a
token: its test checks the token the gateway makes (botocore's own signing) and when it
makes a new one, and is labelled as such.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import grpc
import psycopg2
import pytest
import yaml
from psycopg2 import sql

from datamorph_client import GatewayClient, GatewayError
from datamorph_gateway.auth.keys import key_hash, new_key
from datamorph_gateway.config import AwsSettings
from datamorph_gateway.db.connect import DatabaseLogin
from datamorph_gateway.dblogins import IAM_TOKEN_TTL_S, LoginPasswords
from datamorph_gateway.errors import Unavailable

from .fixtures.gateway import GatewayFactory
from .fixtures.roles import roles_for

KEY = new_key()
ADMIN = new_key()


@pytest.fixture
def etl_role(
    seeded_database: str, server_url: str, database_admin_url: str
) -> Iterator[tuple[str, str]]:
    """A login role that may read customers and its own rows of rls_items, and its password."""
    made = roles_for(seeded_database)
    assert made is not None
    role = f"dmgw_etl_{uuid.uuid4().hex[:8]}"
    password = uuid.uuid4().hex
    admin = psycopg2.connect(database_admin_url)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
            verifier = psycopg2.extensions.encrypt_password(password, role, admin, "scram-sha-256")
            cur.execute(
                sql.SQL("ALTER ROLE {} PASSWORD %s").format(sql.Identifier(role)), (verifier,)
            )
            cur.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(sql.Identifier(role)))
            cur.execute(
                sql.SQL("GRANT SELECT ON public.customers TO {}").format(sql.Identifier(role))
            )
            cur.execute(
                "CREATE TABLE IF NOT EXISTS public.rls_items (owner text, v int);"
                "ALTER TABLE public.rls_items ENABLE ROW LEVEL SECURITY;"
                "DROP POLICY IF EXISTS own_rows ON public.rls_items;"
                "CREATE POLICY own_rows ON public.rls_items USING (owner = current_user);"
                "TRUNCATE public.rls_items"
            )
            cur.execute(
                "INSERT INTO public.rls_items VALUES (%s, 1), (%s, 2), ('someone_else', 3)",
                (role, role),
            )
            cur.execute(
                sql.SQL("GRANT SELECT ON public.rls_items TO {}").format(sql.Identifier(role))
            )
        yield role, password
    finally:
        with admin.cursor() as cur:
            cur.execute("DROP TABLE IF EXISTS public.rls_items")
            cur.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            cur.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
        admin.close()


@pytest.fixture
def aws_env(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    return moto_url


def _policy(path: Path, role: str, **database: Any) -> Path:
    data = {
        "principals": [
            {"name": "admin", "api_keys": [key_hash(ADMIN)], "allow": ["*"]},
            {"name": "etl", "api_keys": [key_hash(KEY)], "allow": ["*"],
             "database_user": role, **database},
        ]
    }  # fmt: skip
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_principal_with_a_database_user_sees_what_postgresql_grants_it(
    make_gateway: GatewayFactory,
    etl_role: tuple[str, str],
    aws_env: str,
    aws_session: boto3.session.Session,
    tmp_path: Path,
) -> None:
    role, password = etl_role
    secret_id = f"dmgw/{role}"
    aws_session.client("secretsmanager", endpoint_url=aws_env).create_secret(
        Name=secret_id, SecretString=json.dumps({"username": role, "password": password})
    )
    gateway = make_gateway(
        auth_policy_file=str(_policy(tmp_path / "p.yaml", role, database_secret=secret_id)),
        aws_endpoint_url=aws_env,
    )
    with GatewayClient(gateway.address, timeout_s=15, api_key=KEY) as c:
        assert c.execute_query("SELECT current_user::text AS me").rows == [{"me": role}]
        # A reader that cannot write, even with read_only: false.
        with pytest.raises(GatewayError) as err:
            c.execute_query("DELETE FROM customers", read_only=False)
        assert err.value.sqlstate == "42501"
        # Row-level security, visible through GetData.
        rows = c.get_data(["rls_items"], limit=10)["rls_items"].rows
        assert sorted(str(r["v"]) for r in rows) == ["1", "2"]
        assert c.get_data(["customers"], limit=1)["customers"].rows
        with pytest.raises(GatewayError) as err:
            c.get_data(["orders"], limit=1)  # no GRANT
        assert err.value.code == grpc.StatusCode.PERMISSION_DENIED
        streamed = list(c.stream_query("SELECT v FROM rls_items ORDER BY v"))
        assert [r["v"] for batch in streamed for r in batch.rows] == [1, 2]
    # The serving role is unaffected.
    with GatewayClient(gateway.address, timeout_s=15, api_key=ADMIN) as c:
        made = roles_for(gateway.settings.database.database_url)
        assert made is not None
        assert c.execute_query("SELECT current_user::text AS me").rows == [{"me": made.app}]
    # Its pool is one more under the process's budget: DB_POOL_MAX still caps it all.
    assert gateway.database.budget.stats()["open"] <= gateway.settings.database.db_pool_max


def test_a_principal_removed_by_a_reload_keeps_no_session_open(
    make_gateway: GatewayFactory,
    etl_role: tuple[str, str],
    aws_env: str,
    aws_session: boto3.session.Session,
    tmp_path: Path,
    database_admin_url: str,
) -> None:
    """Rotating a principal out of the policy closes its login's pool: no session stays
    open as its database user (which the DBA may now mean to drop or lock)."""
    role, password = etl_role
    secret_id = f"dmgw/{role}"
    aws_session.client("secretsmanager", endpoint_url=aws_env).create_secret(
        Name=secret_id, SecretString=json.dumps({"username": role, "password": password})
    )
    policy = _policy(tmp_path / "p.yaml", role, database_secret=secret_id)
    gateway = make_gateway(auth_policy_file=str(policy), aws_endpoint_url=aws_env)

    def sessions() -> int:
        with psycopg2.connect(database_admin_url) as admin, admin.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = %s", (role,))
            row = cur.fetchone()
        admin.close()
        assert row is not None
        return int(row[0])

    with GatewayClient(gateway.address, timeout_s=15, api_key=KEY) as c:
        assert c.execute_query("SELECT current_user::text AS me").rows == [{"me": role}]
    assert sessions() == 1  # kept idle in the principal's pool
    assert gateway.auth.reload() is True  # the same policy: the login stays in use
    assert sessions() == 1
    data = yaml.safe_load(policy.read_text())
    data["principals"] = data["principals"][:1]  # etl removed
    policy.write_text(yaml.safe_dump(data))
    assert gateway.auth.reload() is True
    deadline = time.monotonic() + 5  # a backend ends a moment after its socket closes
    while sessions() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sessions() == 0
    with GatewayClient(gateway.address, timeout_s=15, api_key=KEY) as c:
        with pytest.raises(GatewayError) as err:
            c.execute_query("SELECT 1")
        assert err.value.code == grpc.StatusCode.UNAUTHENTICATED
    # A call authorized just before the reload opens no new pool for the dropped login.
    removed = DatabaseLogin(role, secret_id, False)
    with pytest.raises(Unavailable) as refused:
        gateway.database.roles.login(removed)
    assert refused.value.reason == "LOGIN_REMOVED"
    assert role in refused.value.message
    assert sessions() == 0
    with GatewayClient(gateway.address, timeout_s=15, api_key=ADMIN) as c:
        assert c.execute_query("SELECT 1 AS one").rows == [{"one": 1}]
    # Named again by a later policy, the login is served again.
    _policy(policy, role, database_secret=secret_id)
    assert gateway.auth.reload() is True
    with GatewayClient(gateway.address, timeout_s=15, api_key=KEY) as c:
        assert c.execute_query("SELECT current_user::text AS me").rows == [{"me": role}]


def test_a_missing_secret_answers_unavailable_without_its_value(
    make_gateway: GatewayFactory, etl_role: tuple[str, str], aws_env: str, tmp_path: Path
) -> None:
    role, _ = etl_role
    gateway = make_gateway(
        auth_policy_file=str(_policy(tmp_path / "p.yaml", role, database_secret="dmgw/none")),
        aws_endpoint_url=aws_env,
        db_connect_attempts=1,
    )
    with GatewayClient(gateway.address, timeout_s=15, api_key=KEY) as c:
        with pytest.raises(GatewayError) as err:
            c.execute_query("SELECT 1")
        assert err.value.code == grpc.StatusCode.UNAVAILABLE
        assert "dmgw/none" in err.value.message
        assert c.health().status == "healthy"


def test_a_privileged_database_user_is_refused(
    make_gateway: GatewayFactory,
    etl_role: tuple[str, str],
    aws_env: str,
    aws_session: boto3.session.Session,
    database_admin_url: str,
    tmp_path: Path,
) -> None:
    role, password = etl_role
    secret_id = f"dmgw/priv/{role}"
    aws_session.client("secretsmanager", endpoint_url=aws_env).create_secret(
        Name=secret_id, SecretString=json.dumps({"username": role, "password": password})
    )
    admin = psycopg2.connect(database_admin_url)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(sql.SQL("GRANT pg_read_server_files TO {}").format(sql.Identifier(role)))
    admin.close()
    gateway = make_gateway(
        auth_policy_file=str(_policy(tmp_path / "p.yaml", role, database_secret=secret_id)),
        aws_endpoint_url=aws_env,
    )
    with GatewayClient(gateway.address, timeout_s=15, api_key=KEY) as c:
        with pytest.raises(GatewayError) as err:
            c.execute_query("SELECT 1")
        assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert f"database role {role!r}" in err.value.message
        assert "pg_read_server_files" in err.value.message


def test_rds_iam_tokens_are_made_and_renewed(aws_env: str) -> None:
    """No RDS here to accept a token: this checks the token botocore signs, and its renewal."""
    now = [1000.0]
    passwords = LoginPasswords(AwsSettings(aws_region="eu-west-1"), clock=lambda: now[0])
    made: list[str] = []
    sign = passwords._iam_token

    def counted(login: DatabaseLogin, host: str, port: int) -> str:
        made.append(login.user)
        return sign(login, host, port)

    passwords._iam_token = counted  # type: ignore[method-assign]
    source = passwords(DatabaseLogin("etl", iam_auth=True), "db.example.com", 5432)
    assert source is not None
    first = source()
    assert first.startswith("db.example.com:5432/?")
    assert "Action=connect" in first
    assert "DBUser=etl" in first
    assert "X-Amz-Signature=" in first
    assert source() == first  # kept for ten minutes
    assert made == ["etl"]
    now[0] += IAM_TOKEN_TTL_S + 1
    source()
    assert made == ["etl", "etl"]  # made anew before the fifteen minutes are up
    assert passwords(DatabaseLogin("etl"), "h", 5432) is None  # the serving password


def test_the_gateways_catalog_reads_run_none_of_a_callers_functions(
    make_gateway: GatewayFactory,
    etl_role: tuple[str, str],
    aws_env: str,
    aws_session: boto3.session.Session,
    seeded_database: str,
    tmp_path: Path,
) -> None:
    """GetSchemas and GetData run the gateway's own SQL as the principal's database user;
    a function the serving role planted with a closer match than the built-in
    (unnest(text[]), pg_relation_size(oid)) must not be what runs, or it would run with
    another principal's rights."""
    role, password = etl_role
    secret_id = f"dmgw/trap/{role}"
    aws_session.client("secretsmanager", endpoint_url=aws_env).create_secret(
        Name=secret_id, SecretString=json.dumps({"username": role, "password": password})
    )
    planted = {
        "unnest(a text[])": "RETURNS SETOF text AS $f$ BEGIN INSERT INTO public.trap VALUES "
        "(current_user); RETURN QUERY SELECT x FROM pg_catalog.unnest(a) x; END $f$",
        "pg_relation_size(r oid)": "RETURNS bigint AS $f$ BEGIN INSERT INTO public.trap VALUES "
        "(current_user); RETURN 0; END $f$",
        "random()": "RETURNS double precision AS $f$ BEGIN INSERT INTO public.trap VALUES "
        "(current_user); RETURN 0.5; END $f$",
    }
    app = psycopg2.connect(seeded_database)
    app.autocommit = True
    try:
        with app.cursor() as cur:
            cur.execute("CREATE TABLE public.trap (who text)")
            cur.execute(sql.SQL("GRANT INSERT ON public.trap TO {}").format(sql.Identifier(role)))
            for signature, body in planted.items():
                cur.execute(f"CREATE FUNCTION public.{signature} {body} LANGUAGE plpgsql")
        gateway = make_gateway(
            auth_policy_file=str(_policy(tmp_path / "p.yaml", role, database_secret=secret_id)),
            aws_endpoint_url=aws_env,
        )
        with GatewayClient(gateway.address, timeout_s=15, api_key=KEY) as c:
            assert c.get_schemas(["customers"])
            assert c.get_data(["customers"], limit=2)["customers"].rows
        with app.cursor() as cur:
            cur.execute("SELECT count(*) FROM public.trap")
            assert cur.fetchone() == (0,)
    finally:
        with app.cursor() as cur:
            cur.execute("DROP FUNCTION IF EXISTS public.unnest(text[])")
            cur.execute("DROP FUNCTION IF EXISTS public.pg_relation_size(oid)")
            cur.execute("DROP FUNCTION IF EXISTS public.random()")
            cur.execute("DROP TABLE IF EXISTS public.trap")
        app.close()
