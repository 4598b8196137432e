"""Just enough lexing of PostgreSQL SQL text to bridge ``$n`` parameters to psycopg2.

ExecuteQuery takes PostgreSQL-style ``$1, $2, ...`` placeholders, but psycopg2 only
interpolates ``%(name)s`` on the client (quoting every value itself). Rewriting is only safe
if we agree with the server about where literals, quoted identifiers, comments and
dollar-quoted strings begin and end: a ``$1`` we wrongly rewrite inside a literal would let
a parameter's quoted value close that literal. So the lexer follows PostgreSQL's own
scanner (``src/backend/parser/scan.l``, PostgreSQL 16+ number syntax) rule for rule, with
``standard_conforming_strings`` on (the default since 9.1; connections must keep it on).

Malformed text (an unterminated literal, comment or dollar quote) is passed through
unchanged rather than rejected: the server's own error message, with its position, is more
useful than ours, and nothing is rewritten inside the unterminated part, so it stays safe.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["SqlText", "SqlTextError", "param_name", "scan", "to_pyformat"]


class SqlTextError(ValueError):
    """SQL text we refuse to send at all."""


@dataclass(frozen=True)
class SqlText:
    """What the gateway needs to know about a query before executing it."""

    statements: int
    """Non-empty statements, split on ``;`` the way psql splits them."""
    first_keyword: str
    """Leading word (after any "(") of the first statement, ASCII upper case; "" if none."""
    keywords: tuple[str, ...]
    """Leading word of every non-empty statement, as first_keyword is of the first."""
    max_placeholder: int
    """Highest ``$n`` used, 0 if none."""
    placeholders: frozenset[int]
    """Every ``$n`` used; may contain 0 (``$0``), which no parameter can satisfy."""


def param_name(number: int) -> str:
    """Key under which ``to_pyformat`` output expects the value of ``$number``."""
    return f"p{number}"


_IDENT_START = "A-Za-z_\x80-\U0010ffff"  # the scanner takes every high-bit byte
_DEC = "[0-9](?:_?[0-9])*"

# One token of PostgreSQL's INITIAL scanner state per match. Alternation is first-match, so
# the order reproduces flex's longest-match choices where two rules compete.
_TOKEN = re.compile(
    "|".join(
        [
            r"(?P<space>[ \t\n\r\f\v]+)",
            r"(?P<line_comment>--[^\n\r]*)",
            r"(?P<block_comment>/\*)",
            r"(?P<estring>[eE]')",
            # B'', X'', N'' and U&'' differ from '' only in ways that do not move the end.
            r"(?P<string>(?:[bBxXnN]|[uU]&)?')",
            r'(?P<qident>(?:[uU]&)?")',
            r"(?P<uamp>[uU]&)",
            rf"(?P<ident>[{_IDENT_START}][{_IDENT_START}0-9$]*)",
            # Numbers matter only because a "$" right after one starts a new token.
            r"(?P<number>0[xX](?:_?[0-9A-Fa-f])+|0[oO](?:_?[0-7])+|0[bB](?:_?[01])+"
            rf"|(?:{_DEC}(?:\.(?!\.)(?:{_DEC})?)?|\.{_DEC})(?:[eE][+-]?{_DEC})?)",
            # "$1abc" is a syntax error ("trailing junk after parameter"): not a placeholder,
            # so the server gets to report it instead of seeing "'value' abc".
            rf"(?P<param_junk>\$[0-9]+[{_IDENT_START}][{_IDENT_START}0-9$]*)",
            r"(?P<param>\$[0-9]+)",
            rf"(?P<dollar>\$(?:[{_IDENT_START}][{_IDENT_START}0-9]*)?\$)",
            # Runs of characters that never start anything we track, matched in one go so
            # operator-heavy or %-heavy text does not cost a match per character.
            r"(?P<plain>[~!@#^&|`?+*%<>=,:\[\]{}\\]+)",
            r"(?P<other>.)",
        ]
    ),
    re.DOTALL,
)

_BLOCK_COMMENT_DELIM = re.compile(r"/\*|\*/")
_ESTRING_STOP = re.compile(r"[\\']")
# scan.l's {quotecontinue}: after a closing quote, whitespace and -- comments including at
# least one newline, then a quote, continue the same literal (in the same E-string mode).
_QUOTE_CONTINUE = re.compile(
    r"(?>[ \t\f\v]|--[^\n\r]*+)*+[\n\r](?>[ \t\n\r\f\v]|--[^\n\r]*+[\n\r])*+'"
)

_ASCII_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_ROUTINE_WORDS = frozenset({"create", "function", "procedure", "or", "replace"})


def _skip_block_comment(sql: str, pos: int) -> int:
    """End of a ``/* */`` comment opened just before ``pos``; they nest in PostgreSQL."""
    depth = 0
    for delim in _BLOCK_COMMENT_DELIM.finditer(sql, pos):
        if delim.group() == "/*":
            depth += 1
        elif depth == 0:
            return delim.end()
        else:
            depth -= 1
    return len(sql)


def _skip_quoted(sql: str, pos: int, quote: str) -> int:
    """End of a '...' string or "..." identifier whose opening quote ends at ``pos``."""
    n = len(sql)
    while True:
        close = sql.find(quote, pos)
        if close < 0:
            return n
        if close + 1 < n and sql[close + 1] == quote:
            pos = close + 2
            continue
        return close + 1


def _skip_estring(sql: str, pos: int) -> int:
    """End of an E'...' string, where a backslash escapes the next character, even a quote."""
    n = len(sql)
    while True:
        stop = _ESTRING_STOP.search(sql, pos)
        if stop is None:
            return n
        i = stop.start()
        if sql[i] == "\\" or (i + 1 < n and sql[i + 1] == "'"):
            pos = min(i + 2, n)
            continue
        more = _QUOTE_CONTINUE.match(sql, i + 1)
        if more is None:
            return i + 1
        pos = more.end()


@dataclass
class _Param:
    start: int
    end: int
    number: int
    # "'a'<newline>'b'" is one literal to PostgreSQL, so a string value must not land
    # where only whitespace with a newline separates it from another string.
    fence_before: bool = False
    fence_after: bool = False


@dataclass(frozen=True)
class _Lexed:
    text: SqlText
    params: list[_Param]


_ENDS_IN_QUOTE = frozenset({"string", "estring", "param"})


def _lex(sql: str) -> _Lexed:
    if "\x00" in sql:
        # libpq stops reading at a NUL, so the server would run a silently shortened query.
        raise SqlTextError("query text contains a NUL character")
    n = len(sql)
    pos = 0
    params: list[_Param] = []
    previous = ""  # kind of the last token other than whitespace and -- comments
    newline_since = False
    statements = 0
    in_statement = False
    keyword: str | None = None
    keywords: list[str] = []
    # psql's statement splitting: ";" ends a statement only outside parentheses and outside
    # a BEGIN ... END body of CREATE [OR REPLACE] FUNCTION/PROCEDURE (SQL-standard bodies).
    paren_depth = 0
    begin_depth = 0
    ident_count = 0
    routine_marks = ["", "", "", ""]

    while pos < n:
        token = _TOKEN.match(sql, pos)
        assert token is not None  # <other> matches any character
        kind = token.lastgroup
        end = token.end()
        if kind == "space":
            newline_since = newline_since or "\n" in token.group() or "\r" in token.group()
            pos = end
            continue
        if kind == "line_comment":
            pos = end
            continue
        continues = newline_since and previous in _ENDS_IN_QUOTE
        after_param = previous == "param"
        previous, newline_since = kind or "", False
        if kind == "block_comment":
            pos = _skip_block_comment(sql, end)
            continue

        char = sql[pos]
        if kind == "other" and char == ";" and paren_depth == 0 and begin_depth == 0:
            if in_statement:
                statements += 1
                keywords.append(keyword or "")
            in_statement = False
            keyword = None
            ident_count = 0
            pos = end
            continue
        in_statement = True
        if keyword is None and not (kind == "other" and char == "("):
            keyword = token.group().translate(_ASCII_UPPER) if kind == "ident" else ""

        if kind == "other":
            if char == "(":
                paren_depth += 1
            elif char == ")" and paren_depth > 0:
                paren_depth -= 1
        elif kind == "ident":
            word = token.group().translate(_ASCII_LOWER)
            if ident_count == 0:
                routine_marks = ["", "", "", ""]
            if word in _ROUTINE_WORDS and ident_count < len(routine_marks):
                routine_marks[ident_count] = word[0]
            ident_count += 1
            in_routine = routine_marks[0] == "c" and (
                routine_marks[1] in ("f", "p")
                or (routine_marks[1:3] == ["o", "r"] and routine_marks[3] in ("f", "p"))
            )
            if in_routine and paren_depth == 0:
                if word == "begin" or (word == "case" and begin_depth > 0):
                    begin_depth += 1
                elif word == "end" and begin_depth > 0:
                    begin_depth -= 1
        elif kind == "string":
            if continues and after_param and token.group() == "'":
                params[-1].fence_after = True
            end = _skip_quoted(sql, end, "'")
        elif kind == "qident":
            end = _skip_quoted(sql, end, '"')
        elif kind == "estring":
            end = _skip_estring(sql, end)
        elif kind == "dollar":
            close = sql.find(token.group(), end)
            end = n if close < 0 else close + len(token.group())
        elif kind == "param":
            params.append(_Param(pos, end, int(token.group()[1:]), fence_before=continues))
        pos = end

    if in_statement:
        statements += 1
        keywords.append(keyword or "")
    numbers = frozenset(param.number for param in params)
    return _Lexed(
        text=SqlText(
            statements=statements,
            first_keyword=keywords[0] if keywords else "",
            keywords=tuple(keywords),
            max_placeholder=max(numbers, default=0),
            placeholders=numbers,
        ),
        params=params,
    )


def scan(sql: str) -> SqlText:
    """Statement count, leading keyword and ``$n`` placeholders of ``sql``, in one pass.

    Raises SqlTextError only for a NUL character; malformed SQL is left to the server.
    """
    return _lex(sql).text


def _merges(char: str) -> bool:
    """Whether a value substituted next to ``char`` could fuse into one token with it.

    ``1$1`` or ``U&$1`` are separate tokens to the server, but ``15`` or ``U&'x'`` after
    interpolation are not; a space keeps the server's original token boundaries.
    """
    return char.isalnum() or char in "_$.'&" or char >= "\x80"


def to_pyformat(sql: str) -> str:
    """Rewrite ``$n`` to ``%(pn)s`` and every other ``%`` to ``%%`` for psycopg2.

    Execute the result only with a parameter mapping (keys from ``param_name``, an empty one
    if there are no placeholders): psycopg2 turns ``%%`` back into ``%`` only when it
    interpolates. Beside a placeholder we add a space where the value would otherwise fuse
    with its neighbour, and an empty ``/**/`` where a string value would otherwise continue
    an adjacent string literal across a newline; both leave the server's tokens as they
    were. Raises SqlTextError only for a NUL character.
    """
    lexed = _lex(sql)
    out: list[str] = []
    last = 0
    for param in lexed.params:
        start, end = param.start, param.end
        out.append(sql[last:start].replace("%", "%%"))
        before = " " if start > last and _merges(sql[start - 1]) else ""
        after = " " if end < len(sql) and _merges(sql[end]) else ""
        if param.fence_before:
            before = "/**/"
        if param.fence_after:
            after = "/**/"
        out.append(f"{before}%({param_name(param.number)})s{after}")
        last = end
    out.append(sql[last:].replace("%", "%%"))
    return "".join(out)
