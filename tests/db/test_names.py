"""Table names parsed as PostgreSQL's scanner reads identifiers."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

import psycopg2
import pytest
from psycopg2 import sql
from psycopg2.extensions import connection

from datamorph_gateway.db.names import (
    InvalidTableName,
    TableName,
    parse_table_name,
    regclass_array,
)

GOOD = [
    # text, schema, name, regclass_text
    ("orders", None, "orders", '"orders"'),
    ("Orders", None, "orders", '"orders"'),
    ("ORDERS", None, "orders", '"orders"'),
    ("sales.orders", "sales", "orders", '"sales"."orders"'),
    ("Sales.Orders", "sales", "orders", '"sales"."orders"'),
    ('"Mixed Case"', None, "Mixed Case", '"Mixed Case"'),
    ('sales."Order Items"', "sales", "Order Items", '"sales"."Order Items"'),
    ('"Sales"."Orders"', "Sales", "Orders", '"Sales"."Orders"'),
    ('"a""b"', None, 'a"b', '"a""b"'),
    ('""""', None, '"', '""""'),
    ('"a.b"', None, "a.b", '"a.b"'),
    ('"a"."b.c"', "a", "b.c", '"a"."b.c"'),
    ("  orders  ", None, "orders", '"orders"'),
    ("\t sales \n.\r orders \f", "sales", "orders", '"sales"."orders"'),
    ("sales .orders", "sales", "orders", '"sales"."orders"'),
    ('sales. "x"', "sales", "x", '"sales"."x"'),
    ("_t", None, "_t", '"_t"'),
    ("t1$x", None, "t1$x", '"t1$x"'),
    ("a$", None, "a$", '"a$"'),
    ("select", None, "select", '"select"'),
    ("public.table", "public", "table", '"public"."table"'),
    # Only ASCII folds; PostgreSQL leaves other letters alone in a UTF-8 database.
    ("Ærø", None, "Ærø", '"Ærø"'),
    ("ÉCOLE.Élève", "École", "Élève", '"École"."Élève"'),
    ("日本語", None, "日本語", '"日本語"'),
    # The scanner takes any non-ASCII character as an identifier character.
    ("€uro", None, "€uro", '"€uro"'),
    ('"with space"', None, "with space", '"with space"'),
    ('" leading"', None, " leading", '" leading"'),
    ('"semi;colon"', None, "semi;colon", '"semi;colon"'),
    ('"x\'; DROP TABLE y; --"', None, "x'; DROP TABLE y; --", '"x\'; DROP TABLE y; --"'),
    ('"UPPER"', None, "UPPER", '"UPPER"'),
    ("a" * 63, None, "a" * 63, '"' + "a" * 63 + '"'),
    ('"' + "A" * 63 + '"', None, "A" * 63, '"' + "A" * 63 + '"'),
    ("é" * 31 + "a", None, "é" * 31 + "a", '"' + "é" * 31 + 'a"'),  # 63 bytes
    ('"' + '""' * 63 + '"', None, '"' * 63, '"' + '""' * 63 + '"'),  # 63 bytes after unescaping
]


@pytest.mark.parametrize(("text", "schema", "name", "regclass"), GOOD)
def test_parses_good_names(text: str, schema: str | None, name: str, regclass: str) -> None:
    parsed = parse_table_name(text)
    assert parsed == TableName(schema=schema, name=name)
    assert parsed.regclass_text() == regclass


BAD = [
    ("", "empty table name"),
    ("   ", "empty table name"),
    ("\t\n", "empty table name"),
    (".orders", "empty name part"),
    ("orders.", "empty name part"),
    ("orders. ", "empty name part"),
    ("sales..orders", "empty name part"),
    (".", "empty name part"),
    ("db.sales.orders", "too many dotted parts (at most schema.table)"),
    ('"a"."b"."c"', "too many dotted parts"),
    ("a.b.", "too many dotted parts"),
    ('"orders', "unterminated quoted identifier"),
    ('sales."Order Items', "unterminated quoted identifier"),
    ('"a""', "unterminated quoted identifier"),
    ('""', 'zero-length quoted identifier ("")'),
    ('sales.""', "zero-length quoted identifier"),
    ("a" * 64, "identifier longer than 63 bytes"),
    ('"' + "a" * 64 + '"', "identifier longer than 63 bytes"),
    ("é" * 32, "identifier longer than 63 bytes"),  # 32 characters, 64 bytes
    ("s." + "b" * 64, "identifier longer than 63 bytes"),
    ("or\x00ders", "NUL"),
    ('"or\x00ders"', "NUL"),
    ("orders\ud800", "lone surrogate"),
    ("1orders", "unexpected character '1'"),
    ("$orders", "unexpected character '$'"),
    ("sales.1x", "unexpected character '1' at offset 6"),
    ("my table", "unexpected character 't' at offset 3 (expected '.' or end of name)"),
    ('"a"b', "unexpected character 'b'"),
    ('a"b"', "unexpected character '\"'"),
    ("orders\x01", "unexpected character U+0001"),
    ('U&"d\\0061t"', "unexpected character '&'"),
    # Injection attempts are simply not names.
    ("orders; DROP TABLE x", "unexpected character ';'"),
    ("orders;", "unexpected character ';'"),
    ("orders--", "unexpected character '-'"),
    ("orders /* c */", "unexpected character '/'"),
    ('"x"; select 1', "unexpected character ';'"),
    ("x' OR '1'='1", 'unexpected character "\'"'),
    ("'orders'", 'unexpected character "\'"'),
    ("orders)", "unexpected character ')'"),
    ("pg_catalog.pg_class(", "unexpected character '('"),
    ("$$orders$$", "unexpected character '$'"),
    ("orders\\", "unexpected character '\\\\'"),
]


@pytest.mark.parametrize(("text", "message"), BAD)
def test_rejects_bad_names(text: str, message: str) -> None:
    with pytest.raises(InvalidTableName) as info:
        parse_table_name(text)
    assert message in str(info.value)


def test_invalid_table_name_is_a_value_error() -> None:
    assert issubclass(InvalidTableName, ValueError)


def test_names_are_hashable_values() -> None:
    assert {parse_table_name("Sales.Orders"), parse_table_name('"sales"."orders"')} == {
        TableName("sales", "orders")
    }


def test_round_trip_property() -> None:
    pytest.importorskip("hypothesis")
    import hypothesis  # typed, unlike what importorskip returns
    from hypothesis import strategies as st

    characters = st.characters(exclude_characters="\x00", codec="utf-8")
    identifier = st.text(characters, min_size=1).filter(lambda s: len(s.encode("utf-8")) <= 63)

    @hypothesis.settings(max_examples=500, database=None, deadline=None)
    @hypothesis.given(st.one_of(st.none(), identifier), identifier)
    def check(schema: str | None, name: str) -> None:
        table = TableName(schema, name)
        assert parse_table_name(table.regclass_text()) == table
        assert parse_table_name(f" {table.regclass_text()}\n") == table

    check()


def test_unquoted_identifiers_fold_property() -> None:
    pytest.importorskip("hypothesis")
    import hypothesis  # typed, unlike what importorskip returns
    from hypothesis import strategies as st

    @hypothesis.settings(max_examples=300, database=None, deadline=None)
    @hypothesis.given(st.from_regex(r"[A-Za-z_][A-Za-z0-9_$]{0,62}", fullmatch=True))
    def check(word: str) -> None:
        assert parse_table_name(word) == TableName(None, word.lower())
        assert parse_table_name(f"{word}.{word}") == TableName(word.lower(), word.lower())

    check()


@pytest.fixture
def scratch_schema(database_url: str) -> Iterator[tuple[connection, str]]:
    """A connection whose search_path starts with a schema of its own, dropped afterwards."""
    schema = f"names_{uuid.uuid4().hex[:10]}"
    with contextlib.closing(psycopg2.connect(database_url)) as conn:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
            cur.execute(sql.SQL("SET search_path = {}").format(sql.Identifier(schema)))
        try:
            yield conn, schema
        finally:
            with conn.cursor() as cur:
                cur.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


@pytest.mark.parametrize(
    ("created", "written"),
    [
        ("orders", "ORDERS"),
        ("Mixed Case", '"Mixed Case"'),
        ('a"b', '"a""b"'),
        ("select", "select"),
        ("Ærø", "Ærø"),
        ("x'; drop table y; --", '"x\'; drop table y; --"'),
        ("t$1", "T$1"),
        ("dot.ted", '"dot.ted"'),
    ],
)
def test_regclass_text_resolves_on_a_real_server(
    scratch_schema: tuple[connection, str], created: str, written: str
) -> None:
    conn, schema = scratch_schema
    with conn.cursor() as cur:
        cur.execute(sql.SQL("CREATE TABLE {} ()").format(sql.Identifier(schema, created)))
        cur.execute(
            "SELECT to_regclass(%s)::oid, to_regclass(%s)::oid, %s::regclass::oid",
            (
                parse_table_name(written).regclass_text(),
                parse_table_name(f"{schema}.{written}").regclass_text(),
                sql.Identifier(schema, created).as_string(conn),
            ),
        )
        row = cur.fetchone()
    assert row is not None
    unqualified, qualified, expected = row
    assert expected is not None
    assert unqualified == qualified == expected


def test_regclass_text_of_a_missing_table_is_null(
    scratch_schema: tuple[connection, str],
) -> None:
    conn, _ = scratch_schema
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE orders ()")
        cur.execute("SELECT to_regclass(%s)", (parse_table_name('"Orders"').regclass_text(),))
        assert cur.fetchone() == (None,)


def test_regclass_array_is_what_postgresql_reads_from_the_list(database_url: str) -> None:
    """One array literal carries every name exactly as psycopg2's list of them does, quotes,
    backslashes, braces, commas, blanks and NULL-looking names included."""
    written = [
        "orders",
        '"a""b"',
        '"back\\slash"',
        '"{braces},commas"',
        '" lead and trail "',
        '"NULL"',
        "null",
        '"new\nline"',
        "Ærø",
        '"\\"""',
    ]
    names = [parse_table_name(w) for w in written]
    with contextlib.closing(psycopg2.connect(database_url)) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT %s::text[], %s::text[]",
            (regclass_array(names), [n.regclass_text() for n in names]),
        )
        row = cur.fetchone()
    assert row is not None
    assert row[0] == row[1] == [n.regclass_text() for n in names]
