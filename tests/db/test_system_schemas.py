"""System catalogs are not data: GetData and GetSchemas refuse them, on every path.

The refusal is on the schema a name *resolves* to, so ``pg_authid`` alone (pg_catalog is
implicitly first on the search_path) is refused like ``pg_catalog.pg_authid``. A trap view
in the gateway's own schema records every read of it, so the tests can tell that a refused
name was never sampled. The state role, which owns that schema, makes the view and lets the
serving role read it for these tests alone: the refusal under test is the gateway's, not
PostgreSQL's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import grpc
import psycopg2
import pytest
from psycopg2.extensions import make_dsn

from datamorph_client import GatewayClient, GatewayError
from datamorph_gateway.config import load_settings
from datamorph_gateway.errors import ConfigError

from ..fixtures.envoy import Rest
from ..fixtures.gateway import GatewayFactory
from ..fixtures.roles import own_tables_dsn, roles_for

TRAP_SETUP = """
CREATE TABLE IF NOT EXISTS public.zz_trap_hits (n int);
CREATE OR REPLACE FUNCTION public.zz_trap_rows() RETURNS SETOF int
    LANGUAGE plpgsql VOLATILE AS $$
    BEGIN INSERT INTO public.zz_trap_hits VALUES (1); RETURN NEXT 1; END $$;
"""
# As the state role, the owner of the gateway's schema; {app} is the serving role.
TRAP_VIEW = """
CREATE OR REPLACE VIEW datamorph_gateway.zz_trap AS SELECT n FROM public.zz_trap_rows() AS t(n);
GRANT USAGE ON SCHEMA datamorph_gateway TO {app};
GRANT SELECT ON datamorph_gateway.zz_trap TO {app};
"""
TRAP_TEARDOWN = """
DROP VIEW IF EXISTS datamorph_gateway.zz_trap;
REVOKE ALL ON SCHEMA datamorph_gateway FROM {app};
"""


def run(dsn: str, statement: str) -> list[tuple[Any, ...]]:
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(statement)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


@pytest.fixture(scope="module")
def trap(seeded_database: str) -> Iterator[str]:
    """The DSN; ``datamorph_gateway.zz_trap`` counts its reads in ``zz_trap_hits``."""
    made = roles_for(seeded_database)
    assert made is not None
    app = f'"{made.app}"'
    run(seeded_database, TRAP_SETUP)
    run(own_tables_dsn(seeded_database), TRAP_VIEW.format(app=app))
    yield seeded_database
    run(own_tables_dsn(seeded_database), TRAP_TEARDOWN.format(app=app))


def hits(dsn: str) -> int:
    return int(run(dsn, "SELECT count(*) FROM public.zz_trap_hits")[0][0])


def refused(call: Callable[..., Any], names: list[str]) -> GatewayError:
    with pytest.raises(GatewayError) as err:
        call(names)
    assert err.value.code == grpc.StatusCode.PERMISSION_DENIED, err.value
    assert err.value.message.startswith("table_names"), err.value.message
    return err.value


def toast_table(dsn: str) -> str:
    [(name,)] = run(
        dsn,
        "SELECT 'pg_toast.' || relname FROM pg_class"
        " WHERE relnamespace = 'pg_toast'::regnamespace AND relkind = 't' LIMIT 1",
    )
    return str(name)


@pytest.mark.parametrize("method", ["get_data", "get_schemas"])
@pytest.mark.parametrize(
    "name",
    [
        "pg_catalog.pg_authid",
        "pg_authid",  # resolves into pg_catalog, first on every search_path
        "PG_AUTHID",
        '"pg_catalog"."pg_authid"',
        "pg_shadow",
        "information_schema.tables",
        "datamorph_gateway.zz_trap",
    ],
)
def test_system_tables_are_permission_denied_naming_the_table(
    client: GatewayClient, trap: str, method: str, name: str
) -> None:
    before = hits(trap)
    err = refused(getattr(client, method), ["customers", name])
    assert name in err.message
    assert hits(trap) == before


def test_a_toast_table_is_refused(client: GatewayClient, trap: str) -> None:
    name = toast_table(trap)
    with pytest.raises(GatewayError) as err:
        client.get_data([name])
    # Refused by the gateway (table_names: ...), or before it by PostgreSQL: the serving
    # role has no USAGE on pg_toast.
    assert err.value.code == grpc.StatusCode.PERMISSION_DENIED, err.value
    assert name in err.value.message or "schema pg_toast" in err.value.message


def test_password_hashes_do_not_come_back_over_rest(rest: Rest) -> None:
    """The attack this guards against: GetData on pg_authid answered every role's hash."""
    for path in ("/get/data", "/get/schemas"):
        response = rest.post(path, {"table_names": ["pg_catalog.pg_authid"]})
        assert response.status == 403, response.body
        body = response.json()
        assert body["code"] == 7
        assert "pg_catalog.pg_authid" in body["message"]
        assert b"rolpassword" not in response.body
        assert b"SCRAM-SHA-256" not in response.body


def test_a_name_resolving_into_the_gateways_schema_through_search_path_is_refused(
    make_gateway: GatewayFactory, trap: str
) -> None:
    dsn = make_dsn(trap, options="-c search_path=public,datamorph_gateway")
    gateway = make_gateway(database_url=dsn)
    before = hits(trap)
    with GatewayClient(gateway.address, timeout_s=20) as c:
        err = refused(c.get_data, ["zz_trap"])
        assert '"zz_trap"' in err.message
        refused(c.get_schemas, ["zz_trap"])
    assert hits(trap) == before


def test_a_cached_name_that_comes_to_mean_a_system_table_is_refused(
    make_gateway: GatewayFactory, trap: str
) -> None:
    """The relation cache's fast path: the name is cached for public, then resolves elsewhere."""
    run(trap, "CREATE TABLE public.zz_shadow (n int); INSERT INTO public.zz_shadow VALUES (7)")
    made, state = roles_for(trap), own_tables_dsn(trap)
    assert made is not None
    run(state, "CREATE VIEW datamorph_gateway.zz_shadow AS SELECT * FROM datamorph_gateway.zz_trap")
    run(state, f'GRANT SELECT ON datamorph_gateway.zz_shadow TO "{made.app}"')
    try:
        dsn = make_dsn(trap, options="-c search_path=public,datamorph_gateway")
        gateway = make_gateway(database_url=dsn, relation_cache_ttl_s=60.0)
        with GatewayClient(gateway.address, timeout_s=20) as c:
            for _ in range(2):
                assert c.get_data(["zz_shadow"])["zz_shadow"].rows == [{"n": 7}]
            run(trap, "DROP TABLE public.zz_shadow")
            before = hits(trap)
            err = refused(c.get_data, ["zz_shadow"])
            assert '"zz_shadow"' in err.message
            assert hits(trap) == before
    finally:
        run(state, "DROP VIEW IF EXISTS datamorph_gateway.zz_shadow")
        run(trap, "DROP TABLE IF EXISTS public.zz_shadow")


def test_allow_system_schemas_reads_them(make_gateway: GatewayFactory, trap: str) -> None:
    gateway = make_gateway(allow_system_schemas=True)
    with GatewayClient(gateway.address, timeout_s=20) as c:
        roles = c.get_data(["pg_roles"], limit=1000)["pg_roles"].rows
        assert any(r["rolname"] == "pg_signal_backend" for r in roles)
        described = c.get_schemas(["information_schema.tables"])["information_schema.tables"]
        assert described.schema == "information_schema"
        before = hits(trap)
        assert c.get_data(["datamorph_gateway.zz_trap"])["datamorph_gateway.zz_trap"].rows
        assert hits(trap) > before


def test_allow_system_schemas_is_a_boolean_key() -> None:
    assert load_settings({}).database.allow_system_schemas is False
    assert load_settings({"ALLOW_SYSTEM_SCHEMAS": "true"}).database.allow_system_schemas is True
    with pytest.raises(ConfigError, match="ALLOW_SYSTEM_SCHEMAS"):
        load_settings({"ALLOW_SYSTEM_SCHEMAS": "sometimes"})
