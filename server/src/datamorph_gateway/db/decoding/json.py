"""json and jsonb: the document itself, with no number JSON cannot carry.

Numbers too large for a double (``1e400``) become their text, so no NaN or infinity
reaches JSON; huge integers stay exact Python ints until protobuf (doubles).
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["decode_json"]


def _json_float(t: str) -> float | str:
    f = float(t)
    return f if f - f == 0 else t


def _json_int(t: str) -> int | str:
    # Past 4300 digits int() refuses (CPython's limit); past ~309 no double holds it.
    return int(t) if len(t) < 300 else t


_json_decode = json.JSONDecoder(parse_float=_json_float).decode
_json_decode_big = json.JSONDecoder(parse_float=_json_float, parse_int=_json_int).decode


def decode_json(s: str | None, _cur: Any = None) -> Any:
    if s is None:
        return None
    try:
        return _json_decode(s)
    except ValueError:
        return _json_decode_big(s)
