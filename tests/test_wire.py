"""Values ⇄ google.protobuf.Value, exactly: which kind each JSON-ready value becomes, on
every row path (one value, a Struct row, object rows, array rows), and parameters back."""

from __future__ import annotations

import math
from typing import Any

import pytest
from google.protobuf.struct_pb2 import NULL_VALUE, ListValue, Struct, Value

from datamorph_gateway.wire import (
    append_array_rows,
    append_object_rows,
    from_value,
    row_struct,
    set_scalar,
    to_value,
)


def plain(value: Value) -> tuple[str | None, Any]:
    """The kind a Value holds and its content, as plain Python."""
    kind = value.WhichOneof("kind")
    if kind == "struct_value":
        return kind, {k: plain(v) for k, v in value.struct_value.fields.items()}
    if kind == "list_value":
        return kind, [plain(v) for v in value.list_value.values]
    if kind is None:
        return None, None
    return kind, getattr(value, kind)


N, S, B, Z = "number_value", "string_value", "bool_value", "null_value"
CASES: list[tuple[Any, tuple[str | None, Any]]] = [
    (None, (Z, NULL_VALUE)),
    ("", (S, "")),
    ("text", (S, "text")),
    (True, (B, True)),
    (False, (B, False)),
    (0, (N, 0.0)),
    (-7, (N, -7.0)),
    (2**53 - 1, (N, float(2**53 - 1))),
    (10**400, (S, str(10**400))),
    (-(10**400), (S, str(-(10**400)))),
    (0.0, (N, 0.0)),
    (-2.5, (N, -2.5)),
    (1e308, (N, 1e308)),
    (math.inf, (S, "Infinity")),
    (-math.inf, (S, "-Infinity")),
    (math.nan, (S, "NaN")),
    ([], ("list_value", [])),
    ((), ("list_value", [])),
    ([1, None, "a"], ("list_value", [(N, 1.0), (Z, NULL_VALUE), (S, "a")])),
    (("x", math.inf), ("list_value", [(S, "x"), (S, "Infinity")])),
    ({}, ("struct_value", {})),
    (
        {"a": {"b": [True]}},
        ("struct_value", {"a": ("struct_value", {"b": ("list_value", [(B, True)])})}),
    ),
]


@pytest.mark.parametrize(("value", "expected"), CASES)
def test_each_value_becomes_its_kind(value: Any, expected: tuple[str | None, Any]) -> None:
    assert plain(to_value(value)) == expected


@pytest.mark.parametrize(("value", "expected"), CASES)
def test_every_row_path_agrees(value: Any, expected: tuple[str | None, Any]) -> None:
    keys = ["v", "w"]
    row = [value, "after"]
    whole = ("struct_value", {"v": expected, "w": (S, "after")})
    assert plain(Value(struct_value=row_struct(keys, row))) == whole
    objects = ListValue()
    append_object_rows(objects.values, keys, [row, row])
    assert [plain(v) for v in objects.values] == [whole, whole]
    arrays = ListValue()
    append_array_rows(arrays.values, [row])
    assert [plain(v) for v in arrays.values] == [("list_value", [expected, (S, "after")])]


def test_empty_rows_are_empty_objects_and_arrays() -> None:
    objects = ListValue()
    append_object_rows(objects.values, [], [[], []])
    assert [plain(v) for v in objects.values] == [("struct_value", {}), ("struct_value", {})]
    arrays = ListValue()
    append_array_rows(arrays.values, [[]])
    assert [plain(v) for v in arrays.values] == [("list_value", [])]


def test_rows_and_keys_must_match_in_length() -> None:
    with pytest.raises(ValueError, match="zip"):
        row_struct(["a", "b"], [1])
    with pytest.raises(ValueError, match="zip"):
        append_object_rows(ListValue().values, ["a"], [[1, 2]])


def test_a_repeated_key_keeps_the_last_value() -> None:
    assert plain(Value(struct_value=row_struct(["a", "a"], [1, 2]))) == (
        "struct_value",
        {"a": (N, 2.0)},
    )
    objects = ListValue()
    append_object_rows(objects.values, ["a", "a"], [["x", None]])
    assert plain(objects.values[0]) == ("struct_value", {"a": (Z, NULL_VALUE)})


@pytest.mark.parametrize("value", [b"raw", object(), {1, 2}, bytearray(b"x")])
def test_values_the_decoders_never_make_are_refused(value: Any) -> None:
    with pytest.raises(TypeError) as info:
        to_value(value)
    assert str(info.value) == f"not a JSON-ready value: {type(value).__name__}"
    with pytest.raises(TypeError):
        append_object_rows(ListValue().values, ["k"], [[value]])


class Text(str):
    """A str subclass: not ``type(v) is str``, so it takes the general path."""


def test_subclasses_take_the_general_path() -> None:
    with pytest.raises(TypeError, match="not a JSON-ready value: Text"):
        to_value(Text("x"))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, (Z, NULL_VALUE)),
        ("nextval('s')", (S, "nextval('s')")),
        ("", (S, "")),
        (255, (N, 255.0)),
        (0, (N, 0.0)),
        (2.5, (N, 2.5)),
    ],
)
def test_set_scalar(value: Any, expected: tuple[str | None, Any]) -> None:
    target = Value()
    set_scalar(target, value)
    assert plain(target) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Value(), None),
        (Value(null_value=NULL_VALUE), None),
        (Value(string_value="s"), "s"),
        (Value(number_value=1.5), 1.5),
        (Value(bool_value=False), False),
        (Value(bool_value=True), True),
        (to_value([1, "a", None, [True]]), [1.0, "a", None, [True]]),
        (to_value({"a": {"b": None}, "c": [{}]}), {"a": {"b": None}, "c": [{}]}),
        (Value(struct_value=Struct()), {}),
        (Value(list_value=ListValue()), []),
    ],
)
def test_from_value(value: Value, expected: Any) -> None:
    got = from_value(value)
    assert got == expected
    assert type(got) is type(expected)
