"""PostgreSQL values into JSON, checked against a real server, row by row of the contract."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg2
import psycopg2.extensions as ext
import pytest
from google.protobuf import json_format
from google.protobuf.struct_pb2 import ListValue, Struct, Value

from datamorph_gateway.db.decoding import (
    SESSION_OPTIONS,
    ColumnType,
    TypeCatalog,
    decode_rows,
    install,
    parse_array,
    startup_options,
)
from datamorph_gateway.wire import append_array_rows, append_object_rows, row_struct, to_value

ALL_BYTES = bytes(range(256))
ALL_BYTES_B64 = base64.b64encode(ALL_BYTES).decode()


@dataclass(frozen=True)
class Case:
    """One column of the value table: its DDL type, a literal, what JSON it must become."""

    column: str
    ddl: str
    literal: str
    expected: Any
    type_name: str


CASES = [
    Case("c_bool", "bool", "true", True, "bool"),
    Case("c_int2", "int2", "-32768", -32768, "int2"),
    Case("c_int4", "int4", "2147483647", 2147483647, "int4"),
    Case("c_oid", "oid", "4294967295", 4294967295, "oid"),
    Case("c_int8_safe", "int8", "9007199254740991", 9007199254740991, "int8"),
    Case("c_int8_neg_safe", "int8", "-9007199254740991", -9007199254740991, "int8"),
    Case("c_int8_2p53", "int8", "9007199254740992", "9007199254740992", "int8"),
    Case("c_int8_min", "int8", "-9223372036854775808", "-9223372036854775808", "int8"),
    Case("c_float4", "float4", "0.1", 0.1, "float4"),
    Case("c_float8", "float8", "0.1::float8 + 0.2::float8", 0.30000000000000004, "float8"),
    Case("c_float4_nan", "float4", "'NaN'", "NaN", "float4"),
    Case("c_float4_inf", "float4", "'Infinity'", "Infinity", "float4"),
    Case("c_float8_nan", "float8", "'NaN'", "NaN", "float8"),
    Case("c_float8_inf", "float8", "'Infinity'", "Infinity", "float8"),
    Case("c_float8_ninf", "float8", "'-Infinity'", "-Infinity", "float8"),
    Case("c_numeric_tiny", "numeric", "1e-30", "0.000000000000000000000000000001", "numeric"),
    Case(
        "c_numeric_huge",
        "numeric",
        "123456789012345678901234567890.123456789012345678901234567890",
        "123456789012345678901234567890.123456789012345678901234567890",
        "numeric",
    ),
    Case("c_numeric_scale", "numeric(6,2)", "1.5", "1.50", "numeric"),
    Case("c_numeric_nan", "numeric", "'NaN'", "NaN", "numeric"),
    Case("c_numeric_inf", "numeric", "'Infinity'", "Infinity", "numeric"),
    Case("c_numeric_ninf", "numeric", "'-Infinity'", "-Infinity", "numeric"),
    Case("c_text", "text", "E'h\\u00e9 \"q\" \\\\ ,{}\\n'", 'hé "q" \\ ,{}\n', "text"),
    Case("c_varchar", "varchar(10)", "'abc'", "abc", "varchar"),
    Case("c_bpchar", "char(5)", "'ab'", "ab   ", "bpchar"),
    Case("c_name", "name", "'a_name'", "a_name", "name"),
    Case("c_char", '"char"', "'x'", "x", "char"),
    Case("c_date", "date", "'2024-02-29'", "2024-02-29", "date"),
    Case("c_date_inf", "date", "'infinity'", "infinity", "date"),
    Case("c_date_bc", "date", "'0044-03-15 BC'", "0044-03-15 BC", "date"),
    Case(
        "c_timestamp",
        "timestamp",
        "'2024-01-02 03:04:05.123456'",
        "2024-01-02T03:04:05.123456",
        "timestamp",
    ),
    Case("c_timestamp_s", "timestamp", "'2024-01-02 03:04:05'", "2024-01-02T03:04:05", "timestamp"),
    Case("c_timestamp_inf", "timestamp", "'-infinity'", "-infinity", "timestamp"),
    Case(
        "c_timestamptz",
        "timestamptz",
        "'2024-01-02 03:04:05.5+05:30'",
        "2024-01-01T21:34:05.5+00:00",
        "timestamptz",
    ),
    Case(
        "c_timestamptz_bc",
        "timestamptz",
        "'0044-03-15 12:00:00+00 BC'",
        "0044-03-15 12:00:00+00 BC",
        "timestamptz",
    ),
    Case("c_time", "time", "'13:14:15.000001'", "13:14:15.000001", "time"),
    Case("c_timetz", "timetz", "'13:14:15+05:30'", "13:14:15+05:30", "timetz"),
    Case("c_timetz_hours", "timetz", "'13:14:15.25-03'", "13:14:15.25-03:00", "timetz"),
    Case(
        "c_interval",
        "interval",
        "'1 year 2 months 3 days 04:05:06.5'",
        "P1Y2M3DT4H5M6.5S",
        "interval",
    ),
    Case(
        "c_interval_neg",
        "interval",
        "'-1 year -2 months -3 days -04:05:06.5'",
        "P-1Y-2M-3DT-4H-5M-6.5S",
        "interval",
    ),
    Case("c_interval_zero", "interval", "'0'", "PT0S", "interval"),
    Case("c_bytea", "bytea", "%(all_bytes)s", ALL_BYTES_B64, "bytea"),
    Case("c_bytea_empty", "bytea", "''::bytea", "", "bytea"),
    Case(
        "c_json",
        "json",
        """'{"a": {"b": [1, 2.5, "x", null, true]}, "c": "\u00e9", "d": 1e400}'""",
        {"a": {"b": [1, 2.5, "x", None, True]}, "c": "é", "d": "1e400"},
        "json",
    ),
    Case(
        "c_jsonb",
        "jsonb",
        """'{"z": [{"y": {}}, []], "big": 12345678901234567890, "f": -0.5}'""",
        {"z": [{"y": {}}, []], "big": 12345678901234567890, "f": -0.5},
        "jsonb",
    ),
    Case("c_json_scalar", "jsonb", """'"just text"'""", "just text", "jsonb"),
    Case("c_int_arr", "int4[]", "'{1,2,NULL}'", [1, 2, None], "_int4"),
    Case(
        "c_text_arr",
        "text[]",
        """ARRAY['a,b', 'say "hi"', NULL, 'back\\slash', 'NULL', '', ' sp ', '{x}', 'é']""",
        ["a,b", 'say "hi"', None, "back\\slash", "NULL", "", " sp ", "{x}", "é"],
        "_text",
    ),
    Case("c_int_2d", "int4[]", "'{{1,2},{3,4}}'", [[1, 2], [3, 4]], "_int4"),
    Case("c_int_bounds", "int4[]", "'[0:1][1:2]={{1,2},{3,NULL}}'", [[1, 2], [3, None]], "_int4"),
    Case(
        "c_text_2d", "text[]", """'{{"a b",NULL},{c,"}"}}'""", [["a b", None], ["c", "}"]], "_text"
    ),
    Case("c_int8_arr", "int8[]", "'{1,9223372036854775807}'", [1, "9223372036854775807"], "_int8"),
    Case("c_numeric_arr", "numeric[]", "'{1.10,NaN,-2}'", ["1.10", "NaN", "-2"], "_numeric"),
    Case("c_float8_arr", "float8[]", "'{1.5,NaN,-Infinity}'", [1.5, "NaN", "-Infinity"], "_float8"),
    Case("c_bool_arr", "bool[]", "'{t,f,NULL}'", [True, False, None], "_bool"),
    Case(
        "c_timestamptz_arr",
        "timestamptz[]",
        "ARRAY['2024-01-02 03:04:05+02'::timestamptz, NULL]",
        ["2024-01-02T01:04:05+00:00", None],
        "_timestamptz",
    ),
    Case("c_date_arr", "date[]", "'{2024-01-02,infinity}'", ["2024-01-02", "infinity"], "_date"),
    Case("c_interval_arr", "interval[]", "'{1 day,-1 hour}'", ["P1D", "PT-1H"], "_interval"),
    Case("c_bytea_arr", "bytea[]", "ARRAY['\\x00ff'::bytea, NULL]", ["AP8=", None], "_bytea"),
    Case(
        "c_jsonb_arr",
        "jsonb[]",
        """ARRAY['{"a": [1]}'::jsonb, 'null'::jsonb]""",
        [{"a": [1]}, None],
        "_jsonb",
    ),
    Case(
        "c_box_arr", "box[]", "'{(1,1),(0,0);(2,2),(1,1)}'", ["(1,1),(0,0)", "(2,2),(1,1)"], "_box"
    ),
    Case("c_mood", "mood", "'happy'", "happy", "mood"),
    Case(
        "c_mood_arr",
        "mood[]",
        """'{sad,"has space",NULL,"with,comma","quo\\"te"}'""",
        ["sad", "has space", None, "with,comma", 'quo"te'],
        "_mood",
    ),
    Case("c_mood_bounds", "mood[]", "'[0:1]={sad,happy}'", ["sad", "happy"], "_mood"),
    # PostgreSQL describes a domain column by its base type.
    Case("c_posint", "posint", "5", 5, "int4"),
    Case("c_posint_arr", "posint[]", "'{1,NULL,3}'", [1, None, 3], "_posint"),
    Case(
        "c_stamp_arr",
        "stamp[]",
        "'{2024-01-02 03:04:05+00}'",
        ["2024-01-02T03:04:05+00:00"],
        "_stamp",
    ),
    Case(
        "c_boxd_arr",
        "boxd[]",
        "'{(1,1),(0,0);(3,3),(2,2)}'",
        ["(1,1),(0,0)", "(3,3),(2,2)"],
        "_boxd",
    ),
    Case("c_ints", "ints", "'{{1},{2}}'", [[1], [2]], "_int4"),
    Case(
        "c_ints_arr",
        "ints[]",
        """'{"{1,2}","[0:0]={3}",NULL}'""",
        [[1, 2], [3], None],
        "_ints",
    ),
    Case(
        "c_uuid",
        "uuid",
        "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'",
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "uuid",
    ),
    Case(
        "c_uuid_arr",
        "uuid[]",
        "'{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}'",
        ["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"],
        "_uuid",
    ),
    Case("c_inet", "inet", "'192.168.0.1/24'", "192.168.0.1/24", "inet"),
    Case("c_inet_arr", "inet[]", "'{::1,10.1.2.3}'", ["::1", "10.1.2.3"], "_inet"),
    Case("c_cidr", "cidr", "'10.0.0.0/8'", "10.0.0.0/8", "cidr"),
    Case("c_macaddr", "macaddr", "'08:00:2b:01:02:03'", "08:00:2b:01:02:03", "macaddr"),
    Case(
        "c_macaddr8",
        "macaddr8",
        "'08:00:2b:01:02:03:04:05'",
        "08:00:2b:01:02:03:04:05",
        "macaddr8",
    ),
    Case("c_money", "money", "'1234.56'", "$1,234.56", "money"),
    Case("c_point", "point", "'(1.5,2)'", "(1.5,2)", "point"),
    Case("c_pair", "pair", "ROW(1, 'a b')", '(1,"a b")', "pair"),
    Case("c_pair_arr", "pair[]", "ARRAY[ROW(1, 'a b')::pair, NULL]", ['(1,"a b")', None], "_pair"),
    Case("c_int4range", "int4range", "'[1,5)'", "[1,5)", "int4range"),
    Case("c_tstzrange", "tstzrange", "'[2024-01-01,)'", '["2024-01-01 00:00:00+00",)', "tstzrange"),
    Case("c_numrange_arr", "numrange[]", "ARRAY['(1.5,2]'::numrange]", ["(1.5,2]"], "_numrange"),
    Case("c_moodrange", "moodrange", "'[sad,happy)'", "[sad,happy)", "moodrange"),
]

SETUP_SQL = """
CREATE TYPE mood AS ENUM ('sad', 'happy', 'has space', 'with,comma', 'quo"te');
CREATE DOMAIN posint AS int4 CHECK (VALUE > 0);
CREATE DOMAIN stamp0 AS timestamptz;
CREATE DOMAIN stamp AS stamp0;
CREATE DOMAIN boxd AS box;
CREATE DOMAIN ints AS int4[];
CREATE TYPE pair AS (n int4, s text);
CREATE TYPE moodrange AS RANGE (subtype = mood);
"""


def _json_ready(v: Any) -> bool:
    if v is None or isinstance(v, (bool, int, str)):
        return True
    if isinstance(v, float):
        return v - v == 0
    if isinstance(v, list):
        return all(_json_ready(x) for x in v)
    if isinstance(v, dict):
        return all(isinstance(k, str) and _json_ready(x) for k, x in v.items())
    return False


def connect(database_url: str) -> ext.connection:
    """A connection as the gateway's pool opens one.

    Casters are scoped to the connection so that this module does not change what
    psycopg2 returns to other tests in the session; the global install is tested in a
    process of its own.
    """
    c = psycopg2.connect(database_url, options=startup_options())
    install(c)
    c.autocommit = True
    return c


@pytest.fixture(scope="module")
def conn(database_url: str) -> Iterator[ext.connection]:
    c = connect(database_url)
    with c.cursor() as cur:
        cur.execute(SETUP_SQL)
        cur.execute("SET lc_monetary = 'C'")
    yield c
    c.close()


@pytest.fixture(scope="module")
def catalog() -> TypeCatalog:
    return TypeCatalog()


def query(
    conn: ext.connection, catalog: TypeCatalog, sql: str, params: Any = None
) -> tuple[list[ColumnType], list[list[Any]]]:
    with conn.cursor() as cur:
        cur.execute(sql, params)
        assert cur.description is not None
        types = catalog.describe(conn, [d.type_code for d in cur.description])
        rows = decode_rows(types, cur.fetchall())
    return types, [list(r) for r in rows]


@pytest.fixture(scope="module")
def table(conn: ext.connection, catalog: TypeCatalog) -> tuple[list[ColumnType], list[list[Any]]]:
    """A table with one column per case: a row of the literals, then a row of NULLs."""
    columns = ", ".join(f"{c.column} {c.ddl}" for c in CASES)
    literals = ", ".join(c.literal for c in CASES)
    with conn.cursor() as cur:
        cur.execute(f"CREATE TABLE all_types (id int, {columns})")
        cur.execute(
            f"INSERT INTO all_types VALUES (1, {literals})",
            {"all_bytes": psycopg2.Binary(ALL_BYTES)},
        )
        cur.execute("INSERT INTO all_types (id) VALUES (2)")
    return query(conn, catalog, "SELECT * FROM all_types ORDER BY id")


@pytest.mark.parametrize("case", CASES, ids=[c.column for c in CASES])
def test_value_and_type_name(table: tuple[list[ColumnType], list[list[Any]]], case: Case) -> None:
    types, rows = table
    i = CASES.index(case) + 1  # after the id column
    assert rows[0][i] == case.expected
    assert type(rows[0][i]) is type(case.expected)
    assert types[i].name == case.type_name
    assert rows[1][i] is None


def test_every_row_is_strict_json(table: tuple[list[ColumnType], list[list[Any]]]) -> None:
    _, rows = table
    for row in rows:
        assert _json_ready(row)
        json.dumps(row, allow_nan=False)
        json_format.MessageToJson(to_value(row))


def test_bytea_round_trips_all_byte_values(table: tuple[list[ColumnType], list[list[Any]]]) -> None:
    types, rows = table
    i = [t.name for t in types].index("bytea")
    assert base64.b64decode(rows[0][i]) == ALL_BYTES


def test_xml_is_text(conn: ext.connection, catalog: TypeCatalog) -> None:
    try:
        types, rows = query(conn, catalog, "SELECT '<a>x</a>'::xml, ARRAY['<b/>'::xml]")
    except psycopg2.errors.FeatureNotSupported:
        pytest.skip("this PostgreSQL was built without XML support")
    assert rows == [["<a>x</a>", ["<b/>"]]]
    assert [t.name for t in types] == ["xml", "_xml"]


def test_json_numbers_beyond_doubles_become_text(
    conn: ext.connection, catalog: TypeCatalog
) -> None:
    sql = (
        "SELECT ('{\"n\": ' || repeat('9', 5000) || ', \"f\": 1e999, \"ok\": 1}')::json,"
        " ('[' || repeat('9', 400) || ']')::jsonb"
    )
    _, rows = query(conn, catalog, sql)
    assert rows[0][0] == {"n": "9" * 5000, "f": "1e999", "ok": 1}
    assert rows[0][1] == [int("9" * 400)]
    assert _as_json(to_value(rows[0][1])) == ["9" * 400]
    json.dumps(rows, allow_nan=False)


def test_unknown_oid_is_described_not_cached(conn: ext.connection) -> None:
    catalog = TypeCatalog()
    assert catalog.describe(conn, [4000000000]) == [ColumnType(4000000000, "4000000000")]
    assert catalog.describe(conn, [4000000000]) == [ColumnType(4000000000, "4000000000")]


def test_builtin_types_need_no_catalog_query() -> None:
    # No connection at all: a built-in OID must not touch it.
    types = TypeCatalog().describe(None, [16, 20, 1184, 1009, 3807, 2287])  # type: ignore[arg-type]
    assert [t.name for t in types] == ["bool", "int8", "timestamptz", "_text", "_jsonb", "_record"]
    assert all(t.decode is None for t in types)


class CountingConnection(ext.connection):
    """Counts the cursors opened on it: the catalog opens one per query."""

    opened = 0

    def cursor(self, *args: Any, **kwargs: Any) -> Any:
        self.opened += 1
        return super().cursor(*args, **kwargs)


def test_unknown_types_cost_one_query_then_none(database_url: str, conn: ext.connection) -> None:
    with conn.cursor() as cur:
        cur.execute("SELECT 'mood'::regtype::oid, '_mood'::regtype::oid, '_posint'::regtype::oid")
        oids = list(cur.fetchone() or ())
    counting = psycopg2.connect(
        database_url, options=startup_options(), connection_factory=CountingConnection
    )
    try:
        catalog = TypeCatalog()
        first = catalog.describe(counting, [*oids, 23, oids[0]])
        assert counting.opened == 1
        assert [t.name for t in first] == ["mood", "_mood", "_posint", "int4", "mood"]
        assert first[0].decode is None
        assert first[1].decode is not None
        again = catalog.describe(counting, oids)
        assert counting.opened == 1
        assert again == first[:3]
    finally:
        counting.close()


def test_catalog_is_thread_safe(database_url: str, conn: ext.connection) -> None:
    with conn.cursor() as cur:
        cur.execute("SELECT 'mood'::regtype::oid, '_mood'::regtype::oid, '_pair'::regtype::oid")
        oids = list(cur.fetchone() or ())
    catalog = TypeCatalog(max_entries=2)  # also exercises emptying the cache under load
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def work() -> None:
        c = connect(database_url)
        try:
            for _ in range(20):
                results.append([t.name for t in catalog.describe(c, [25, *oids])])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            c.close()

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 120
    assert all(r == ["text", "mood", "_mood", "_pair"] for r in results)


def test_decode_rows_keeps_rows_when_nothing_to_do() -> None:
    rows = [(1, "a"), (2, None)]
    types = [ColumnType(23, "int4"), ColumnType(25, "text")]
    assert decode_rows(types, rows) is rows
    upper = [ColumnType(1, "x", str.upper), ColumnType(25, "text")]
    assert decode_rows(upper, [("a", "b"), (None, "c")]) == [["A", "b"], [None, "c"]]


SHOW = "SELECT current_setting(name) FROM unnest(%s::text[]) AS name"


def _settings(conn: ext.connection) -> list[str]:
    with conn.cursor() as cur:
        cur.execute(SHOW, (list(SESSION_OPTIONS),))
        return [r[0] for r in cur.fetchall()]


@pytest.mark.parametrize("reset", ["RESET ALL", "DISCARD ALL"])
def test_reset_restores_our_formats(database_url: str, catalog: TypeCatalog, reset: str) -> None:
    c = connect(database_url)
    probe = (
        "SELECT '2024-01-02 03:04:05+00'::timestamptz, '2024-01-02 03:04:05'::timestamp,"
        " '1 day'::interval, %s::bytea, 0.1::float4"
    )
    iso = ["2024-01-02T03:04:05+00:00", "2024-01-02T03:04:05", "P1D", ALL_BYTES_B64, 0.1]
    try:
        assert _settings(c) == list(SESSION_OPTIONS.values())
        with c.cursor() as cur:
            cur.execute(
                "SET DateStyle = 'German'; SET IntervalStyle = 'postgres';"
                " SET TimeZone = 'America/New_York'; SET bytea_output = 'escape';"
                " SET extra_float_digits = 0"
            )
        _, rows = query(c, catalog, probe, (psycopg2.Binary(ALL_BYTES),))
        # Foreign formats pass through as text rather than failing the fetch; bytea decodes.
        assert rows[0][:3] == ["01.01.2024 22:04:05 EST", "02.01.2024 03:04:05", "1 day"]
        assert rows[0][3] == ALL_BYTES_B64
        with c.cursor() as cur:
            cur.execute(reset)
        assert _settings(c) == list(SESSION_OPTIONS.values())
        _, rows = query(c, catalog, probe, (psycopg2.Binary(ALL_BYTES),))
        assert rows[0] == iso
    finally:
        c.close()


def test_startup_options_escape_spaces_and_backslashes(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert startup_options().startswith("-c DateStyle=ISO,\\ YMD -c IntervalStyle=iso_8601")
    monkeypatch.setitem(SESSION_OPTIONS, "dmgw.probe", "a b\\c\td")
    c = psycopg2.connect(database_url, options=startup_options("-c search_path=public"))
    try:
        with c.cursor() as cur:
            cur.execute("SELECT current_setting('dmgw.probe'), current_setting('search_path')")
            assert cur.fetchone() == ("a b\\c\td", "public")
    finally:
        c.close()


INSTALL_SCRIPT = """
import json, sys
import psycopg2
from datamorph_gateway.db.decoding import install, startup_options
def probe(conn):
    with conn.cursor() as cur:
        cur.execute("SELECT 1.5::numeric, '2024-01-02'::date, '[1:1]={t}'::bool[]")
        return [type(v).__name__ for v in cur.fetchone()]
plain = psycopg2.connect(sys.argv[1])
scoped = psycopg2.connect(sys.argv[1], options=startup_options())
install(scoped)
out = [probe(plain), probe(scoped)]
install()
install()
out += [probe(plain), probe(psycopg2.connect(sys.argv[1], options=startup_options()))]
print(json.dumps(out))
"""


def test_install_scoped_then_global(database_url: str) -> None:
    # In a process of its own: a global install cannot be undone.
    done = subprocess.run(
        [sys.executable, "-c", INSTALL_SCRIPT, database_url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    ours = ["str", "str", "list"]
    assert json.loads(done.stdout) == [["Decimal", "date", "list"], ours, ours, ours]


@pytest.mark.parametrize(
    ("text", "delim", "expected"),
    [
        ("{}", ",", []),
        ("{a,b}", ",", ["a", "b"]),
        ('{"",NULL,"NULL",null}', ",", ["", None, "NULL", "null"]),
        ('{"a\\"b","c\\\\d","e,f","{g}"}', ",", ['a"b', "c\\d", "e,f", "{g}"]),
        ("{{1,2},{3,4}}", ",", [["1", "2"], ["3", "4"]]),
        ("{{{x}}}", ",", [[["x"]]]),
        ("[2:3]={a,b}", ",", ["a", "b"]),
        ("[0:1][5:5]={{a},{b}}", ",", [["a"], ["b"]]),
        ("{(1,1),(0,0);(2,2),(1,1)}", ";", ["(1,1),(0,0)", "(2,2),(1,1)"]),
        ('{"line\nbreak"}', ",", ["line\nbreak"]),
    ],
)
def test_parse_array(text: str, delim: str, expected: list[Any]) -> None:
    assert parse_array(text, delim) == expected


def test_parse_array_applies_element_decoder_but_not_to_null() -> None:
    assert parse_array("{{1,NULL},{3,4}}", ",", int) == [[1, None], [3, 4]]


@pytest.mark.parametrize("text", ["", "a", "{a", '{"a}', "{a}}", "{a},", "[1:2]"])
def test_parse_array_rejects_malformed(text: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        parse_array(text)


def _as_json(message: Any) -> Any:
    return json.loads(json_format.MessageToJson(message))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        (True, True),
        (0, 0),
        (-(2**53) + 1, -(2**53) + 1),
        (1.25, 1.25),
        ("x", "x"),
        ([], []),
        ({}, {}),
        ({"a": [1, {"b": None}], "c": False}, {"a": [1, {"b": None}], "c": False}),
        ((1, "a"), [1, "a"]),
        (float("nan"), "NaN"),
        (float("inf"), "Infinity"),
        (float("-inf"), "-Infinity"),
        (10**400, str(10**400)),
    ],
)
def test_to_value(value: Any, expected: Any) -> None:
    assert _as_json(to_value(value)) == expected


def test_to_value_refuses_values_the_decoders_never_make() -> None:
    with pytest.raises(TypeError, match="bytes"):
        to_value(b"raw")


def test_row_builders_agree() -> None:
    keys = ["n", "s", "nil", "b", "arr", "obj"]
    rows = [[1, "x", None, True, [1.5, None], {"k": "v"}], [2, "", None, False, [], {}]]
    expected = [dict(zip(keys, r, strict=True)) for r in rows]
    assert [_as_json(row_struct(keys, r)) for r in rows] == expected
    objects = ListValue()
    append_object_rows(objects.values, keys, rows)
    assert _as_json(objects) == expected
    arrays = ListValue()
    append_array_rows(arrays.values, rows)
    assert _as_json(arrays) == rows
    assert isinstance(row_struct(keys, rows[0]), Struct)
    assert isinstance(to_value(1), Value)


def _doubles(v: Any) -> Any:
    """What a JSON value looks like after protobuf: every number a double."""
    if type(v) is int:
        return float(v)
    if isinstance(v, list):
        return [_doubles(x) for x in v]
    if isinstance(v, dict):
        return {k: _doubles(x) for k, x in v.items()}
    return v


def test_contract_values_survive_protobuf(table: tuple[list[ColumnType], list[list[Any]]]) -> None:
    types, rows = table
    keys = [f"k{i}" for i in range(len(types))]
    out = ListValue()
    append_object_rows(out.values, keys, rows)
    expected = [dict(zip(keys, _doubles(r), strict=True)) for r in rows]
    assert _doubles(_as_json(out)) == expected
