"""Arrays: PostgreSQL's array output into nested lists, and psycopg2's parser made to cope.

Built-in arrays are parsed by psycopg2's C array caster during the fetch, wrapped by
``fix_bounds``; the rest (box[], whose delimiter is ``;``, and arrays of per-database
types) are fetched as text and parsed after by ``parse_array``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

__all__ = ["Decoder", "array_decoder", "fix_bounds", "parse_array"]

Decoder = Callable[[str], Any]  # a non-NULL value's fetched text → its JSON value

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


def array_decoder(delim: str, element: Decoder | None) -> Decoder:
    """A decoder for fetched array text whose elements ``element`` decodes."""

    def decode(s: str) -> Any:
        # A non-array type may sit in the array category (extensions); keep its text.
        if s[:1] not in ("{", "["):
            return s
        return parse_array(s, delim, element)

    return decode


def fix_bounds(array_caster: Any) -> Callable[[str | None, Any], Any]:
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
