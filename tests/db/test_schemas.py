"""GetSchemas over real gRPC: columns, keys, name resolution, one round of catalog queries."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import grpc
import psycopg2
import psycopg2.extensions
import pytest
from google.protobuf import json_format
from psycopg2.sql import Composable

from datamorph.gateway.v1 import gateway_pb2 as pb
from datamorph.gateway.v1 import gateway_pb2_grpc as pb_grpc
from datamorph_client import ColumnSchema, ForeignKey, GatewayClient, GatewayError
from datamorph_gateway.db import catalog
from datamorph_gateway.db.names import TableName, parse_table_name
from datamorph_gateway.db.prepared import PreparingConnection


def as_json(message: object) -> dict[str, Any]:
    return json_format.MessageToDict(
        message,  # type: ignore[arg-type]
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
    )


def test_demo_tables_have_columns_keys_and_foreign_keys(client: GatewayClient) -> None:
    schemas = client.get_schemas(["customers", "orders"])
    assert set(schemas) == {"customers", "orders"}
    orders = schemas["orders"]
    assert orders.name == "orders"
    assert orders.schema == "public"
    assert orders.table_type == "table"
    assert orders.primary_keys == ["id"]
    [fk] = orders.foreign_keys
    assert (fk.column_name, fk.foreign_table_schema, fk.foreign_table_name) == (
        "customer_id",
        "public",
        "customers",
    )
    assert fk.foreign_column_name == "id"
    assert fk.constraint_name
    names = [c.name for c in orders.columns]
    assert names[:2] == ["id", "customer_id"]
    assert [c.ordinal_position for c in orders.columns] == sorted(
        c.ordinal_position for c in orders.columns
    )


def test_column_fields_match_information_schema(stub: pb_grpc.DataMorphGatewayStub) -> None:
    name = '"Mixed Schema"."Order Items"'
    response = stub.GetSchemas(pb.GetSchemasRequest(table_names=[name]))
    table = response.schemas[name]
    cols = {c.column_name: as_json(c) for c in table.columns}
    assert cols["Item Id"]["data_type"] == "integer"
    assert cols["Item Id"]["is_nullable"] == "NO"
    assert cols["Item Id"]["column_default"] is None
    assert cols["Item Id"]["numeric_precision"] == 32
    assert cols["Item Id"]["numeric_scale"] == 0
    assert cols["Item Id"]["character_maximum_length"] is None
    assert cols["Qty"]["column_default"] == "1"
    assert cols["Qty"]["data_type"] == "smallint"
    assert cols["label"]["data_type"] == "character varying"
    assert cols["label"]["character_maximum_length"] == 40
    assert cols["label"]["type"] == "character varying(40)"
    assert cols["label"]["is_nullable"] == "YES"
    assert cols["price"]["numeric_precision"] == 10
    assert cols["price"]["numeric_scale"] == 2
    assert list(table.primary_keys) == ["Item Id"]


def test_the_client_types_each_column_field(client: GatewayClient) -> None:
    name = '"Mixed Schema"."Order Items"'
    table = client.get_schemas([name])[name]
    assert (table.name, table.schema, table.primary_keys) == (
        "Order Items",
        "Mixed Schema",
        ["Item Id"],
    )
    item_id, qty, label, price = table.columns
    assert item_id == ColumnSchema(
        name="Item Id",
        type="integer",
        data_type="integer",
        udt_name="int4",
        nullable=False,
        default=None,
        ordinal_position=1,
        character_maximum_length=None,
        numeric_precision=32,
        numeric_scale=0,
    )
    assert (qty.default, qty.nullable, qty.udt_name) == ("1", True, "int2")
    assert (label.type, label.character_maximum_length) == ("character varying(40)", 40)
    assert (price.type, price.numeric_precision, price.numeric_scale) == ("numeric(10,2)", 10, 2)
    orders = client.get_schemas(["orders"])["orders"]
    status = next(c for c in orders.columns if c.name == "status")
    assert status.default == "'pending'::text"
    assert orders.foreign_keys == [
        ForeignKey(
            "customer_id", "public", "customers", "id", orders.foreign_keys[0].constraint_name
        )
    ]


def test_user_defined_array_and_domain_types(client: GatewayClient) -> None:
    cols = {c.name: c for c in client.get_schemas(["typed"])["typed"].columns}
    assert cols["tags"].data_type == "ARRAY"
    assert cols["tags"].udt_name == "_text"
    assert cols["tags"].type == "text[]"
    assert cols["feeling"].data_type == "USER-DEFINED"
    assert cols["feeling"].udt_name == "gw_mood"
    assert cols["score"].data_type == "integer"  # a domain reports its base type
    assert cols["score"].udt_name == "int4"


def test_composite_foreign_key_lists_each_column_in_order(client: GatewayClient) -> None:
    shops = client.get_schemas(["shops"])["shops"]
    pairs = [(fk.column_name, fk.foreign_column_name) for fk in shops.foreign_keys]
    assert pairs == [("country", "country"), ("region_code", "code")]
    assert {fk.constraint_name for fk in shops.foreign_keys} == {"shops_region_fk"}
    regions = client.get_schemas(["regions"])["regions"]
    assert regions.primary_keys == ["country", "code"]


@pytest.mark.parametrize(
    ("name", "schema", "table", "kind"),
    [
        ("sales.orders", "sales", "orders", "table"),
        ("ORDERS", "public", "orders", "table"),
        ('"CamelTable"', "public", "CamelTable", "table"),
        ("CamelTable", "public", "cameltable", "table"),
        ("big_spenders", "public", "big_spenders", "view"),
        ("order_totals", "public", "order_totals", "materialized_view"),
        ("public . customers", "public", "customers", "table"),
    ],
)
def test_names_resolve_as_postgresql_resolves_them(
    client: GatewayClient, name: str, schema: str, table: str, kind: str
) -> None:
    described = client.get_schemas([name])[name]
    assert (described.schema, described.name, described.table_type) == (schema, table, kind)


def test_keys_of_the_answer_are_the_names_as_sent(stub: pb_grpc.DataMorphGatewayStub) -> None:
    response = stub.GetSchemas(pb.GetSchemasRequest(table_names=["Orders", "sales.orders"]))
    assert set(response.schemas) == {"Orders", "sales.orders"}
    assert response.status == "success"


def test_unknown_tables_are_not_found_and_named(client: GatewayClient) -> None:
    with pytest.raises(GatewayError) as err:
        client.get_schemas(["customers", "no_such_table", "sales.nope"])
    assert err.value.code == grpc.StatusCode.NOT_FOUND
    assert '"no_such_table"' in err.value.message
    assert '"sales.nope"' in err.value.message
    assert err.value.reason == "TABLE_NOT_FOUND"


def test_a_sequence_is_not_a_table(client: GatewayClient) -> None:
    with pytest.raises(GatewayError) as err:
        client.get_schemas(["some_sequence"])
    assert err.value.code == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("factory", [PreparingConnection, psycopg2.extensions.connection])
def test_many_tables_cost_a_constant_number_of_queries(
    seeded_database: str, factory: type[psycopg2.extensions.connection]
) -> None:
    """Fifty tables are resolved and described with one statement, as one table is."""
    calls: list[str] = []

    class Tracing(psycopg2.extensions.cursor):
        def execute(
            self,
            query: str | bytes | Composable,
            vars: Sequence[Any] | Mapping[str, Any] | None = None,
        ) -> None:
            calls.append(str(query))
            super().execute(query, vars)

    names = ["customers", "orders", "sales.orders", "regions", "shops"] * 10
    conn = psycopg2.connect(seeded_database, cursor_factory=Tracing, connection_factory=factory)
    try:
        described = catalog.describe(conn, [parse_table_name(n) for n in names], names)
    finally:
        conn.close()
    assert len(described) == 50
    assert [d.relation.name for d in described[:5]] == [
        "customers",
        "orders",
        "orders",
        "regions",
        "shops",
    ]
    assert len(calls) == 1


def test_every_column_field_equals_information_schema(seeded_database: str) -> None:
    """The inlined formulas give what information_schema.columns gives, column by column."""
    conn = psycopg2.connect(seeded_database)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT c.oid, n.nspname, c.relname FROM pg_class c"
                " JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE c.relkind IN ('r', 'v', 'p')"  # information_schema omits 'm'
                " AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
                # information_schema shows only what the role may use (not the state role's
                # tables in datamorph_gateway): the same condition as its columns view.
                " AND (pg_has_role(c.relowner, 'USAGE')"
                " OR has_any_column_privilege(c.oid, 'SELECT, INSERT, UPDATE, REFERENCES'))"
            )
            found = cur.fetchall()
            oids = [oid for oid, _, _ in found]
            names = [TableName(schema, name) for _, schema, name in found]
            ours = {
                (d.relation.oid, col["column_name"]): tuple(col[k] for k in FIELDS)
                for d in catalog.describe(
                    conn, names, [n.regclass_text() for n in names], allow_system=True
                )
                for col in d.columns
            }
            cur.execute(
                "SELECT c.oid, ic.column_name, " + ", ".join(f"ic.{k}" for k in FIELDS) + " FROM"
                " information_schema.columns ic JOIN pg_namespace n ON n.nspname = ic.table_schema"
                " JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = ic.table_name"
                " WHERE c.oid = ANY(%s)",
                (oids,),
            )
            theirs = {(oid, name): tuple(rest) for oid, name, *rest in cur.fetchall()}
    finally:
        conn.close()
    assert len(theirs) > 50
    assert ours == theirs


FIELDS = (
    "data_type",
    "is_nullable",
    "column_default",
    "ordinal_position",
    "character_maximum_length",
    "numeric_precision",
    "numeric_scale",
)
