"""SchemaCache: bytes only under the very stamp they were built with, bounded, and answers
joined from parts exactly as protobuf would serialize the message."""

from __future__ import annotations

from datamorph.gateway.v1 import gateway_pb2 as pb
from datamorph_gateway.db.catalog import Relation, TableDescription
from datamorph_gateway.db.stamps import RequestStamp, Stamp
from datamorph_gateway.schema_cache import SchemaCache, response_bytes, table_schema

SESSION = "db user {public}"


def _described(oid: int, version: str = "v1", columns: int = 1) -> TableDescription:
    cols = [
        {
            "column_name": f"c{i}",
            "data_type": "integer",
            "is_nullable": "YES",
            "column_default": None,
            "ordinal_position": i + 1,
            "character_maximum_length": None,
            "numeric_precision": 32,
            "numeric_scale": 0,
            "udt_name": "int4",
            "type": "integer",
        }
        for i in range(columns)
    ]
    relation = Relation(oid, "public", f"t{oid}", "r", 0, 0, 0)
    return TableDescription(relation, cols, [], [], Stamp((SESSION, oid), version))


def _old_answer(originals: list[str], tables: list[TableDescription]) -> bytes:
    """The answer as the servicer built it before it kept bytes: a message, each part copied."""
    response = pb.GetSchemasResponse(status="success")
    for original, table in zip(originals, tables, strict=True):
        response.schemas[original].CopyFrom(table_schema(table))
    return response.SerializeToString(deterministic=True)


def test_a_part_is_served_only_under_its_own_stamp() -> None:
    cache = SchemaCache(10, 1 << 20)
    built = cache.serialized(_described(1))
    assert pb.TableSchema.FromString(built).table_name == "t1"
    assert cache.lookup(Stamp((SESSION, 1), "v1")) == built
    assert cache.lookup(Stamp((SESSION, 1), "v2")) is None  # the catalog changed
    assert cache.lookup(Stamp(("db other_role {public}", 1), "v1")) is None  # another session
    cache.serialized(_described(1, "v2"))
    assert cache.lookup(Stamp((SESSION, 1), "v1")) is None
    assert cache.lookup(Stamp((SESSION, 1), "v2")) is not None
    assert len(cache) == 1


def test_a_looked_up_part_passes_through_and_unstamped_ones_are_not_kept() -> None:
    cache = SchemaCache(10, 1 << 20)
    kept = b"\x0a\x01x"
    assert cache.serialized(kept) is kept
    unstamped = TableDescription(Relation(2, "public", "t2", "v", 0, 0, 0), [], [], [])
    assert pb.TableSchema.FromString(cache.serialized(unstamped)).table_type == "view"
    assert len(cache) == 0


def test_an_answer_is_kept_under_its_digest_and_names_as_written() -> None:
    cache = SchemaCache(10, 1 << 20)
    request = RequestStamp((SESSION, ("t1", "public.t2")), "d1")
    tables = [_described(1), _described(2)]
    answer = cache.assemble("success", ["t1", "public.t2"], tables, request)
    assert answer == _old_answer(["t1", "public.t2"], tables)
    assert cache.answer(request) == answer
    assert cache.answer(RequestStamp(request.key, "d2")) is None  # something changed
    assert cache.answer(RequestStamp((SESSION, ("public.t2", "t1")), "d1")) is None
    # Its parts were kept too, for other requests that name them.
    assert cache.lookup(Stamp((SESSION, 2), "v1")) is not None
    assert len(cache) == 3


def test_an_answer_kept_with_its_digest_passes_a_moved_count_under_the_same_digest() -> None:
    """The DDL counter moved for DDL elsewhere: the same digest still finds the answer, which
    is then kept under the new count; another digest, or none, does not."""
    cache = SchemaCache(10, 1 << 20)
    names = ["t1"]
    request = RequestStamp((SESSION, tuple(names)), "ddl 1", digest="d1")
    answer = cache.assemble("success", names, [_described(1)], request)
    assert cache.holds(RequestStamp(request.key, "ddl 2"))
    assert not cache.holds(RequestStamp((SESSION, ("t2",)), "ddl 2"))
    assert cache.answer(RequestStamp(request.key, "ddl 2")) is None  # no digest asked yet
    assert cache.answer(RequestStamp(request.key, "ddl 2", digest="d2")) is None  # changed
    assert cache.answer(RequestStamp(request.key, "ddl 2", digest="d1")) == answer
    assert cache.answer(RequestStamp(request.key, "ddl 2")) == answer  # its version now
    assert cache.answer(RequestStamp(request.key, "ddl 1")) is None
    # Kept without a digest (the count moved, nothing was kept yet): only its version finds it.
    bare = RequestStamp((SESSION, ("t3",)), "ddl 5")
    cache.assemble("success", ["t3"], [_described(3)], bare)
    assert cache.answer(RequestStamp(bare.key, "ddl 6", digest="d1")) is None


def test_joined_bytes_are_the_message_serialized() -> None:
    """Names in any order, repeated (one map entry, as before), spelled with non-ASCII
    letters or quotes, and parts from the cache or freshly built: the same bytes as the
    message built and serialized deterministically."""
    cache = SchemaCache(100, 1 << 20)
    originals = ["zeta", '"Ä".b', "t1", "alpha", "t1", "é", "E"]
    tables = [_described(i + 1, columns=i) for i in range(len(originals))]
    tables[4] = tables[2]  # the same name twice means the same relation
    fresh = cache.assemble("success", originals, tables)
    assert fresh == _old_answer(originals, tables)
    parts: list[TableDescription | bytes] = [
        cache.lookup(t.stamp) or b"" for t in tables if t.stamp is not None
    ]
    assert cache.assemble("success", originals, parts) == fresh
    empty = pb.GetSchemasResponse(status="success").SerializeToString()
    assert response_bytes("success", {}) == empty
    big = _described(300, columns=300)  # lengths past one varint byte
    assert cache.assemble("success", ["big"], [big]) == _old_answer(["big"], [big])


def test_least_recently_used_go_first_by_count_and_by_bytes() -> None:
    cache = SchemaCache(2, 1 << 20)
    for oid in (1, 2):
        cache.serialized(_described(oid))
    assert cache.lookup(Stamp((SESSION, 1), "v1")) is not None  # 1 is now the most recent
    cache.serialized(_described(3))
    assert cache.lookup(Stamp((SESSION, 2), "v1")) is None
    assert len(cache) == 2

    size = _described(1, columns=5)
    one = SchemaCache(100, 0)
    one.serialized(size)
    assert len(one) == 0  # larger than the whole budget: never kept
    each = len(cache.serialized(_described(9, columns=5)))
    by_bytes = SchemaCache(100, 2 * each)
    for oid in (1, 2, 3):
        by_bytes.serialized(_described(oid, columns=5))
    assert len(by_bytes) == 2
    assert by_bytes.bytes <= 2 * each
    assert by_bytes.lookup(Stamp((SESSION, 1), "v1")) is None


def test_an_answer_counts_as_the_relations_it_holds() -> None:
    cache = SchemaCache(3, 1 << 20)
    names = ["a", "b"]
    request = RequestStamp((SESSION, tuple(names)), "d1")
    cache.assemble("success", names, [_described(1), _described(2)], request)
    # Two parts and an answer of two: four relations, over three, so the oldest part went.
    assert cache.lookup(Stamp((SESSION, 1), "v1")) is None
    assert cache.answer(request) is not None
    too_many = RequestStamp((SESSION, ("a", "b", "c", "d")), "d1")
    tables = [_described(i) for i in range(4)]
    cache.assemble("success", ["a", "b", "c", "d"], tables, too_many)
    assert cache.answer(too_many) is None  # more relations than the cache holds


def test_zero_relations_turns_it_off() -> None:
    cache = SchemaCache(0, 1 << 20)
    assert not cache.enabled
    cache.serialized(_described(1))
    cache.assemble("success", ["t1"], [_described(1)], RequestStamp((SESSION, ("t1",)), "d"))
    assert len(cache) == 0
