"""psycopg2's casters as the gateway installs them (which it replaces, which it keeps, what
each array caster gives back) and the rule each type's text goes through.

tests/db/test_decoding.py checks the values through a real server; psycopg2's casters and
the rules can also be called on text directly, as here.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import psycopg2.extensions as ext
import pytest

from datamorph_gateway.db.decoding import casters, catalog
from datamorph_gateway.db.decoding.catalog import SCALAR_RULES, ColumnType
from datamorph_gateway.db.decoding.oids import ARRAY_ELEMENTS, BOX, SCALAR_NAMES


@pytest.fixture(scope="module")
def built() -> dict[int, Any]:
    return casters._build_casters()


@pytest.mark.parametrize(
    ("oid", "text", "expected"),
    [
        (1000, "{t,f,NULL}", [True, False, None]),  # bool[]
        (1005, "{1,-2}", [1, -2]),  # int2[]
        (1007, "{3,4}", [3, 4]),  # int4[]
        (1028, "{5,6}", [5, 6]),  # oid[]
        (1016, "{9007199254740993}", ["9007199254740993"]),  # int8[], beyond 2^53
        (1009, '{a,"b c"}', ["a", "b c"]),  # text[]
        (1007, "[0:1]={7,8}", [7, 8]),
        (1007, "[0:0][1:2]={{7,8}}", [[7, 8]]),
    ],
)
def test_array_casters_give_the_elements_json_values(
    built: dict[int, Any], oid: int, text: str, expected: list[Any]
) -> None:
    assert built[oid](text, None) == expected


def test_every_array_but_box_has_a_caster_named_for_its_element(built: dict[int, Any]) -> None:
    for oid, elem in ARRAY_ELEMENTS.items():
        if elem == BOX:
            assert oid not in built
        else:
            assert built[oid].name == f"DMGW_{SCALAR_NAMES[elem].upper()}ARRAY"
            assert built[oid].values == (oid,)


def test_scalar_casters_are_named_for_their_type(built: dict[int, Any]) -> None:
    assert built[1184].name == "DMGW_TIMESTAMPTZ"
    assert built[20].name == "DMGW_INT8"
    for oid in (16, 21, 23, 26):  # psycopg2's own C casters are right: kept
        assert oid not in built


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> dict[int, Any]:
    """A copy of psycopg2's global casters that ``install()`` registers into, and a fresh
    ``install``: the process's own psycopg2 is left as it was (the gateway only ever
    installs per connection; other tests read psycopg2's usual values)."""
    scope = dict(ext.string_types)
    monkeypatch.setattr(ext, "string_types", scope)
    monkeypatch.setattr(casters, "_installed_globally", False)

    def register(caster: Any, *conn: Any) -> None:
        assert conn == ()
        scope.update(dict.fromkeys(caster.values, caster))

    monkeypatch.setattr(ext, "register_type", register)
    return scope


def test_install_keeps_psycopg2s_right_casters_and_is_idempotent(
    registry: dict[int, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    casters.install()
    kept = {oid: registry[oid].name for oid in (16, 21, 23, 26, 25, 1043)}
    assert kept == {
        16: "BOOLEAN",
        21: "INTEGER",
        23: "INTEGER",
        26: "ROWID",
        25: "STRING",
        1043: "STRING",
    }
    assert registry[1184].name == "DMGW_TIMESTAMPTZ"
    registered: list[Any] = []
    monkeypatch.setattr(ext, "register_type", lambda *args: registered.append(args))
    casters.install()
    assert registered == []  # installed once: nothing to do


def test_a_caster_someone_else_registered_is_replaced(registry: dict[int, Any]) -> None:
    """register_uuid and the like: the gateway's contract (uuid → string) wins."""
    registry[2950] = ext.new_type((2950,), "UUID", lambda s, cur: ("theirs", s))
    registry[25] = ext.new_type((25,), "STRING", lambda s, cur: s)
    casters.install()
    assert registry[2950].name == "DMGW_2950"
    text = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
    assert registry[2950](text, None) == text
    assert registry[25].name == "STRING"  # psycopg2's own text caster stays


# -- the rules each type's text goes through (db/decoding/catalog.py) -------------------------

RULES: dict[int, tuple[str, Any]] = {
    16: ("t", True),
    17: ("\\x00ff", "AP8="),
    20: ("9007199254740993", "9007199254740993"),
    21: ("-7", -7),
    23: ("7", 7),
    26: ("4294967295", 4294967295),
    114: ('{"a": [1]}', {"a": [1]}),
    700: ("NaN", "NaN"),
    701: ("-Infinity", "-Infinity"),
    1114: ("2024-01-02 03:04:05", "2024-01-02T03:04:05"),
    1184: ("2024-01-02 03:04:05+00", "2024-01-02T03:04:05+00:00"),
    1266: ("03:04:05-07", "03:04:05-07:00"),
    3802: ('{"b": null}', {"b": None}),
}


def test_the_scalars_whose_text_is_not_their_value_and_their_rules() -> None:
    assert set(SCALAR_RULES) == set(RULES)
    for oid, (text, expected) in RULES.items():
        assert SCALAR_RULES[oid](text) == expected, oid


def test_column_types_are_frozen_slotted_values() -> None:
    column = ColumnType(25, "text")
    with pytest.raises(dataclasses.FrozenInstanceError):
        column.name = "other"  # type: ignore[misc]
    assert not hasattr(column, "__dict__")
    pg = catalog._PgType("t", "b", 0, 0, "S", ",")
    with pytest.raises(dataclasses.FrozenInstanceError):
        pg.name = "other"  # type: ignore[misc]
    assert not hasattr(pg, "__dict__")


@pytest.mark.parametrize(
    ("elem", "delim", "text", "expected"),
    [
        (BOX, ";", "{(1,1),(0,0);(2,2),(1,1)}", ["(1,1),(0,0)", "(2,2),(1,1)"]),
        (25, ",", "{a,b}", ["a", "b"]),
    ],
)
def test_an_array_of_an_element_the_catalog_lacks_splits_as_the_server_would(
    elem: int, delim: str, text: str, expected: list[str]
) -> None:
    array = catalog._PgType("_x", "b", 0, elem, "A", ",")
    rule = catalog._rule(90001, {90001: array})
    assert rule is not None
    assert rule(text) == expected


def test_only_arrays_with_an_element_are_read_as_arrays() -> None:
    not_array = catalog._PgType("x", "b", 0, 0, "A", ",")  # array category, no element
    assert catalog._rule(90002, {90002: not_array}) is None
    elem_only = catalog._PgType("x", "b", 0, 25, "U", ",")  # an element, not an array
    assert catalog._rule(90003, {90003: elem_only}) is None
