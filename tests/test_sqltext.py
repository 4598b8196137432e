"""Lexing SQL text: $n placeholders, % escaping, statement count and leading keyword."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any

import psycopg2
import pytest
from psycopg2.extensions import connection

from datamorph_gateway.db.sqltext import SqlText, SqlTextError, param_name, scan, to_pyformat

PLACEHOLDERS = [
    # sql, placeholders found
    ("select 1", set()),
    ("select $1", {1}),
    ("select $1, $2, $10", {1, 2, 10}),
    ("select $2, $2", {2}),
    ("select $01", {1}),
    ("select $0", {0}),
    ("select $1::int", {1}),
    ("select $1::int[], $2::text", {1, 2}),
    ("select ($1)", {1}),
    ("select x.$1", {1}),
    ("select 1+$1", {1}),
    # Literals of every kind hide placeholders.
    ("select '$1'", set()),
    ("select 'it''s $1', $2", {2}),
    ("select ''''||$1", {1}),
    ("select E'$1'", set()),
    ("select e'it\\'s $1', $2", {2}),
    ("select E'\\\\', $1", {1}),
    ("select E'a''$1'", set()),
    ("select E'\\\\\\'$1'", set()),
    # standard_conforming_strings: a backslash in '...' escapes nothing.
    ("select 'a\\', $1", {1}),
    ("select U&'$1', U&'d\\0061t$2'", set()),
    ("select u&'$1' UESCAPE '!'", set()),
    ("select B'$1', X'$2', N'$3', b'1', $4", {4}),
    ('select "$1"', set()),
    ('select "a""$1"', set()),
    ('select U&"$1"', set()),
    ('select "it\'s", $1', {1}),
    # Comments.
    ("-- $1\nselect $2", {2}),
    ("select 1 -- $1", set()),
    ("select 1 -- $1\r, $2", {2}),
    ("select 1 --$1\n", set()),
    ("select 2--$1\n", set()),
    ("select 1 @--$1\n", set()),
    ("/* $1 */ select $2", {2}),
    ("select 1 /* /* $1 */ $2 */, $3", {3}),
    ("select 1 /*/ $1 */, $2", {2}),
    ("select 1 /**/ $1", {1}),
    ("select 1 /* ** $1 **/ $2", {2}),
    ("select 1 +/* $1 */ $2", {2}),
    ("select '/*', $1, '*/'", {1}),
    # Dollar quoting.
    ("select $$ $1 $$, $2", {2}),
    ("select $$$$, $1", {1}),
    ("select $a$ $1 $$ $b$ $a$, $2", {2}),
    ("select $a$ $A$ $1 $a$", set()),
    ("select $a$ $ba$ $1 $a$, $2", {2}),
    ("select $_x1$ $1 $_x1$, $2", {2}),
    ("select $é$ $1 $é$, $2", {2}),
    ("select $1$a$ $2 $a$", {1}),
    ("select $1$$ $2 $$", {1}),
    ("select $abc $1", {1}),
    ("select $ 1, $1", {1}),
    # Identifier characters include $: these are identifiers, not placeholders.
    ("select a$1", set()),
    ("select a$1, $2", {2}),
    ("select _$1, é$2, E$3, U$4", set()),
    ("select a$$1$$", set()),
    ("select a$b$ $1 $b$", {1}),
    # A number ends before $, so $ starts a new token after it.
    ("select 1$1", {1}),
    ("select 0x1F$$ $1 $$, $2", {2}),
    ("select 1_000$$ $1 $$", set()),
    ("select 1.5e3$1", {1}),
    ("select 1e'$1'", set()),
    # "$1abc" is trailing junk to the server, not a placeholder for us to fill.
    ("select $1abc", set()),
    ("select $1é, $2", {2}),
    # E-string continuation: the second part is still an E-string (\' escapes).
    ("select E'x'\n'\\' , $1 --'", set()),
    ("select E'x' -- comment 'with quote'\n  '\\' , $1 --'", set()),
    ("select E'x'\r\n\t'\\' , $1 --'", set()),
    # ... only across a newline, and a /* */ comment breaks it.
    ("select E'x' '\\' , $1 --'", {1}),
    ("select E'x'\n/**/'\\' , $1 --'", {1}),
    ("select E'x' /* \n */ '\\' , $1 --'", {1}),
    ("select 'a' -- c\n'b', $1", {1}),
    # Unterminated constructs swallow the rest, as they do in the server.
    ("select 'abc $1", set()),
    ("select E'abc\\' $1", set()),
    ('select "abc $1', set()),
    ("select $$ $1", set()),
    ("select $a$ $1 $a", set()),
    ("select /* $1", set()),
    ("select /* /* */ $1", set()),
    ("select 1 -- $1", set()),
]


@pytest.mark.parametrize(("sql", "expected"), PLACEHOLDERS)
def test_placeholders(sql: str, expected: set[int]) -> None:
    result = scan(sql)
    assert result.placeholders == frozenset(expected)
    assert result.max_placeholder == max(expected, default=0)


REWRITES = [
    ("select 1", "select 1"),
    ("select $1", "select %(p1)s"),
    ("select $1::int + $2", "select %(p1)s::int + %(p2)s"),
    ("select ($1,$2)", "select (%(p1)s,%(p2)s)"),
    ("select $01, $10", "select %(p1)s, %(p10)s"),
    ("select '100%'", "select '100%%'"),
    ("select 5 % 3", "select 5 %% 3"),
    ("select $1 % 2", "select %(p1)s %% 2"),
    (
        "select * from t where name like 'a%' and id = $1",
        "select * from t where name like 'a%%' and id = %(p1)s",
    ),
    ("select name like $1 || '%' from t", "select name like %(p1)s || '%%' from t"),
    ("-- 50% done\nselect '%s', \"%(p1)s\"", "-- 50%% done\nselect '%%s', \"%%(p1)s\""),
    ("select $$ $1 % $$, $1", "select $$ $1 %% $$, %(p1)s"),
    ("select a$1, '$1', $1", "select a$1, '$1', %(p1)s"),
    ("select $1abc", "select $1abc"),
    ("select %%", "select %%%%"),
    ("select 'abc $1 %", "select 'abc $1 %%"),
    # A space keeps the server's token boundaries where the value would otherwise fuse.
    ("select $1$2", "select %(p1)s %(p2)s"),
    ("select 1$1", "select 1 %(p1)s"),
    ("select 1.$1", "select 1. %(p1)s"),
    ("select $1.5", "select %(p1)s .5"),
    ("select U&$1", "select U& %(p1)s"),
    ("select 'a'$1", "select 'a' %(p1)s"),
    ("select $1'a'", "select %(p1)s 'a'"),
    ("select $1$$x$$", "select %(p1)s $$x$$"),
    ("select -$1, @$1, $1-1, $1||$2", "select -%(p1)s, @%(p1)s, %(p1)s-1, %(p1)s||%(p2)s"),
    # '...'<newline>'...' is one literal: keep a value from joining its neighbour.
    ("select $1\n$2", "select %(p1)s\n/**/%(p2)s"),
    ("select 'a'\n$1", "select 'a'\n/**/%(p1)s"),
    ("select E'a'\n$1", "select E'a'\n/**/%(p1)s"),
    ("select $1\n'a'", "select %(p1)s/**/\n'a'"),
    ("select $1 -- c\n  'a'", "select %(p1)s/**/ -- c\n  'a'"),
    ("select $1 /* c */\n'a'", "select %(p1)s /* c */\n'a'"),
    ("select $1 'a'", "select %(p1)s 'a'"),
    ("select $1\nE'a'", "select %(p1)s\nE'a'"),
    ("select $$a$$\n$1", "select $$a$$\n%(p1)s"),
]


@pytest.mark.parametrize(("sql", "expected"), REWRITES)
def test_to_pyformat(sql: str, expected: str) -> None:
    assert to_pyformat(sql) == expected


STATEMENTS = [
    ("", 0),
    ("   \n\t", 0),
    ("-- only a comment", 0),
    ("/* only a comment */", 0),
    (";", 0),
    (";;", 0),
    (" ; -- x\n ; /* y */ ;", 0),
    ("select 1", 1),
    ("select 1;", 1),
    ("select 1 ;  \n", 1),
    ("select 1; select 2;", 2),
    ("select 1; select 2", 2),
    ("select 1;;select 2", 2),
    ("; select 1", 1),
    ("select ';'", 1),
    ("select E'\\';'", 1),
    ('select ";"', 1),
    ("select $$;$$", 1),
    ("select $q$;$q$; select 2", 2),
    ("select 1 -- ;\n", 1),
    ("select 1 -- ;\n; select 2", 2),
    ("select /* ; */ 1", 1),
    ("select /* /* ; */ ; */ 1", 1),
    ("select $1; select $2", 2),
    # psql's splitting: not inside parentheses ...
    ("select (1;2)", 1),
    (
        "create rule r as on insert to t do also"
        " (insert into a values (1); insert into b values (2)); select 1",
        2,
    ),
    ("select (1));select 2", 2),
    # ... nor inside the BEGIN ATOMIC body of CREATE [OR REPLACE] FUNCTION/PROCEDURE.
    (
        "create function f() returns int language sql"
        " begin atomic select 1; select 2; end; select 3",
        2,
    ),
    (
        "CREATE OR REPLACE PROCEDURE p() LANGUAGE sql BEGIN ATOMIC INSERT INTO t VALUES (1); END",
        1,
    ),
    (
        "create function f(x int) returns int language sql begin atomic"
        " select case when x > 0 then 1 else 2 end; select 3; end; select 4",
        2,
    ),
    ("create function f() returns int as $$ begin; $$ language sql; select 1", 2),
    ("begin; select 1; commit;", 3),
    ("create table begin_t (x int); select 1", 2),
    ("create table t (begin int); select 1", 2),
]


@pytest.mark.parametrize(("sql", "expected"), STATEMENTS)
def test_statement_count(sql: str, expected: int) -> None:
    assert scan(sql).statements == expected


FIRST_KEYWORD = [
    ("", ""),
    ("-- nothing", ""),
    ("select 1", "SELECT"),
    ("  SeLeCt 1", "SELECT"),
    ("\n\tselect 1", "SELECT"),
    ("(select 1)", "SELECT"),
    ("(select 1) union (select 2)", "SELECT"),
    ("( ( values (1) ) )", "VALUES"),
    ("/* x */ with a as (select 1) select * from a", "WITH"),
    ("/* /* nested */ */ delete from t", "DELETE"),
    ("-- c\nTABLE t", "TABLE"),
    ("-- c\r(/* c */ -- c\n table t)", "TABLE"),
    ("insert into t values ($1)", "INSERT"),
    ("update t set x = 1", "UPDATE"),
    ("explain select 1", "EXPLAIN"),
    ("; ; select 1", "SELECT"),
    ("select 1; insert into t values (1)", "SELECT"),
    ("$1", ""),
    ("'select'", ""),
    ('"select" from t', ""),
    ("E'x'", ""),
    ("1", ""),
    ("()", ""),
    ("select_x", "SELECT_X"),
    ("sélect", "SéLECT"),
]


@pytest.mark.parametrize(("sql", "expected"), FIRST_KEYWORD)
def test_first_keyword(sql: str, expected: str) -> None:
    assert scan(sql).first_keyword == expected


def test_scan_result() -> None:
    assert scan("/* hi */ (select $2, '$3', $2::int);") == SqlText(
        statements=1,
        first_keyword="SELECT",
        keywords=("SELECT",),
        max_placeholder=2,
        placeholders=frozenset({2}),
    )


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("select 1; commit; (insert into t values (1));;", ("SELECT", "COMMIT", "INSERT")),
        ("begin; select ';'; end", ("BEGIN", "SELECT", "END")),
        ("-- only a comment", ()),
        (
            "create function f() returns int begin atomic; select 1; end; rollback",
            ("CREATE", "ROLLBACK"),
        ),
    ],
)
def test_keywords_of_every_statement(sql: str, expected: tuple[str, ...]) -> None:
    assert scan(sql).keywords == expected


@pytest.mark.parametrize("sql", ["select 1\x00; drop table t", "\x00", "select '\x00'"])
def test_nul_is_refused(sql: str) -> None:
    # libpq would stop reading at the NUL and run whatever came before it.
    with pytest.raises(SqlTextError, match="NUL"):
        scan(sql)
    with pytest.raises(SqlTextError, match="NUL"):
        to_pyformat(sql)


def test_param_name() -> None:
    assert param_name(12) == "p12"


def test_linear_time_on_large_inputs() -> None:
    big = [
        "select " + ", ".join(f"${i % 50 + 1}" for i in range(50_000)),
        "select E'" + "\\\\\\'" * 100_000 + "'",
        "select E'a'" + "\n'b'" * 50_000,
        "select /*" * 50_000 + "*/" * 50_000,
        "select $a$" + "$b$ $a " * 50_000,
        ("select E'a' " + "-- c\n" * 10 + "x") * 5_000,
        "%" * 500_000,
        "select " + "a$1 " * 100_000,
        "select " + "(" * 100_000,
    ]
    for sql in big:
        # Quadratic behaviour would take minutes here; the timeout would catch it.
        assert scan(sql).statements <= 1
        assert len(to_pyformat(sql)) >= len(sql)


class _Echo(dict[str, str]):
    """Formats %(pN)s back to $N, the way psycopg2 fills in values, noting the keys asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: set[int] = set()

    def __missing__(self, key: str) -> str:
        assert re.fullmatch(r"p\d+", key)
        self.asked.add(int(key[1:]))
        return f"${key[1:]}"


def test_fragments_property() -> None:
    """SQL assembled from fragments whose placeholders we know."""
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies
    text = st.text(st.characters(exclude_characters="\x00", codec="utf-8"), max_size=20)
    tag = st.from_regex(r"([A-Za-z_][A-Za-z_0-9]{0,5})?", fullmatch=True)

    def dollar(pair: tuple[str, str]) -> str:
        delim = f"${pair[0]}$"
        return delim + pair[1] + delim

    fragments = st.one_of(
        st.integers(0, 120).map(lambda n: ("param", n)),
        text.map(lambda s: ("text", "'" + s.replace("'", "''") + "'")),
        text.map(lambda s: ("text", "E'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'")),
        text.map(lambda s: ("text", "U&'" + s.replace("'", "''") + "'")),
        text.filter(bool).map(lambda s: ("text", '"' + s.replace('"', '""') + '"')),
        st.tuples(tag, text)
        .filter(lambda p: (p[1] + f"${p[0]}$").find(f"${p[0]}$") == len(p[1]))
        .map(lambda p: ("text", dollar(p))),
        text.map(lambda s: ("text", "--" + re.sub("[\r\n]", "", s) + "\n")),
        text.filter(lambda s: "*/" not in s and "/*" not in s + "*/").map(
            lambda s: ("text", "/*" + s + "*/")
        ),
        st.sampled_from(["select", "x", "a$1", "1", "1.5", "%", "::int", "(", ")", ","]).map(
            lambda s: ("text", s)
        ),
    )

    @hypothesis.settings(max_examples=500, database=None, deadline=None)
    @hypothesis.given(st.lists(fragments, max_size=12))
    def check(parts: list[tuple[str, Any]]) -> None:
        sql = " + ".join(f"${v}" if kind == "param" else v for kind, v in parts)
        expected = " + ".join(
            f"%(p{v})s" if kind == "param" else v.replace("%", "%%") for kind, v in parts
        )
        numbers = {v for kind, v in parts if kind == "param"}
        assert to_pyformat(sql) == expected
        assert scan(sql).placeholders == numbers
        echo = _Echo()
        assert to_pyformat(sql) % echo == sql
        assert echo.asked == numbers

    check()


def test_arbitrary_text_property() -> None:
    """Any text: psycopg2-style formatting works and gives the text back, placeholders aside."""
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies
    sqlish = st.text(st.sampled_from(list("$1209aEeUu&'\"-/*\n\r %;()\\.x_é")), max_size=60)

    @hypothesis.settings(max_examples=2000, database=None, deadline=None)
    @hypothesis.given(sqlish)
    def check(sql: str) -> None:
        result = scan(sql)
        echo = _Echo()
        formatted = to_pyformat(sql) % echo  # a stray % would raise here
        assert echo.asked == result.placeholders
        assert result.max_placeholder == max(result.placeholders, default=0)
        if not result.placeholders:
            assert formatted == sql
        assert _normalized(formatted) == _normalized(sql)

    check()


def _normalized(sql: str) -> str:
    """Drop what to_pyformat may add (spaces, empty comments) and leading zeros of $0n."""
    return re.sub(r"\$0+(?=\d)", "$", sql.replace("/**/", "").replace(" ", ""))


@pytest.fixture(scope="module")
def conn(database_url: str) -> Iterator[connection]:
    with contextlib.closing(psycopg2.connect(database_url)) as conn:
        conn.autocommit = True
        yield conn


def _client_side(conn: connection, sql: str, values: list[Any]) -> list[tuple[Any, ...]]:
    with conn.cursor() as cur:
        cur.execute(to_pyformat(sql), {param_name(i + 1): v for i, v in enumerate(values)})
        return cur.fetchall()


def _server_side(conn: connection, sql: str, values: list[str]) -> list[tuple[Any, ...]]:
    """The same query with real bind parameters: the reference we must agree with."""
    with conn.cursor() as cur:
        cur.execute("DEALLOCATE ALL")
        cur.execute(f"PREPARE q({', '.join(['text'] * len(values))}) AS {sql}")
        cur.execute(f"EXECUTE q({', '.join(['%s'] * len(values))})", values)
        return cur.fetchall()


def test_rewritten_query_runs_with_params(conn: connection) -> None:
    rows = _client_side(conn, "select $1::int + $2, '100%', $$ $1 $$, $1", [1, 2])
    assert rows == [(3, "100%", " $1 ", 1)]


HOSTILE = ["'); select 'pwned", "$$; select 1; --", "%s %(p1)s %%", "\\'", "*/ --", "a''b"]

DIFFERENTIAL = [
    "select $1::text, '$1', $2::text",
    "select $1::text || '%' || $2::text like 'a%'",
    "select length($1::text) % 7, 100 % 3",
    "select E'it\\'s $1', $2::text, 'a\\', $3::text",
    "select E'x'\n'\\' , $1 --', $2::text",
    "select 'a' -- it's\n'b', $1::text",
    "select $$ $1 $$, $q$ $$ $1 $q$, $3::text",
    "select /* $1 /* $2 */ $3 */ $4::text -- $5\n, $6::text",
    'select "$1" from (select $2::text as "$1") s',
    'select U&\'d\\0061t$1\', U&"a$1" from (select $1::text as "a$1") s',
    "select a$1 from (select $2::text as a$1) s",
    "select $1::text || $2::text || $3::text || $4::text || $5::text || $6::text",
    "select ($1::text), ((select $2::text))",
    "select $1::text\n, $2::text",
    "select 1$1",
    "select $1\n$2",
    "select 'x'\n$1",
]


@pytest.mark.parametrize("sql", DIFFERENTIAL)
def test_agrees_with_server_side_parameters(conn: connection, sql: str) -> None:
    try:
        expected: list[tuple[Any, ...]] | type[psycopg2.Error] = _server_side(conn, sql, HOSTILE)
    except psycopg2.Error as exc:
        expected = type(exc)
    try:
        actual: list[tuple[Any, ...]] | type[psycopg2.Error] = _client_side(conn, sql, HOSTILE)
    except psycopg2.Error as exc:
        actual = type(exc)
    assert actual == expected
