"""psycopg2's casters as the gateway installs them: which it replaces, which it keeps, and
what each array caster gives back (tests/db/test_decoding.py checks the values through a
real server; psycopg2's casters can also be called on text directly, as here)."""

from __future__ import annotations

from typing import Any

import psycopg2.extensions as ext
import pytest

from datamorph_gateway.db.decoding import casters
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


def test_install_keeps_psycopg2s_right_casters_and_is_idempotent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    casters.install()
    kept = {oid: ext.string_types[oid].name for oid in (16, 21, 23, 26, 25, 1043)}
    assert kept == {
        16: "BOOLEAN",
        21: "INTEGER",
        23: "INTEGER",
        26: "ROWID",
        25: "STRING",
        1043: "STRING",
    }
    assert ext.string_types[1184].name == "DMGW_TIMESTAMPTZ"
    registered: list[Any] = []
    monkeypatch.setattr(ext, "register_type", lambda *args: registered.append(args))
    casters.install()
    assert registered == []  # installed once: nothing to do


def test_a_caster_someone_else_registered_is_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    """register_uuid and the like: the gateway's contract (uuid → string) wins."""
    theirs = ext.new_type((2950,), "UUID", lambda s, cur: ("theirs", s))
    monkeypatch.setattr(casters, "_installed_globally", False)
    scope = dict(ext.string_types)
    scope[2950] = theirs
    monkeypatch.setattr(ext, "string_types", scope)
    registered: list[Any] = []
    monkeypatch.setattr(ext, "register_type", lambda caster, *rest: registered.append(caster))
    casters.install()
    [uuid] = [c for c in registered if c.values == (2950,)]
    assert uuid.name == "DMGW_2950"
    assert uuid("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", None) == (
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
    )
    # psycopg2's own text casters are left where they are.
    assert not [c for c in registered if c.values in ((25,), (16,), (23,))]
