"""PostgreSQL result values as JSON-ready Python values, per the contract's value table.

Decoding happens inside psycopg2's fetch: ``install()`` registers typecasters for the
built-in types that turn PostgreSQL's text output straight into the JSON value, so no
``datetime``/``Decimal``/``memoryview`` is ever built only to be turned back into text.
The casters rely on the text formats pinned by ``SESSION_OPTIONS``; they are sent as
libpq startup options, so they are the session defaults that ``RESET ALL`` and
``DISCARD ALL`` go back to after user SQL changed them. If user SQL changes a format
and reads in the same session, values in that format pass through as PostgreSQL's
text instead of failing the query.

Types whose OIDs differ per database (enums, domains, composites, arrays of those,
extension types) are resolved once per OID by ``TypeCatalog``; values psycopg2 left
as text are finished by ``decode_rows``.

Rules beyond the contract's table, so a typed client can rely on them:
- date/timestamp/timestamptz ``infinity``, ``-infinity`` and BC values stay exactly as
  PostgreSQL prints them (``"0044-03-15 BC"``, ``"0044-03-15 12:00:00+00 BC"``): ISO-8601
  has no BC era and no infinity.
- timestamptz/timetz offsets are ``±HH:MM``; historical offsets with seconds (local mean
  time before 1900 in a non-UTC session) keep them, ``±HH:MM:SS``.
- intervals are PostgreSQL's ``iso_8601`` style, which signs each field (``P-1Y-2M3DT-4H``).
- int2vector and oidvector are text (space separated), as PostgreSQL prints them.
- json/jsonb numbers too large for a double (``1e400``) become their text, so no NaN or
  infinity reaches JSON; huge integers stay exact Python ints until protobuf (doubles).
- a domain column is reported with its base type's name: PostgreSQL itself describes a
  domain column by its base type, which is also what a client needs to decode it.
"""

from __future__ import annotations

import binascii
import json
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

import psycopg2.extensions as ext

__all__ = [
    "SESSION_OPTIONS",
    "ColumnType",
    "TypeCatalog",
    "decode_rows",
    "install",
    "parse_array",
    "startup_options",
]

Decoder = Callable[[str], Any]


class _Rule(Protocol):
    """Text output (None for NULL) to a JSON value; doubles as a psycopg2 caster."""

    def __call__(self, s: str | None, cur: Any = None, /) -> Any: ...


# -- session formats --------------------------------------------------------------------

SESSION_OPTIONS: dict[str, str] = {
    "DateStyle": "ISO, YMD",
    "IntervalStyle": "iso_8601",
    "TimeZone": "UTC",
    "extra_float_digits": "3",
    "bytea_output": "hex",
}

_OPTION_SPECIAL = re.compile(r"([\\\s])")


def _escape_option(text: str) -> str:
    return _OPTION_SPECIAL.sub(r"\\\1", text)


def startup_options(base: str = "") -> str:
    """The libpq ``options`` value that pins ``SESSION_OPTIONS`` for a connection.

    ``base`` is any ``options`` value the DSN already had; it goes first so that ours,
    applied later by the server, win. libpq splits on unescaped whitespace, hence the
    backslashes.
    """
    ours = " ".join(
        f"-c {_escape_option(k)}={_escape_option(v)}" for k, v in SESSION_OPTIONS.items()
    )
    return f"{base} {ours}" if base.strip() else ours


# -- text output to JSON values ---------------------------------------------------------
# Each takes PostgreSQL's text output (None for NULL) and an unused cursor, so one
# function serves as a psycopg2 caster and as an array element decoder.

_MAX_SAFE_INT: Final = 2**53 - 1


def _bool(s: str | None, _cur: Any = None) -> bool | None:
    return None if s is None else s == "t"


def _int(s: str | None, _cur: Any = None) -> int | None:
    return None if s is None else int(s)


def _int8(s: str | None, _cur: Any = None) -> int | str | None:
    if s is None:
        return None
    if len(s) < 16:
        return int(s)
    v = int(s)
    return v if -_MAX_SAFE_INT <= v <= _MAX_SAFE_INT else s


def _float(s: str | None, _cur: Any = None) -> float | str | None:
    if s is None:
        return None
    f = float(s)
    # Only NaN and the infinities fail this; PostgreSQL spells them as the contract does.
    return f if f - f == 0 else s


def _text(s: str | None, _cur: Any = None) -> str | None:
    return s


def _offset(t: str) -> str:
    """``…+00`` → ``…+00:00``; ``±HH:MM`` and ``±HH:MM:SS`` are kept."""
    return t + ":00" if t[-3] in "+-" else t


def _timestamp(s: str | None, _cur: Any = None) -> str | None:
    if s is None:
        return None
    p = s.find(" ")
    # ISO output has "-DD " before the space; other DateStyles and BC/infinity pass through.
    if p < 3 or s[p - 3] != "-" or s[-1] == "C":
        return s
    return s[:p] + "T" + s[p + 1 :]


def _timestamptz(s: str | None, _cur: Any = None) -> str | None:
    if s is None:
        return None
    p = s.find(" ")
    if p < 3 or s[p - 3] != "-" or s[-1] == "C":
        return s
    return s[:p] + "T" + _offset(s[p + 1 :])


def _timetz(s: str | None, _cur: Any = None) -> str | None:
    return None if s is None else _offset(s)


_BYTEA_ESCAPE = re.compile(rb"\\(\\|[0-7]{3})")


def _bytea(s: str | None, _cur: Any = None) -> str | None:
    if s is None:
        return None
    if s[:2] == "\\x":
        raw = binascii.a2b_hex(s[2:])
    else:  # bytea_output = escape, set by user SQL
        raw = _BYTEA_ESCAPE.sub(
            lambda m: b"\\" if m[1] == b"\\" else bytes((int(m[1], 8),)), s.encode("ascii")
        )
    return binascii.b2a_base64(raw, newline=False).decode("ascii")


def _json_float(t: str) -> float | str:
    f = float(t)
    return f if f - f == 0 else t


def _json_int(t: str) -> int | str:
    # Past 4300 digits int() refuses (CPython's limit); past ~309 no double holds it.
    return int(t) if len(t) < 300 else t


_json_decode = json.JSONDecoder(parse_float=_json_float).decode
_json_decode_big = json.JSONDecoder(parse_float=_json_float, parse_int=_json_int).decode


def _json(s: str | None, _cur: Any = None) -> Any:
    if s is None:
        return None
    try:
        return _json_decode(s)
    except ValueError:
        return _json_decode_big(s)


# -- arrays ------------------------------------------------------------------------------

_QUOTED = re.compile(r'"([^"\\]*(?:\\.[^"\\]*)*)"', re.DOTALL)
_ESCAPED = re.compile(r"\\(.)", re.DOTALL)


def parse_array(text: str, delim: str = ",", element: Decoder | None = None) -> list[Any]:
    """Parse PostgreSQL's array output into nested lists.

    Exists because psycopg2's parser only splits on commas (box[] uses ``;``), rejects
    multi-dimensional bounds decoration (``[0:1][1:2]={…}``) and cannot be applied to
    values already fetched. ``element`` decodes each non-NULL element's text.
    """
    i = text.index("=") + 1 if text[:1] == "[" else 0
    if text[i : i + 1] != "{":
        raise ValueError(f"not an array literal: {text[:40]!r}")
    n = len(text)
    i += 1
    root: list[Any] = []
    current = root
    stack: list[list[Any]] = []
    while i < n:
        c = text[i]
        if c == delim:
            i += 1
        elif c == '"':
            m = _QUOTED.match(text, i)
            if m is None:
                raise ValueError(f"unterminated quoted array element at {i}")
            raw = m[1]
            if "\\" in raw:
                raw = _ESCAPED.sub(r"\1", raw)
            current.append(raw if element is None else element(raw))
            i = m.end()
        elif c == "{":
            inner: list[Any] = []
            current.append(inner)
            stack.append(current)
            current = inner
            i += 1
        elif c == "}":
            i += 1
            if not stack:
                if i != n:
                    raise ValueError(f"text after the array's end at {i}")
                return root
            current = stack.pop()
        else:
            end = text.find(delim, i)
            brace = text.find("}", i)
            if end < 0 or 0 <= brace < end:
                end = brace
            if end < 0:
                raise ValueError("unterminated array literal")
            raw = text[i:end]
            if raw == "NULL":
                current.append(None)
            else:
                current.append(raw if element is None else element(raw))
            i = end
    raise ValueError("unterminated array literal")


def _array_decoder(delim: str, element: Decoder | None) -> Decoder:
    def decode(s: str) -> Any:
        # A non-array type may sit in the array category (extensions); keep its text.
        if s[:1] not in ("{", "["):
            return s
        return parse_array(s, delim, element)

    return decode


# -- built-in types ----------------------------------------------------------------------
# OIDs below 10000 are fixed by PostgreSQL's source (identical in 12 … 18); this is every
# built-in non-composite type plus the catalog row types that have built-in arrays.

_SCALAR_NAMES: Final[dict[int, str]] = {
    16: "bool", 17: "bytea", 18: "char", 19: "name", 20: "int8", 21: "int2",
    22: "int2vector", 23: "int4", 24: "regproc", 25: "text", 26: "oid", 27: "tid", 28: "xid",
    29: "cid", 30: "oidvector", 32: "pg_ddl_command", 71: "pg_type", 75: "pg_attribute",
    81: "pg_proc", 83: "pg_class", 114: "json", 142: "xml", 194: "pg_node_tree",
    269: "table_am_handler", 325: "index_am_handler", 600: "point", 601: "lseg", 602: "path",
    603: "box", 604: "polygon", 628: "line", 650: "cidr", 700: "float4", 701: "float8",
    705: "unknown", 718: "circle", 774: "macaddr8", 790: "money", 829: "macaddr", 869: "inet",
    1033: "aclitem", 1042: "bpchar", 1043: "varchar", 1082: "date", 1083: "time",
    1114: "timestamp", 1184: "timestamptz", 1186: "interval", 1266: "timetz", 1560: "bit",
    1562: "varbit", 1700: "numeric", 1790: "refcursor", 2202: "regprocedure",
    2203: "regoper", 2204: "regoperator", 2205: "regclass", 2206: "regtype", 2249: "record",
    2275: "cstring", 2276: "any", 2277: "anyarray", 2278: "void", 2279: "trigger",
    2280: "language_handler", 2281: "internal", 2283: "anyelement", 2776: "anynonarray",
    2950: "uuid", 2970: "txid_snapshot", 3115: "fdw_handler", 3220: "pg_lsn",
    3310: "tsm_handler", 3361: "pg_ndistinct", 3402: "pg_dependencies", 3500: "anyenum",
    3614: "tsvector", 3615: "tsquery", 3642: "gtsvector", 3734: "regconfig",
    3769: "regdictionary", 3802: "jsonb", 3831: "anyrange", 3838: "event_trigger",
    3904: "int4range", 3906: "numrange", 3908: "tsrange", 3910: "tstzrange",
    3912: "daterange", 3926: "int8range", 4072: "jsonpath", 4089: "regnamespace",
    4096: "regrole", 4191: "regcollation", 4451: "int4multirange", 4532: "nummultirange",
    4533: "tsmultirange", 4534: "tstzmultirange", 4535: "datemultirange",
    4536: "int8multirange", 4537: "anymultirange", 4538: "anycompatiblemultirange",
    4600: "pg_brin_bloom_summary", 4601: "pg_brin_minmax_multi_summary", 5017: "pg_mcv_list",
    5038: "pg_snapshot", 5069: "xid8", 5077: "anycompatible", 5078: "anycompatiblearray",
    5079: "anycompatiblenonarray", 5080: "anycompatiblerange",
}  # fmt: skip

# Array type OID → element type OID; an array's name is "_" + its element's name.
_ARRAY_ELEMENTS: Final[dict[int, int]] = {
    143: 142, 199: 114, 210: 71, 270: 75, 271: 5069, 272: 81, 273: 83, 629: 628, 651: 650,
    719: 718, 775: 774, 791: 790, 1000: 16, 1001: 17, 1002: 18, 1003: 19, 1005: 21,
    1006: 22, 1007: 23, 1008: 24, 1009: 25, 1010: 27, 1011: 28, 1012: 29, 1013: 30,
    1014: 1042, 1015: 1043, 1016: 20, 1017: 600, 1018: 601, 1019: 602, 1020: 603, 1021: 700,
    1022: 701, 1027: 604, 1028: 26, 1034: 1033, 1040: 829, 1041: 869, 1115: 1114,
    1182: 1082, 1183: 1083, 1185: 1184, 1187: 1186, 1231: 1700, 1263: 2275, 1270: 1266,
    1561: 1560, 1563: 1562, 2201: 1790, 2207: 2202, 2208: 2203, 2209: 2204, 2210: 2205,
    2211: 2206, 2287: 2249, 2949: 2970, 2951: 2950, 3221: 3220, 3643: 3614, 3644: 3642,
    3645: 3615, 3735: 3734, 3770: 3769, 3807: 3802, 3905: 3904, 3907: 3906, 3909: 3908,
    3911: 3910, 3913: 3912, 3927: 3926, 4073: 4072, 4090: 4089, 4097: 4096, 4192: 4191,
    5039: 5038, 6150: 4451, 6151: 4532, 6152: 4533, 6153: 4534, 6155: 4535, 6157: 4536,
}  # fmt: skip

_BOX: Final = 603  # the one built-in type whose array delimiter is ";", not ","

# Scalars whose text output is not already the JSON value; every other scalar is text.
_SCALAR_RULES: Final[dict[int, _Rule]] = {
    16: _bool, 17: _bytea, 20: _int8, 21: _int, 23: _int, 26: _int, 114: _json, 700: _float,
    701: _float, 1114: _timestamp, 1184: _timestamptz, 1266: _timetz, 3802: _json,
}  # fmt: skip

# What psycopg2 registers by default and is already right: leave those casters alone.
_PSYCOPG2_RIGHT: Final[dict[int, frozenset[str]]] = {
    16: frozenset({"BOOLEAN"}),
    21: frozenset({"INTEGER"}),
    23: frozenset({"INTEGER"}),
    26: frozenset({"ROWID"}),
}
_PSYCOPG2_TEXT: Final = frozenset({"STRING", "UNICODE", "UNKNOWN"})


def _builtin_rule(oid: int) -> Decoder | None:
    """The text → JSON rule of a built-in type; None when its text is the value."""
    elem = _ARRAY_ELEMENTS.get(oid)
    if elem is None:
        return _SCALAR_RULES.get(oid)
    return _array_decoder(";" if elem == _BOX else ",", _builtin_rule(elem))


_BUILTIN_RULES: Final[dict[int, Decoder | None]] = {
    oid: _builtin_rule(oid) for oid in (*_SCALAR_NAMES, *_ARRAY_ELEMENTS)
}


@dataclass(frozen=True, slots=True)
class ColumnType:
    """A result column's type: what clients are told and how its values are finished.

    ``decode`` is applied after fetching to non-NULL values psycopg2 left as text; None
    means the fetched value is already final.
    """

    oid: int
    name: str
    decode: Callable[[Any], Any] | None = None


# psycopg2's array parser cannot split box[] on ";": it is fetched as text, parsed after.
_BUILTIN_TYPES: Final[dict[int, ColumnType]] = {
    **{oid: ColumnType(oid, name) for oid, name in _SCALAR_NAMES.items()},
    **{
        oid: ColumnType(oid, "_" + _SCALAR_NAMES[e], _BUILTIN_RULES[oid] if e == _BOX else None)
        for oid, e in _ARRAY_ELEMENTS.items()
    },
}


# -- psycopg2 registration -----------------------------------------------------------------


def _fix_bounds(array_caster: Any) -> Callable[[str | None, Any], Any]:
    """Wrap a psycopg2 array caster so it accepts ``[lo:hi][lo:hi]={…}``.

    psycopg2 strips only one dimension's bounds and fails the whole fetch otherwise.
    """

    def cast(s: str | None, cur: Any) -> Any:
        if s is None:
            return None
        if s[0] == "[":
            s = s[s.index("=") + 1 :]
        return array_caster(s, cur)

    return cast


def _new_type(oid: int, name: str, fn: Callable[..., Any]) -> Any:
    return ext.new_type((oid,), name, fn)


def _build_casters() -> dict[int, Any]:
    """OID → our typecaster, for every built-in type psycopg2 gets wrong by default."""
    casters: dict[int, Any] = {}
    for oid, rule in _SCALAR_RULES.items():
        if oid not in _PSYCOPG2_RIGHT:
            casters[oid] = _new_type(oid, f"DMGW_{_SCALAR_NAMES[oid].upper()}", rule)
    c_bases = {16: ext.BOOLEAN, 21: ext.INTEGER, 23: ext.INTEGER, 26: ext.INTEGER}
    for oid, elem in _ARRAY_ELEMENTS.items():
        if elem == _BOX:
            continue
        base = c_bases.get(elem) or casters.get(elem) or ext.UNICODE
        name = f"DMGW_{_SCALAR_NAMES[elem].upper()}ARRAY"
        inner = ext.new_array_type((oid,), name, base)
        casters[oid] = _new_type(oid, name, _fix_bounds(inner))
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
        for oid in _BUILTIN_TYPES:
            caster = _casters.get(oid)
            if caster is None:
                current = scope.get(oid) or ext.string_types.get(oid)
                if current is None or current.name in _PSYCOPG2_RIGHT.get(oid, _PSYCOPG2_TEXT):
                    continue
                # Someone registered a caster of their own (register_uuid, a range type…).
                rule = _SCALAR_RULES.get(oid, _text)
                caster = _new_type(oid, f"DMGW_{oid}", rule)
            if conn is None:
                ext.register_type(caster)
            else:
                ext.register_type(caster, conn)
        if conn is None:
            _installed_globally = True


# -- per-database types ----------------------------------------------------------------------

_CATALOG_QUERY: Final = """
WITH RECURSIVE wanted(oid) AS (
    SELECT pg_catalog.unnest(%s::pg_catalog.oid[])
  UNION
    SELECT CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.typelem END
    FROM wanted w JOIN pg_catalog.pg_type t ON t.oid = w.oid
    WHERE t.typtype = 'd' OR (t.typcategory = 'A' AND t.typelem <> 0)
)
SELECT t.oid::pg_catalog.int8, t.typname::pg_catalog.text, t.typtype::pg_catalog.text,
       t.typbasetype::pg_catalog.int8, t.typelem::pg_catalog.int8,
       t.typcategory::pg_catalog.text, t.typdelim::pg_catalog.text
FROM pg_catalog.pg_type t JOIN wanted w ON t.oid = w.oid
"""


@dataclass(frozen=True, slots=True)
class _PgType:
    name: str
    typtype: str
    basetype: int
    elem: int
    category: str
    delim: str


class TypeCatalog:
    """Result column types of one database, cached by OID; safe to share across threads.

    Built-in types come from a static table; other OIDs cost one catalog query per
    ``describe`` call that meets them, then never again. OIDs are never reused for a
    different type while it exists, so entries need no invalidation; the cache is
    emptied past ``max_entries`` because temporary tables mint new row types forever.
    """

    def __init__(self, max_entries: int = 10_000) -> None:
        self._types: dict[int, ColumnType] = {}
        self._lock = threading.Lock()
        self._max_entries = max_entries

    def describe(self, conn: ext.connection, oids: Sequence[int]) -> list[ColumnType]:
        """The types of a result's columns, given ``cursor.description`` type codes.

        Assumes ``install()`` is in effect for the cursor that fetched the rows. An
        unknown OID runs one query on ``conn``, in its current transaction.
        """
        types = self._types  # replaced, never mutated: a stable snapshot
        try:
            return [_BUILTIN_TYPES.get(oid) or types[oid] for oid in oids]
        except KeyError:
            pass
        loaded = self._load(conn, [o for o in oids if o not in _BUILTIN_TYPES and o not in types])
        return [_BUILTIN_TYPES.get(oid) or types.get(oid) or loaded[oid] for oid in oids]

    def clear(self) -> None:
        """Forget every cached type, e.g. after restoring a dump into the database."""
        with self._lock:
            self._types = {}

    def _load(self, conn: ext.connection, oids: list[int]) -> dict[int, ColumnType]:
        with conn.cursor(cursor_factory=ext.cursor) as cur:
            cur.execute(_CATALOG_QUERY, (sorted(set(oids)),))
            rows = cur.fetchall()
        catalog = {int(r[0]): _PgType(r[1], r[2], int(r[3]), int(r[4]), r[5], r[6]) for r in rows}
        loaded: dict[int, ColumnType] = {}
        for oid in oids:
            pg = catalog.get(oid)
            if pg is None:  # dropped meanwhile: describe it, do not cache it
                loaded[oid] = ColumnType(oid, str(oid))
                continue
            loaded[oid] = ColumnType(oid, pg.name, _rule(oid, catalog))
        with self._lock:
            if len(self._types) + len(loaded) > self._max_entries:
                self._types = {}
            new = dict(self._types)
            new.update((oid, t) for oid, t in loaded.items() if oid in catalog)
            self._types = new
        return loaded


def _rule(oid: int, catalog: dict[int, _PgType]) -> Decoder | None:
    """The text → JSON rule of any type: domains as their base, arrays by element."""
    if oid in _BUILTIN_RULES:
        return _BUILTIN_RULES[oid]
    pg = catalog.get(oid)
    if pg is None:
        return None
    if pg.typtype == "d":
        return _rule(pg.basetype, catalog)
    if pg.category == "A" and pg.elem:
        elem = catalog.get(pg.elem)
        delim = elem.delim if elem is not None else (";" if pg.elem == _BOX else ",")
        return _array_decoder(delim, _rule(pg.elem, catalog))
    return None


def decode_rows(
    types: Sequence[ColumnType], rows: Sequence[Sequence[Any]]
) -> Sequence[Sequence[Any]]:
    """Finish the values psycopg2 left as text.

    When no column needs it, ``rows`` itself comes back (fetched tuples, untouched);
    otherwise a new list of lists. Callers should only iterate and index the result.
    """
    work = [(i, t.decode) for i, t in enumerate(types) if t.decode is not None]
    if not work:
        return rows
    out: list[list[Any]] = []
    for row in rows:
        values = list(row)
        for i, decode in work:
            v = values[i]
            if v is not None:
                values[i] = decode(v)
        out.append(values)
    return out
