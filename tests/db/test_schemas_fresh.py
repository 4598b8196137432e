"""GetSchemas' cache is never stale (issue 17, item 1): DDL shows at once, on every gateway.

Two gateways against one database stand for two processes or replicas: both have the
answer cached when another connection runs the DDL, and the next GetSchemas of each must
show the change and equal what a gateway without the cache answers.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass

import grpc
import psycopg2
import psycopg2.extensions
import pytest
from psycopg2 import sql

from datamorph.gateway.v1 import gateway_pb2 as pb
from datamorph.gateway.v1 import gateway_pb2_grpc as pb_grpc
from datamorph_gateway.app import Gateway

from ..fixtures.databases import ddl_counter_off
from ..fixtures.gateway import gateway_settings
from ..fixtures.roles import roles_for

Stub = pb_grpc.DataMorphGatewayStub


@dataclass(frozen=True)
class Gateways:
    first: Stub  # cached
    second: Stub  # cached, another "process"
    uncached: Stub  # SCHEMA_CACHE_MAX_RELATIONS=0: the answer as the catalog gives it now


@pytest.fixture(scope="module", params=["counter", "digest"])
def gateways(
    request: pytest.FixtureRequest, seeded_database: str, database_admin_url: str
) -> Iterator[Gateways]:
    """Checked with roles.sql's DDL counter, or with the catalog digest (the counter's event
    trigger disabled while the module's tests run)."""
    off = request.param == "digest"
    with ddl_counter_off(database_admin_url) if off else nullcontext():
        started = [
            Gateway(gateway_settings(seeded_database, **overrides))
            for overrides in ({}, {}, {"schema_cache_max_relations": 0})
        ]
        channels = []
        try:
            for gateway in started:
                gateway.start()
                channels.append(grpc.insecure_channel(gateway.address))
            yield Gateways(*(Stub(ch) for ch in channels))
        finally:
            for ch in channels:
                ch.close()
            for gateway in started:
                gateway.stop(0)


@pytest.fixture
def admin(seeded_database: str) -> Iterator[psycopg2.extensions.connection]:
    """Another connection, as the role that owns the tables, for the DDL."""
    conn = psycopg2.connect(seeded_database)
    conn.autocommit = True
    yield conn
    conn.close()


@pytest.fixture
def schema(admin: psycopg2.extensions.connection) -> Iterator[str]:
    name = f"schemacache_{uuid.uuid4().hex[:8]}"
    with admin.cursor() as cur:
        cur.execute(
            f"CREATE SCHEMA {name};"
            f"CREATE TABLE {name}.parent (id int PRIMARY KEY, code text UNIQUE);"
            f"CREATE TYPE {name}.mood AS ENUM ('ok');"
            f"CREATE DOMAIN {name}.posint AS int;"
            f"CREATE FUNCTION {name}.one() RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT 1';"
            f"CREATE TABLE {name}.t (id int, label varchar(10), n int DEFAULT 1,"
            f" parent_id int, extra text, m {name}.mood, p {name}.posint, sq serial,"
            f" f int DEFAULT {name}.one(), twice int GENERATED ALWAYS AS (n * 2) STORED,"
            f" CONSTRAINT t_old_parent FOREIGN KEY (id) REFERENCES {name}.parent)"
        )
    yield name
    with admin.cursor() as cur:
        cur.execute(f"DROP SCHEMA {name} CASCADE")


def _schemas(stub: Stub, *names: str) -> pb.GetSchemasResponse:
    response: pb.GetSchemasResponse = stub.GetSchemas(
        pb.GetSchemasRequest(table_names=list(names)), timeout=20
    )
    return response


def _column(table: pb.TableSchema, name: str) -> pb.ColumnSchema:
    [column] = [c for c in table.columns if c.column_name == name]
    return column


def _columns(table: pb.TableSchema) -> list[str]:
    return [c.column_name for c in table.columns]


# (DDL, what the answer for "t" shows afterwards). {s} is the test's schema.
CASES: dict[str, tuple[str, Callable[[pb.TableSchema], bool]]] = {
    "add column": ("ALTER TABLE {s}.t ADD COLUMN added int", lambda t: "added" in _columns(t)),
    "drop column": ("ALTER TABLE {s}.t DROP COLUMN extra", lambda t: "extra" not in _columns(t)),
    "column type": (
        "ALTER TABLE {s}.t ALTER COLUMN label TYPE varchar(20)",
        lambda t: _column(t, "label").character_maximum_length.number_value == 20,
    ),
    "rename column": (
        "ALTER TABLE {s}.t RENAME COLUMN label TO title",
        lambda t: "title" in _columns(t) and "label" not in _columns(t),
    ),
    "drop and re-create": (
        "DROP TABLE {s}.t; CREATE TABLE {s}.t (other bigint)",
        lambda t: _columns(t) == ["other"],
    ),
    "column type with a rewrite": (
        "ALTER TABLE {s}.t ALTER COLUMN parent_id TYPE bigint",
        lambda t: _column(t, "parent_id").data_type == "bigint",
    ),
    "new foreign key": (
        "ALTER TABLE {s}.t ADD CONSTRAINT t_parent FOREIGN KEY (parent_id) REFERENCES {s}.parent",
        lambda t: [fk.constraint_name for fk in t.foreign_keys] == ["t_old_parent", "t_parent"],
    ),
    "foreign key to a unique column": (
        "ALTER TABLE {s}.t ADD FOREIGN KEY (extra) REFERENCES {s}.parent (code)",
        lambda t: [fk.foreign_column_name for fk in t.foreign_keys] == ["code", "id"],
    ),
    "foreign key dropped": (  # the table's own rows stay as they were
        "ALTER TABLE {s}.t DROP CONSTRAINT t_old_parent",
        lambda t: list(t.foreign_keys) == [],
    ),
    "foreign key renamed": (
        "ALTER TABLE {s}.t RENAME CONSTRAINT t_old_parent TO t_mother",
        lambda t: [fk.constraint_name for fk in t.foreign_keys] == ["t_mother"],
    ),
    "function in a default renamed": (  # no row of the table changes
        "ALTER FUNCTION {s}.one() RENAME TO uno",
        lambda t: "uno()" in _column(t, "f").column_default.string_value,
    ),
    "generated column's source renamed": (
        "ALTER TABLE {s}.t RENAME COLUMN n TO num",
        lambda t: "num * 2" in _column(t, "twice").column_default.string_value,
    ),
    "default change": (
        "ALTER TABLE {s}.t ALTER COLUMN n SET DEFAULT 2",
        lambda t: _column(t, "n").column_default.string_value == "2",
    ),
    "default dropped": (
        "ALTER TABLE {s}.t ALTER COLUMN n DROP DEFAULT",
        lambda t: _column(t, "n").column_default.WhichOneof("kind") == "null_value",
    ),
    "not null": (
        "ALTER TABLE {s}.t ALTER COLUMN n SET NOT NULL",
        lambda t: _column(t, "n").is_nullable == "NO",
    ),
    "new primary key": (
        "ALTER TABLE {s}.t ADD PRIMARY KEY (id)",
        lambda t: list(t.primary_keys) == ["id"],
    ),
    "domain not null": (
        "ALTER DOMAIN {s}.posint SET NOT NULL",  # no row of the table changes
        lambda t: _column(t, "p").is_nullable == "NO",
    ),
    "type renamed": (
        "ALTER TYPE {s}.mood RENAME TO feeling",
        lambda t: _column(t, "m").udt_name == "feeling",
    ),
    "type's schema renamed": (
        "CREATE SCHEMA {s}_types; ALTER TYPE {s}.mood SET SCHEMA {s}_types",
        lambda t: _column(t, "m").type.endswith("_types.mood"),
    ),
    "sequence renamed": (
        "ALTER SEQUENCE {s}.t_sq_seq RENAME TO counter",  # no row of the table changes
        lambda t: "counter" in _column(t, "sq").column_default.string_value,
    ),
    "table becomes a view": (
        "DROP TABLE {s}.t; CREATE VIEW {s}.t AS SELECT 1 AS one",
        lambda t: t.table_type == "view" and _columns(t) == ["one"],
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_ddl_shows_at_once_on_every_gateway(
    gateways: Gateways, admin: psycopg2.extensions.connection, schema: str, case: str
) -> None:
    name = f"{schema}.t"
    ddl, shows = CASES[case]
    before = _schemas(gateways.first, name, f"{schema}.parent")
    assert _schemas(gateways.second, name, f"{schema}.parent") == before
    assert _schemas(gateways.first, name, f"{schema}.parent") == before  # now from the cache
    with admin.cursor() as cur:
        cur.execute(ddl.format(s=schema))
    try:
        truth = _schemas(gateways.uncached, name, f"{schema}.parent")
        assert truth != before
        for stub in (gateways.second, gateways.first):
            after = _schemas(stub, name, f"{schema}.parent")
            assert after == truth
            check = shows(after.schemas[name])
            assert check, case
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP SCHEMA IF EXISTS {schema}_types CASCADE")


def test_referenced_table_and_column_renamed(
    gateways: Gateways, admin: psycopg2.extensions.connection, schema: str
) -> None:
    """The foreign key names what it references; renaming that changes only other rows."""
    name = f"{schema}.t"
    with admin.cursor() as cur:
        cur.execute(f"ALTER TABLE {name} ADD FOREIGN KEY (parent_id) REFERENCES {schema}.parent")
    for ddl, expected in (
        (f"ALTER TABLE {schema}.parent RENAME COLUMN id TO parent_key", ("parent", "parent_key")),
        (f"ALTER TABLE {schema}.parent RENAME TO mother", ("mother", "parent_key")),
    ):
        for stub in (gateways.first, gateways.second):
            _schemas(stub, name)
        with admin.cursor() as cur:
            cur.execute(ddl)
        for stub in (gateways.first, gateways.second):
            fks = _schemas(stub, name).schemas[name].foreign_keys
            assert [(fk.foreign_table_name, fk.foreign_column_name) for fk in fks] == [expected] * 2


def test_renamed_table_is_not_found_and_found_under_its_new_name(
    gateways: Gateways, admin: psycopg2.extensions.connection, schema: str
) -> None:
    name = f"{schema}.t"
    for stub in (gateways.first, gateways.second):
        _schemas(stub, name)
    with admin.cursor() as cur:
        cur.execute(f"ALTER TABLE {name} RENAME TO t2")
    for stub in (gateways.first, gateways.second):
        with pytest.raises(grpc.RpcError) as err:
            _schemas(stub, name)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert _schemas(stub, f"{schema}.t2").schemas[f"{schema}.t2"].table_name == "t2"


def test_revoked_schema_usage_is_refused_as_without_the_cache(
    gateways: Gateways, admin: psycopg2.extensions.connection, schema: str
) -> None:
    name = f"{schema}.t"
    role = roles_for(admin.dsn)
    assert role is not None
    for stub in (gateways.first, gateways.second):
        _schemas(stub, name)
    with admin.cursor() as cur:
        cur.execute(
            sql.SQL("REVOKE USAGE ON SCHEMA {} FROM {}").format(
                sql.Identifier(schema), sql.Identifier(role.app)
            )
        )
    try:
        codes = []
        for stub in (gateways.uncached, gateways.first, gateways.second):
            with pytest.raises(grpc.RpcError) as err:
                _schemas(stub, name)
            codes.append(err.value.code())
        assert codes == [grpc.StatusCode.PERMISSION_DENIED] * 3
    finally:
        with admin.cursor() as cur:
            cur.execute(
                sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(
                    sql.Identifier(schema), sql.Identifier(role.app)
                )
            )


def test_a_type_shadowed_on_the_search_path_is_then_qualified(
    gateways: Gateways, admin: psycopg2.extensions.connection, schema: str
) -> None:
    """A type created earlier on the search_path ("$user") changes how a column's type is
    written, without changing any row the table's description reads."""
    role = roles_for(admin.dsn)
    assert role is not None
    kind = f"kind_{uuid.uuid4().hex[:6]}"
    name = f"{schema}.k"
    own = sql.Identifier(role.app)
    with admin.cursor() as cur:
        # The schema first: its appearing on the search path changes the cache's key anyway.
        cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(own))
        cur.execute(f"CREATE TYPE public.{kind} AS ENUM ('x'); CREATE TABLE {name} (v {kind})")
    try:
        for stub in (gateways.first, gateways.second):
            assert _column(_schemas(stub, name).schemas[name], "v").type == kind
        with admin.cursor() as cur:
            cur.execute(
                sql.SQL("CREATE TYPE {}.{} AS ENUM ('y')").format(own, sql.Identifier(kind))
            )
        for stub in (gateways.uncached, gateways.first, gateways.second):
            assert _column(_schemas(stub, name).schemas[name], "v").type == f"public.{kind}"
    finally:
        with admin.cursor() as cur:
            cur.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(own))
            cur.execute(f"DROP TABLE {name}; DROP TYPE public.{kind}")


def test_ddl_racing_with_calls_never_mixes_old_and_new(
    gateways: Gateways, seeded_database: str, schema: str
) -> None:
    """Each step renames two columns and changes a default in one transaction: an answer
    that shows one step's names with another's default (or half the renames) mixed them."""
    name = f"{schema}.race"
    steps = 40
    ddl = psycopg2.connect(seeded_database)
    ddl.autocommit = True
    with ddl.cursor() as cur:
        cur.execute(f"CREATE TABLE {name} (a_0 int, b_0 int, c int DEFAULT 0)")
    seen: list[tuple[str, ...]] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def read(stub: Stub) -> None:
        try:
            while not done.is_set():
                table = _schemas(stub, name).schemas[name]
                seen.append((*_columns(table), _column(table, "c").column_default.string_value))
        except BaseException as exc:  # reported by the test below
            errors.append(exc)

    readers = [
        threading.Thread(target=read, args=(stub,))
        for stub in (gateways.first, gateways.second, gateways.first)
    ]
    for reader in readers:
        reader.start()
    try:
        with ddl.cursor() as cur:
            for k in range(steps):
                cur.execute(
                    f"BEGIN; ALTER TABLE {name} RENAME a_{k} TO a_{k + 1};"
                    f" ALTER TABLE {name} RENAME b_{k} TO b_{k + 1};"
                    f" ALTER TABLE {name} ALTER c SET DEFAULT {k + 1}; COMMIT"
                )
                time.sleep(0.005)  # lets the readers see most steps; nothing is timed
    finally:
        done.set()
        for reader in readers:
            reader.join()
        ddl.close()
    assert not errors
    assert len({default for *_, default in seen}) > 2  # the readers saw the steps go by
    for a, b, c, default in seen:
        assert c == "c"
        assert (a, b) == (f"a_{default}", f"b_{default}")
    for stub in (gateways.first, gateways.second):
        table = _schemas(stub, name).schemas[name]
        assert _columns(table) == [f"a_{steps}", f"b_{steps}", "c"]


def test_operators_planted_on_the_search_path_never_run(
    gateways: Gateways, admin: psycopg2.extensions.connection, schema: str
) -> None:
    """The catalog statements compare oids only with operators of pg_catalog: an exact match
    for (oid, integer) created in public, which a principal's SQL could plant for another
    principal's login to run, is never chosen (CVE-2018-1058's pattern)."""
    trap = f"trap_{uuid.uuid4().hex[:8]}"
    with admin.cursor() as cur:
        cur.execute(
            f"CREATE FUNCTION public.{trap}(oid, integer) RETURNS boolean LANGUAGE plpgsql"
            f" AS $$ BEGIN RAISE EXCEPTION 'planted operator ran'; END $$;"
            f"CREATE OPERATOR public.<> (LEFTARG = oid, RIGHTARG = integer,"
            f" FUNCTION = public.{trap});"
            f"CREATE OPERATOR public.= (LEFTARG = oid, RIGHTARG = integer,"
            f" FUNCTION = public.{trap})"
        )
    try:
        for stub in (gateways.uncached, gateways.first):
            answer = _schemas(stub, f"{schema}.t")
            columns = answer.schemas[f"{schema}.t"].columns
            assert [c.column_name for c in columns][:3] == ["id", "label", "n"]
    finally:
        with admin.cursor() as cur:
            cur.execute(
                "DROP OPERATOR public.<> (oid, integer); DROP OPERATOR public.= (oid, integer);"
                f"DROP FUNCTION public.{trap}(oid, integer)"
            )
