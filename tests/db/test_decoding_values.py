"""PostgreSQL's text output → the contract's JSON values, function by function, exactly.

tests/db/test_decoding.py checks the same against a real server, type by type; these
tables pin each decoder's edges without one (docs/api.md, "Values from PostgreSQL into
JSON"), so that mutation testing can run them per mutant (docs/testing.md).
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import pytest

from datamorph_gateway.db.decoding.arrays import array_decoder, fix_bounds, parse_array
from datamorph_gateway.db.decoding.catalog import ColumnType
from datamorph_gateway.db.decoding.datetimes import (
    decode_timestamp,
    decode_timestamptz,
    decode_timetz,
)
from datamorph_gateway.db.decoding.json import decode_json
from datamorph_gateway.db.decoding.numbers import (
    decode_bool,
    decode_float,
    decode_int,
    decode_int8,
)
from datamorph_gateway.db.decoding.rows import decode_rows
from datamorph_gateway.db.decoding.startup import SESSION_OPTIONS, startup_options
from datamorph_gateway.db.decoding.text import decode_bytea, decode_text

MAX_SAFE = 2**53 - 1

CASES: list[tuple[Callable[..., Any], str, Any]] = [
    (decode_bool, "t", True),
    (decode_bool, "f", False),
    (decode_int, "0", 0),
    (decode_int, "-32768", -32768),
    (decode_int, "4294967295", 4294967295),
    (decode_int8, "0", 0),
    (decode_int8, "-5", -5),
    (decode_int8, "999999999999999", 999999999999999),  # 15 digits: the short path
    (decode_int8, "1000000000000000", 1000000000000000),  # 16 digits
    (decode_int8, str(MAX_SAFE), MAX_SAFE),
    (decode_int8, str(-MAX_SAFE), -MAX_SAFE),
    (decode_int8, str(MAX_SAFE + 1), str(MAX_SAFE + 1)),
    (decode_int8, str(-MAX_SAFE - 1), str(-MAX_SAFE - 1)),
    (decode_int8, "9223372036854775807", "9223372036854775807"),
    (decode_int8, "-9223372036854775808", "-9223372036854775808"),
    (decode_float, "1.5", 1.5),
    (decode_float, "-0", -0.0),
    (decode_float, "1e+308", 1e308),
    (decode_float, "NaN", "NaN"),
    (decode_float, "Infinity", "Infinity"),
    (decode_float, "-Infinity", "-Infinity"),
    (decode_timestamp, "2024-02-29 13:45:00", "2024-02-29T13:45:00"),
    (decode_timestamp, "2024-02-29 13:45:00.123456", "2024-02-29T13:45:00.123456"),
    (decode_timestamp, "12024-01-02 03:04:05", "12024-01-02T03:04:05"),
    (decode_timestamp, "0044-03-15 12:00:00 BC", "0044-03-15 12:00:00 BC"),
    (decode_timestamp, "infinity", "infinity"),
    (decode_timestamp, "-infinity", "-infinity"),
    (decode_timestamp, "02/29/2024 13:45:00", "02/29/2024 13:45:00"),  # another DateStyle
    (decode_timestamp, "Thu Feb 29 13:45:00 2024", "Thu Feb 29 13:45:00 2024"),
    (decode_timestamp, "1-2 3", "1-2 3"),
    (decode_timestamptz, "2024-02-29 13:45:00+00", "2024-02-29T13:45:00+00:00"),
    (decode_timestamptz, "2024-02-29 13:45:00-05", "2024-02-29T13:45:00-05:00"),
    (decode_timestamptz, "2024-02-29 13:45:00+05:30", "2024-02-29T13:45:00+05:30"),
    (decode_timestamptz, "1900-01-01 00:00:00+00:19:32", "1900-01-01T00:00:00+00:19:32"),
    (decode_timestamptz, "2024-02-29 13:45:00.5+00", "2024-02-29T13:45:00.5+00:00"),
    (decode_timestamptz, "0044-03-15 12:00:00+00 BC", "0044-03-15 12:00:00+00 BC"),
    (decode_timestamptz, "infinity", "infinity"),
    (decode_timestamptz, "02/29/2024 13:45:00 UTC", "02/29/2024 13:45:00 UTC"),
    (decode_timestamptz, "1-2 3+00", "1-2 3+00"),
    (decode_timetz, "13:45:00+00", "13:45:00+00:00"),
    (decode_timetz, "13:45:00-08", "13:45:00-08:00"),
    (decode_timetz, "13:45:00+05:30", "13:45:00+05:30"),
    (decode_timetz, "13:45:00+00:19:32", "13:45:00+00:19:32"),
    (decode_text, "any text", "any text"),
    (decode_text, "", ""),
    (decode_bytea, "\\x", ""),
    (decode_bytea, "\\xdeadbeef", base64.b64encode(bytes.fromhex("deadbeef")).decode()),
    (decode_bytea, "\\x00ff", "AP8="),
    (decode_bytea, "abc", "YWJj"),  # bytea_output = escape
    (decode_bytea, "a\\\\b", base64.b64encode(b"a\\b").decode()),
    (decode_bytea, "\\000\\377x", base64.b64encode(b"\x00\xffx").decode()),
    (decode_bytea, "\\\\000", base64.b64encode(b"\\000").decode()),
    (decode_json, '{"a": [1, 2.5, null, true, "s"]}', {"a": [1, 2.5, None, True, "s"]}),
    (decode_json, "1e400", "1e400"),
    (decode_json, "-1e400", "-1e400"),
    (decode_json, "[1e400, 0.5]", ["1e400", 0.5]),
    (decode_json, "9" * 299, int("9" * 299)),
    (decode_json, "9" * 5000, "9" * 5000),
    (decode_json, "[" + "9" * 5000 + ", 1, 2.5]", ["9" * 5000, 1, 2.5]),
    (decode_json, '"text"', "text"),
    (decode_json, "null", None),
]


@pytest.mark.parametrize(("decode", "text", "expected"), CASES)
def test_each_decoder(decode: Callable[..., Any], text: str, expected: Any) -> None:
    got = decode(text)
    assert got == expected
    assert type(got) is type(expected)
    assert decode(None) is None


def test_big_json_integers_beside_small_ones() -> None:
    """Past CPython's 4300 digits the whole document is read again, with integers of 300
    digits or more (beyond any double) as their text."""
    text = '{"huge": ' + "1" * 5000 + ', "big": ' + "1" * 300 + ', "small": ' + "1" * 299 + "}"
    assert decode_json(text) == {"huge": "1" * 5000, "big": "1" * 300, "small": int("1" * 299)}
    assert decode_json("[" + "1" * 300 + "]") == [int("1" * 300)]  # read once: int() copes


def test_malformed_json_is_refused() -> None:
    with pytest.raises(ValueError, match="Expecting"):
        decode_json("{")
    with pytest.raises(ValueError, match="Expecting"):
        decode_json("[" + "9" * 5000 + ",")


def test_decode_rows_finishes_only_the_columns_that_need_it() -> None:
    def upper(s: str) -> str:
        return s.upper()

    types = [
        ColumnType(25, "text", None),
        ColumnType(25, "text", upper),
        ColumnType(25, "text", upper),
    ]
    rows = [("x", "y", None), ("p", "q", "r")]
    assert decode_rows(types, rows) == [["x", "Y", None], ["p", "Q", "R"]]
    untouched = [("x",)]
    assert decode_rows(types[:1], untouched) is untouched
    assert decode_rows(types, []) == []


def test_session_options_pin_the_output_formats() -> None:
    assert SESSION_OPTIONS == {
        "DateStyle": "ISO, YMD",
        "IntervalStyle": "iso_8601",
        "TimeZone": "UTC",
        "extra_float_digits": "3",
        "bytea_output": "hex",
    }
    ours = (
        "-c DateStyle=ISO,\\ YMD -c IntervalStyle=iso_8601 -c TimeZone=UTC "
        "-c extra_float_digits=3 -c bytea_output=hex"
    )
    assert startup_options() == ours
    assert startup_options("  ") == ours
    assert startup_options("-c search_path=x") == f"-c search_path=x {ours}"


def test_startup_options_escape_whitespace_and_backslashes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("datamorph_gateway.db.decoding.startup.SESSION_OPTIONS", {"a b": "c\\d\te"})
    assert startup_options() == "-c a\\ b=c\\\\d\\\te"


# -- arrays ---------------------------------------------------------------------------------


def test_parse_array_splits_on_commas_by_default() -> None:
    assert parse_array("{a,b}") == ["a", "b"]
    assert parse_array("{(0,0);(1,1)}", ";") == ["(0,0)", "(1,1)"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("abc", "not an array literal: 'abc'"),
        ("x" * 50, f"not an array literal: {'x' * 40!r}"),
        ('{"a}', "unterminated quoted array element at 1"),
        ("{a}}", "text after the array's end at 3"),
        ("{a", "unterminated array literal"),
        ("{", "unterminated array literal"),
        ("{{a}", "unterminated array literal"),
    ],
)
def test_parse_array_refusals_say_why(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=r".") as info:
        parse_array(text)
    assert str(info.value) == message


def test_array_decoder_parses_arrays_and_keeps_other_text() -> None:
    decode = array_decoder(",", int)
    assert decode("{1,NULL}") == [1, None]
    assert decode("[2:3]={1,2}") == [1, 2]
    assert decode("(1,2)") == "(1,2)"  # a non-array type in the array category
    assert decode("") == ""
    assert array_decoder(";", None)("{a;b}") == ["a", "b"]


def test_fix_bounds_strips_every_dimensions_bounds() -> None:
    def caster(s: str, cur: Any) -> tuple[str, Any]:
        return s, cur

    cast = fix_bounds(caster)
    assert cast(None, "cur") is None
    assert cast("[0:1][1:2]={{a,b},{c,d}}", "cur") == ("{{a,b},{c,d}}", "cur")
    assert cast("{a}", "cur") == ("{a}", "cur")
