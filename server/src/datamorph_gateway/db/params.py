"""Caller parameters: the JSON values of ``$1, $2, ...`` as psycopg2 should send them.

psycopg2 quotes each value into the statement's text on the client (``sqltext`` puts
``%(pN)s`` where the parser found each placeholder), so the Python value decides what
PostgreSQL reads: integral numbers as integers, arrays of scalars as arrays, objects and
arrays that hold them as json, negative numbers in parentheses. Callers never build SQL
strings.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg2.extensions import ISQLQuote, adapt
from psycopg2.extras import Json

from datamorph_gateway.db.sqltext import param_name

MAX_SAFE_INTEGER = 2**53 - 1


def to_param(value: Any) -> Any:
    """A JSON value as psycopg2 should send it.

    Integral numbers go as integers (JSON has one number type, and ``LIMIT 5.0``
    is an error); arrays of scalars as PostgreSQL arrays; objects, and arrays
    that hold objects, as json.
    """
    if isinstance(value, float) and value.is_integer() and abs(value) <= MAX_SAFE_INTEGER:
        value = int(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
        return Negative(value)
    if isinstance(value, dict):
        return Json(value)
    if isinstance(value, list):
        if _has_object(value):
            return Json(value)
        return [to_param(v) for v in value]
    return value


class Negative:
    """A negative number, sent in parentheses: ``(-32768)``.

    psycopg2 pastes parameters into the statement's text, and a bare minus sign binds
    looser than a cast and can join the operator before it: ``$1::smallint`` with -32768
    would be ``-32768::smallint``, that is ``-(32768::smallint)`` (out of range), and
    ``5-$1`` with -3 would be ``5--3``, a comment.
    """

    def __init__(self, value: int | float) -> None:
        self._value = value

    def __conform__(self, protocol: object) -> Negative | None:
        return self if protocol is ISQLQuote else None

    def getquoted(self) -> bytes:
        quoted: bytes = adapt(self._value).getquoted()
        return b"(" + quoted + b")"

    def __repr__(self) -> str:
        return f"Negative({self._value!r})"


def _has_object(values: list[Any]) -> bool:
    return any(isinstance(v, dict) or (isinstance(v, list) and _has_object(v)) for v in values)


def bind_args(params: Sequence[Any] | None) -> dict[str, Any] | None:
    """psycopg2's arguments for the bound statements; None when no values are given."""
    if not params:
        return None
    return {param_name(i): to_param(v) for i, v in enumerate(params, 1)}
