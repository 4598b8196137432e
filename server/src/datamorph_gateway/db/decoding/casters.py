"""psycopg2's typecasters: the decoders run inside the fetch, in psycopg2's own loop.

Registering them means no ``datetime``/``Decimal``/``memoryview`` is ever built only to
be turned back into text, and no second pass over the rows is needed for built-in types.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Final

import psycopg2.extensions as ext

from datamorph_gateway.db.decoding.arrays import fix_bounds
from datamorph_gateway.db.decoding.catalog import BUILTIN_TYPES, SCALAR_RULES
from datamorph_gateway.db.decoding.oids import ARRAY_ELEMENTS, BOX, SCALAR_NAMES
from datamorph_gateway.db.decoding.text import decode_text

__all__ = ["install"]

# What psycopg2 registers by default and is already right: leave those casters alone.
_PSYCOPG2_RIGHT: Final[dict[int, frozenset[str]]] = {
    16: frozenset({"BOOLEAN"}),
    21: frozenset({"INTEGER"}),
    23: frozenset({"INTEGER"}),
    26: frozenset({"ROWID"}),
}
_PSYCOPG2_TEXT: Final = frozenset({"STRING", "UNICODE", "UNKNOWN"})


def _new_type(oid: int, name: str, fn: Callable[..., Any]) -> Any:
    return ext.new_type((oid,), name, fn)


def _build_casters() -> dict[int, Any]:
    """OID → our typecaster, for every built-in type psycopg2 gets wrong by default."""
    casters: dict[int, Any] = {}
    for oid, rule in SCALAR_RULES.items():
        if oid not in _PSYCOPG2_RIGHT:
            casters[oid] = _new_type(oid, f"DMGW_{SCALAR_NAMES[oid].upper()}", rule)
    c_bases = {16: ext.BOOLEAN, 21: ext.INTEGER, 23: ext.INTEGER, 26: ext.INTEGER}
    for oid, elem in ARRAY_ELEMENTS.items():
        if elem == BOX:
            continue
        base = c_bases.get(elem) or casters.get(elem) or ext.UNICODE
        name = f"DMGW_{SCALAR_NAMES[elem].upper()}ARRAY"
        inner = ext.new_array_type((oid,), name, base)
        casters[oid] = _new_type(oid, name, fix_bounds(inner))
    return casters


_casters: dict[int, Any] = {}
_install_lock = threading.Lock()
_installed_globally = False


def install(conn: ext.connection | None = None) -> None:
    """Make psycopg2 fetch built-in types as the contract's JSON values.

    Global by default (idempotent). Pass a connection to scope the casters to it
    instead, e.g. from the pool's connect hook, if other code in the process needs
    psycopg2's usual ``datetime``/``Decimal`` values. Where psycopg2's own C caster
    already gives the right value (bool, int2, int4, oid, text types) it is kept.
    """
    global _installed_globally
    with _install_lock:
        if conn is None and _installed_globally:
            return
        if not _casters:
            _casters.update(_build_casters())
        scope: dict[int, Any] = ext.string_types if conn is None else conn.string_types
        for oid in BUILTIN_TYPES:
            caster = _casters.get(oid)
            if caster is None:
                current = scope.get(oid) or ext.string_types.get(oid)
                if current is None or current.name in _PSYCOPG2_RIGHT.get(oid, _PSYCOPG2_TEXT):
                    continue
                # Someone registered a caster of their own (register_uuid, a range type…).
                rule = SCALAR_RULES.get(oid, decode_text)
                caster = _new_type(oid, f"DMGW_{oid}", rule)
            if conn is None:
                ext.register_type(caster)
            else:
                ext.register_type(caster, conn)
        if conn is None:
            _installed_globally = True
