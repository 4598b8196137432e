"""bool, integers and floats: the types whose text becomes a JSON boolean or number.

Like every decoder of this package, each takes PostgreSQL's text output (None for NULL)
and an unused cursor, so one function serves as a psycopg2 typecaster and as an array
element decoder.
"""

from __future__ import annotations

from typing import Any, Final

__all__ = ["decode_bool", "decode_float", "decode_int", "decode_int8"]

_MAX_SAFE_INT: Final = 2**53 - 1


def decode_bool(s: str | None, _cur: Any = None) -> bool | None:
    return None if s is None else s == "t"


def decode_int(s: str | None, _cur: Any = None) -> int | None:
    return None if s is None else int(s)


def decode_int8(s: str | None, _cur: Any = None) -> int | str | None:
    """A number while a double holds it exactly, else its decimal text."""
    if s is None:
        return None
    if len(s) < 16:
        return int(s)
    v = int(s)
    return v if -_MAX_SAFE_INT <= v <= _MAX_SAFE_INT else s


def decode_float(s: str | None, _cur: Any = None) -> float | str | None:
    if s is None:
        return None
    f = float(s)
    # Only NaN and the infinities fail this; PostgreSQL spells them as the contract does.
    return f if f - f == 0 else s
