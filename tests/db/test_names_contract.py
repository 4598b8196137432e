"""Table names, at the edges of each rule, with the exact message an INVALID_ARGUMENT carries.

tests/db/test_names.py has the broad tables; these pin what they leave loose: the first
and last character of each class the scanner allows, the whitespace it skips, and each
refusal's whole text (the caller reads it in the field violation).
"""

from __future__ import annotations

import pytest

from datamorph_gateway.db.names import (
    MAX_IDENTIFIER_BYTES,
    InvalidTableName,
    TableName,
    parse_table_name,
    regclass_array,
)


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("a", "a"),
        ("z", "z"),
        ("A", "a"),
        ("Z", "z"),
        ("_", "_"),
        ("\x80x", "\x80x"),
        ("\xa0", "\xa0"),  # no-break space: an identifier character to PostgreSQL
        ("x0", "x0"),
        ("x9", "x9"),
        ("x$", "x$"),
        ("Xorders", "xorders"),
        ("\vorders\v", "orders"),
        ("\forders\r\n", "orders"),
    ],
)
def test_each_class_at_its_edges(text: str, name: str) -> None:
    assert parse_table_name(text) == TableName(None, name)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("or\x00ders", "table name contains a NUL character"),
        ("orders\ud800", "table name is not valid Unicode (lone surrogate)"),
        (" \v ", "empty table name"),
        ("a.b.c", "too many dotted parts (at most schema.table)"),
        ("a..b", "empty name part (leading, trailing or doubled '.')"),
        ('"x', "unterminated quoted identifier"),
        ('a."', "unterminated quoted identifier"),
        ('""', 'zero-length quoted identifier ("")'),
        (
            "0x",
            "unexpected character '0' at offset 0 (expected an identifier or a double-quoted name)",
        ),
        (
            "9",
            "unexpected character '9' at offset 0 (expected an identifier or a double-quoted name)",
        ),
        (
            "\x7f",
            "unexpected character U+007F at offset 0 "
            "(expected an identifier or a double-quoted name)",
        ),
        (
            "@",
            "unexpected character '@' at offset 0 (expected an identifier or a double-quoted name)",
        ),
        (
            "`",
            "unexpected character '`' at offset 0 (expected an identifier or a double-quoted name)",
        ),
        (
            "[",
            "unexpected character '[' at offset 0 (expected an identifier or a double-quoted name)",
        ),
        (
            "{",
            "unexpected character '{' at offset 0 (expected an identifier or a double-quoted name)",
        ),
        ("a b", "unexpected character 'b' at offset 2 (expected '.' or end of name)"),
        ("x/", "unexpected character '/' at offset 1 (expected '.' or end of name)"),
        ("x:", "unexpected character ':' at offset 1 (expected '.' or end of name)"),
        ("a" * 64, "identifier longer than 63 bytes (64 bytes in UTF-8)"),
        ("é" * 32, "identifier longer than 63 bytes (64 bytes in UTF-8)"),
    ],
)
def test_each_refusal_says_exactly_why(text: str, message: str) -> None:
    with pytest.raises(InvalidTableName) as info:
        parse_table_name(text)
    assert str(info.value) == message


def test_the_longest_identifier_is_kept_whole() -> None:
    assert MAX_IDENTIFIER_BYTES == 63
    assert parse_table_name("a" * 63).name == "a" * 63


def test_parsed_names_are_cached() -> None:
    """The same text asked again is the same value: no second parse."""
    assert parse_table_name("Sales.Orders") is parse_table_name("Sales.Orders")
    assert parse_table_name.cache_info().maxsize == 4096


@pytest.mark.parametrize(
    ("written", "literal"),
    [
        ([], "{}"),
        (["orders"], r'{"\"orders\""}'),
        (['"a""b"'], r'{"\"a\"\"b\""}'),
        (['"back\\slash"'], r'{"\"back\\slash\""}'),
        (['s."T"', "x"], r'{"\"s\".\"T\"","\"x\""}'),
    ],
)
def test_regclass_array_literal_exactly(written: list[str], literal: str) -> None:
    """The one array literal catalog statements take (tests/db/test_names.py checks that a
    server reads it as the list of regclass texts): each element double-quoted, with its
    backslashes and double quotes escaped by a backslash, commas between."""
    assert regclass_array([parse_table_name(w) for w in written]) == literal
