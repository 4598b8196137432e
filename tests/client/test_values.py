"""The client decodes each value by its column's PostgreSQL type, and sends them back.

Against a real gateway on a real PostgreSQL: one table with a column of each kind the
contract encodes differently, read through ExecuteQuery, GetData and StreamQuery.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from datamorph_client import GatewayClient, decode_value
from datamorph_client.values import encode_param

TABLE_SQL = """
CREATE TABLE {t} (
    id int4 PRIMARY KEY,
    small int2, medium int4, big int8,
    exact numeric, ratio float8, single float4,
    flag bool, label text, doc jsonb, plain_doc json,
    at timestamp, at_tz timestamptz, day date, clock time, clock_tz timetz,
    raw bytea, uid uuid, took interval, addr inet,
    ints int8[], grid int4[], words text[], days date[], amounts numeric[]
);
INSERT INTO {t} VALUES
 (1, -32767, 2147483647, 9007199254740993,
  12345678901234567890.123456789, 0.5, 1.5,
  true, 'hello', '{{"n": 1, "f": 1.5, "list": [1, 2], "deep": {{"ok": true, "no": null}}}}',
  '{{"k": [1, "two"]}}',
  '2024-02-29 13:45:00.5', '2024-02-29 13:45:00.123456+05:30', '2024-02-29',
  '13:45:00.25', '13:45:00+05:30',
  '\\x00ff10', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '1 day 2 hours', '10.0.0.1',
  '{{1, 9007199254740993, NULL}}', '{{{{1, 2}}, {{3, 4}}}}', '{{"a", "b,c", NULL}}',
  '{{2024-01-01, NULL}}', '{{1.10, NaN}}'),
 (2, 0, 0, 4135,
  'NaN', 2, '-Infinity',
  false, '', '{{}}', '{{}}',
  '1999-12-31 23:59:59', '1999-12-31 23:59:59+00', '1999-12-31',
  '00:00:00', '00:00:00+00',
  '', '00000000-0000-0000-0000-000000000000', '-1 mon', '::1',
  '{{}}', '{{}}', '{{}}', '{{}}', '{{}}'),
 (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
"""

FIRST: dict[str, Any] = {
    "id": 1,
    "small": -32767,
    "medium": 2147483647,
    "big": 9007199254740993,
    "exact": Decimal("12345678901234567890.123456789"),
    "ratio": 0.5,
    "single": 1.5,
    "flag": True,
    "label": "hello",
    "doc": {"n": 1, "f": 1.5, "list": [1, 2], "deep": {"ok": True, "no": None}},
    "plain_doc": {"k": [1, "two"]},
    "at": datetime(2024, 2, 29, 13, 45, 0, 500000),
    "at_tz": datetime(2024, 2, 29, 8, 15, 0, 123456, tzinfo=UTC),
    "day": date(2024, 2, 29),
    "clock": time(13, 45, 0, 250000),
    "clock_tz": time(13, 45, tzinfo=timezone(timedelta(hours=5, minutes=30))),
    "raw": b"\x00\xff\x10",
    "uid": uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
    "took": "P1DT2H",
    "addr": "10.0.0.1",
    "ints": [1, 9007199254740993, None],
    "grid": [[1, 2], [3, 4]],
    "words": ["a", "b,c", None],
    "days": [date(2024, 1, 1), None],
    "amounts": [Decimal("1.10"), Decimal("NaN")],
}

TYPES = {
    "id": int, "small": int, "medium": int, "big": int, "exact": Decimal, "ratio": float,
    "single": float, "flag": bool, "label": str, "doc": dict, "plain_doc": dict,
    "at": datetime, "at_tz": datetime, "day": date, "clock": time, "clock_tz": time,
    "raw": bytes, "uid": uuid.UUID, "took": str, "addr": str, "ints": list, "grid": list,
    "words": list, "days": list, "amounts": list,
}  # fmt: skip


@pytest.fixture(scope="module")
def table(gateway: Any) -> Iterator[str]:
    name = f"typed_values_{uuid.uuid4().hex[:8]}"
    with GatewayClient(gateway.address, timeout_s=20) as c:
        c.execute_query(TABLE_SQL.format(t=name))
        yield name
        c.execute_query(f"DROP TABLE {name}")


def _rows(client: GatewayClient, table: str) -> dict[int, dict[str, Any]]:
    result = client.execute_query(f"SELECT * FROM {table} ORDER BY id")
    return {int(str(r["id"])): r for r in result.rows}


def test_values_are_decoded_by_column_type(client: GatewayClient, table: str) -> None:
    first = _rows(client, table)[1]
    assert _comparable(first) == _comparable(FIRST)  # Decimal("NaN") is unequal to itself
    assert {k: type(v) for k, v in first.items()} == TYPES
    assert first["at"].tzinfo is None
    assert first["at_tz"].utcoffset() == timedelta(0)
    assert type(first["doc"]["n"]) is int  # a whole JSON number, as json.loads reads it
    assert type(first["doc"]["f"]) is float


def test_each_column_holds_one_python_type(client: GatewayClient, table: str) -> None:
    rows = _rows(client, table)
    second = rows[2]
    assert second["big"] == 4135
    assert type(second["big"]) is int  # never 4135.0
    assert second["ratio"] == 2.0
    assert type(second["ratio"]) is float  # a whole float stays a float
    assert second["exact"].is_nan()
    assert second["single"] == -math.inf
    assert second["raw"] == b""
    assert second["ints"] == []
    for column, kind in TYPES.items():
        assert type(rows[1][column]) is kind, column
        assert type(second[column]) is kind, column


def test_null_is_none_in_every_column(client: GatewayClient, table: str) -> None:
    third = _rows(client, table)[3]
    assert all(v is None for k, v in third.items() if k != "id")


def test_get_data_and_stream_query_decode_alike(client: GatewayClient, table: str) -> None:
    queried = client.execute_query(f"SELECT * FROM {table} ORDER BY id")
    sampled = client.get_data([table])[table]
    assert [(c.name, c.type) for c in sampled.columns] == [
        (c.name, c.type) for c in queried.columns
    ]
    assert [c.type for c in queried.columns][:5] == ["int4", "int2", "int4", "int8", "numeric"]
    assert queried.columns[-1].type == "_numeric"
    by_id = {r["id"]: r for r in sampled.rows}
    streamed = [
        row
        for batch in client.stream_query(f"SELECT * FROM {table} ORDER BY id", batch_rows=2)
        for row in batch.rows
    ]
    arrays = client.execute_query(f"SELECT * FROM {table} ORDER BY id", row_format="array")
    keys = [c.key for c in arrays.columns]
    for i, row in enumerate(queried.rows):
        expected = _comparable(row)
        assert _comparable(by_id[row["id"]]) == expected
        assert _comparable(streamed[i]) == expected
        assert _comparable(dict(zip(keys, arrays.rows[i], strict=True))) == expected


def _comparable(value: Any) -> Any:
    """Each value with its type; NaN, unequal to itself, as its repr."""
    if isinstance(value, dict):
        return {k: _comparable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_comparable(v) for v in value]
    if value != value:  # NaN
        return repr(value)
    return (type(value), value)


def test_decoded_values_go_back_as_parameters(client: GatewayClient, table: str) -> None:
    first = _rows(client, table)[1]
    described = client.get_schemas([table])[table]
    for column in described.columns:
        left, right = f"$1::{column.type}", column.name
        if column.udt_name == "json":  # json has no equality; jsonb does
            left, right = f"{left}::jsonb", f"{right}::jsonb"
        result = client.execute_query(
            f"SELECT {left} IS NOT DISTINCT FROM {right} AS same FROM {table} WHERE id = 1",
            [first[column.name]],
        )
        assert result.rows == [{"same": True}], (column.name, first[column.name])


def test_integers_beyond_2_53_round_trip_exactly(client: GatewayClient) -> None:
    big = 2**62 + 1
    result = client.execute_query("SELECT $1::int8 AS v, $1::int8 + 1 AS w", [big])
    assert result.rows == [{"v": big, "w": big + 1}]


def test_values_python_cannot_hold_stay_postgresql_text(client: GatewayClient) -> None:
    result = client.execute_query(
        "SELECT 'infinity'::date AS d, '-infinity'::timestamptz AS ts, "
        "'0044-03-15 BC'::date AS bc, '24:00:00'::time AS midnight, "
        "'2024-01-02'::date AS ok"
    )
    assert result.rows == [
        {
            "d": "infinity",
            "ts": "-infinity",
            "bc": "0044-03-15 BC",
            "midnight": "24:00:00",
            "ok": date(2024, 1, 2),
        }
    ]


def test_other_types_are_text_or_json(client: GatewayClient) -> None:
    result = client.execute_query(
        "SELECT 'happy'::gw_mood AS mood, 42::gw_positive_int AS score, "
        "'12.50'::money AS cash, ARRAY[1, 2]::gw_positive_int[] AS scores, "
        "row(1, 'a') AS pair, 7::oid AS o"
    )
    [row] = result.rows
    assert row["mood"] == "happy"
    assert row["score"] == 42  # a domain is reported, and decoded, as its base type
    assert type(row["score"]) is int
    assert row["cash"] == "$12.50"
    assert row["scores"] == [1, 2]
    assert isinstance(row["scores"], list)
    assert all(type(v) is int for v in row["scores"])
    assert row["pair"] == "(1,a)"
    assert row["o"] == 7


# -- the mapping on its own, without a gateway ---------------------------------------------


@pytest.mark.parametrize(
    ("type_name", "sent", "decoded"),
    [
        ("int8", 4135.0, 4135),
        ("int8", "9007199254740993", 9007199254740993),
        ("int2", -1.0, -1),
        ("oid", 26.0, 26),
        ("numeric", "1.10", Decimal("1.10")),
        ("numeric", "-Infinity", Decimal("-Infinity")),
        ("float4", "Infinity", math.inf),
        ("float8", 1.0, 1.0),
        ("timestamp", "2024-02-29T13:45:00.5", datetime(2024, 2, 29, 13, 45, 0, 500000)),
        (
            "timestamptz",
            "1890-01-01T00:00:00+00:09:21",
            datetime(1890, 1, 1, tzinfo=timezone(timedelta(minutes=9, seconds=21))),
        ),
        ("timestamp", "10000-01-01T00:00:00", "10000-01-01T00:00:00"),
        ("date", "0044-03-15 BC", "0044-03-15 BC"),
        ("bytea", "AP8Q", b"\x00\xff\x10"),
        ("jsonb", {"a": [1.0, 2.5, 1e20]}, {"a": [1, 2.5, 1e20]}),
        ("_int4", [[1.0, None], [3.0, 4.0]], [[1, None], [3, 4]]),
        ("_box", ["(1,1),(0,0)"], ["(1,1),(0,0)"]),
        ("_date", ["2024-01-01", "infinity"], [date(2024, 1, 1), "infinity"]),
        ("interval", "P1Y2M3DT4H5M6.5S", "P1Y2M3DT4H5M6.5S"),
        ("gw_mood", "happy", "happy"),
        ("text", None, None),
    ],
)
def test_decode_value(type_name: str, sent: Any, decoded: Any) -> None:
    value = decode_value(type_name, sent)
    assert value == decoded
    assert type(value) is type(decoded)


def test_encode_param() -> None:
    assert encode_param(2**53) == "9007199254740992"
    assert encode_param(2**53 - 1) == 2**53 - 1
    assert encode_param([1, 2**60, None]) == [1, str(2**60), None]
    assert encode_param({"n": 2**60, "at": date(2024, 1, 2)}) == {"n": 2**60, "at": "2024-01-02"}
    assert encode_param(Decimal("1.10")) == "1.10"
    assert encode_param(datetime(2024, 1, 2, 3, 4, tzinfo=UTC)) == ("2024-01-02T03:04:00+00:00")
    assert encode_param(b"\x00\xff") == "\\x00ff"
    assert encode_param(uuid.UUID(int=1)) == "00000000-0000-0000-0000-000000000001"
    assert encode_param(True) is True
