"""GetSchemas answers with kept bytes (schema_cache.py): on the wire, byte for byte the
message the servicer built before it kept bytes, whether the answer is new, joined from kept
parts, or kept whole, for tables of every column type the catalog describes."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import psycopg2
import pytest

from datamorph.gateway.v1 import gateway_pb2 as pb
from datamorph_gateway.db.names import parse_table_name
from datamorph_gateway.schema_cache import table_schema

from ..fixtures.databases import throwaway_schema
from ..fixtures.gateway import GatewayFactory

METHOD = "/datamorph.gateway.v1.DataMorphGateway/GetSchemas"


@pytest.fixture
def schema(seeded_database: str) -> Iterator[str]:
    with throwaway_schema(
        seeded_database,
        "bytes",
        (
            "CREATE TYPE {name}.mood AS ENUM ('ok', 'meh');"
            "CREATE DOMAIN {name}.posint AS int NOT NULL CHECK (VALUE > 0);"
            "CREATE SEQUENCE {name}.counter;"
            "CREATE TABLE {name}.parent (a int, b text, PRIMARY KEY (a, b), UNIQUE (b));"
            "CREATE TABLE {name}.wide ("
            "  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
            " n int DEFAULT nextval('{name}.counter'), s smallint DEFAULT 1, f4 real,"
            "  f8 double precision, num numeric, num_ps numeric(12, 3), money money,"
            "  t text DEFAULT 'x''y', vc varchar(40), vcu varchar, ch char(3), bpchar bpchar,"
            '  nm name, ch1 "char", bool boolean DEFAULT true, by bytea,'
            "  d date DEFAULT current_date, tm time(3), tmtz timetz, ts timestamp(0),"
            "  tstz timestamptz DEFAULT now(), iv interval day to second(2),"
            "  j json, jb jsonb DEFAULT '{{}}', x xml, u uuid DEFAULT gen_random_uuid(),"
            "  ip inet, cidr cidr, mac macaddr, mac8 macaddr8, bits bit(4), vbits varbit(8),"
            "  pt point, ln line, bx box, poly polygon, circ circle, tsv tsvector,"
            "  tsq tsquery, r int4range, mr int4multirange, o oid, rc regclass,"
            "  ints int[], txts text[][], moods "
            "{name}.mood[], m {name}.mood, p {name}.posint, ps {name}.posint[],"
            "  twice bigint GENERATED ALWAYS AS (id * 2) STORED,"
            "  pa int, pb text, FOREIGN KEY (pa, pb) REFERENCES "
            "{name}.parent (a, b), FOREIGN KEY (pb) REFERENCES {name}.parent (b));"
            "CREATE VIEW {name}.v AS SELECT id, t, jb FROM {name}.wide;"
            "CREATE MATERIALIZED VIEW {name}.mv AS SELECT m, count(*) FROM {name}.wide GROUP BY m"
        ),
    ) as name:
        yield name


def test_answers_are_the_message_serialized_as_before(
    make_gateway: GatewayFactory, seeded_database: str, schema: str
) -> None:
    gateway = make_gateway()
    originals = [
        f"{schema}.wide",
        f"{schema}.parent",
        f"{schema}.v",
        f"{schema}.mv",
        "typed",
        '"Mixed Schema"."Order Items"',
        "shops",
        f"{schema}.WIDE",  # another spelling of the same table: an entry of its own
        f"{schema}.wide",  # the same name twice: one entry, as in a map
        "customers",
    ]

    def before() -> bytes:
        """What the servicer sent before: each description built into one message."""
        parsed = [parse_table_name(n) for n in originals]
        found = gateway.database.get_schemas(parsed, originals, 10).tables
        response = pb.GetSchemasResponse(status="success")
        for original, table in zip(originals, found, strict=True):
            assert not isinstance(table, bytes)
            response.schemas[original].CopyFrom(table_schema(table))
        return response.SerializeToString(deterministic=True)

    with grpc.insecure_channel(gateway.address) as channel:
        raw = channel.unary_unary(
            METHOD,
            request_serializer=pb.GetSchemasRequest.SerializeToString,
            response_deserializer=None,  # the bytes on the wire
        )

        def call() -> bytes:
            answer: bytes = raw(pb.GetSchemasRequest(table_names=originals), timeout=20)
            return answer

        first = call()  # described, joined from new parts
        assert first == before()
        assert call() == first  # kept whole
        answer = pb.GetSchemasResponse.FromString(first)
        assert len(answer.schemas) == 9
        wide = answer.schemas[f"{schema}.wide"]
        assert len(wide.columns) > 50
        assert "nextval" in wide.columns[1].column_default.string_value
        assert [fk.foreign_column_name for fk in wide.foreign_keys] == ["a", "b", "b"]
        with psycopg2.connect(seeded_database) as admin, admin.cursor() as cur:
            cur.execute(f"ALTER TABLE {schema}.parent RENAME COLUMN b TO bee")
        admin.close()
        changed = call()  # two parts described again, the others kept
        assert changed != first
        assert changed == before()
        assert call() == changed
