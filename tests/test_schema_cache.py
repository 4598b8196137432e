"""SchemaCache: a message only under the very stamp it was built with, and bounded."""

from __future__ import annotations

from datamorph.gateway.v1 import gateway_pb2 as pb
from datamorph_gateway.db.catalog import Relation, TableDescription
from datamorph_gateway.db.stamps import Stamp
from datamorph_gateway.schema_cache import SchemaCache

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


def test_a_message_is_served_only_under_its_own_stamp() -> None:
    cache = SchemaCache(10, 1 << 20)
    built = cache.message(_described(1))
    assert built.table_name == "t1"
    assert cache.lookup(Stamp((SESSION, 1), "v1")) is built
    assert cache.lookup(Stamp((SESSION, 1), "v2")) is None  # the catalog changed
    assert cache.lookup(Stamp(("db other_role {public}", 1), "v1")) is None  # another session
    cache.message(_described(1, "v2"))
    assert cache.lookup(Stamp((SESSION, 1), "v1")) is None
    assert cache.lookup(Stamp((SESSION, 1), "v2")) is not None
    assert len(cache) == 1


def test_a_looked_up_message_passes_through_and_unstamped_ones_are_not_kept() -> None:
    cache = SchemaCache(10, 1 << 20)
    kept = pb.TableSchema(table_name="x")
    assert cache.message(kept) is kept
    unstamped = TableDescription(Relation(2, "public", "t2", "v", 0, 0, 0), [], [], [])
    assert cache.message(unstamped).table_type == "view"
    assert len(cache) == 0


def test_least_recently_used_go_first_by_count_and_by_bytes() -> None:
    cache = SchemaCache(2, 1 << 20)
    for oid in (1, 2):
        cache.message(_described(oid))
    assert cache.lookup(Stamp((SESSION, 1), "v1")) is not None  # 1 is now the most recent
    cache.message(_described(3))
    assert cache.lookup(Stamp((SESSION, 2), "v1")) is None
    assert len(cache) == 2

    size = _described(1, columns=5)
    one = SchemaCache(100, 0)
    one.message(size)
    assert len(one) == 0  # larger than the whole budget: never kept
    each = cache.message(_described(9, columns=5)).ByteSize()
    by_bytes = SchemaCache(100, 2 * each)
    for oid in (1, 2, 3):
        by_bytes.message(_described(oid, columns=5))
    assert len(by_bytes) == 2
    assert by_bytes.bytes <= 2 * each
    assert by_bytes.lookup(Stamp((SESSION, 1), "v1")) is None


def test_zero_relations_turns_it_off() -> None:
    cache = SchemaCache(0, 1 << 20)
    assert not cache.enabled
    cache.message(_described(1))
    assert len(cache) == 0
