"""Row values, decoded by their column's PostgreSQL type; parameters, encoded back.

The gateway sends values as JSON (CONTRACT.md's value table), and each result names its
columns' PostgreSQL types. JSON has one number type, which protobuf carries as a double,
and no decimal, date or bytes, so the type name decides what a value becomes::

    int2 int4 int8 oid                   int (int8 beyond 2^53 arrives as text, exactly)
    float4 float8                        float ("NaN", "Infinity", "-Infinity" too)
    numeric                              decimal.Decimal (exact; NaN and ±Infinity too)
    bool                                 bool
    date                                 datetime.date
    timestamp / timestamptz              datetime.datetime, naive / aware
    time / timetz                        datetime.time, naive / aware
    bytea                                bytes
    uuid                                 uuid.UUID
    json jsonb                           dict, list, str, bool, None; numbers int when whole
    _<type> (arrays)                     nested lists of the element's type, None for NULL
    text, varchar, enums, interval,      str, as the gateway sent it (intervals are
      inet, money, anything else         ISO-8601 durations: P1Y2M3DT4H5M6.5S)

NULL is None in every column. Dates and times Python cannot hold (``infinity``, BC dates,
years past 9999, ``24:00:00``) stay the text PostgreSQL printed, so read such a column
with ``isinstance`` when it can hold them.

A JSON document's numbers travel as doubles: a whole one becomes an int (as
``json.loads`` would read it), up to 2^53; anything beyond stays a float.
"""

from __future__ import annotations

import binascii
import functools
import re
import uuid
from collections.abc import Callable, Mapping
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any, cast

from datamorph_client.models import JsonValue, Value

__all__ = ["MAX_SAFE_INTEGER", "decode_value", "decoder", "encode_param", "from_json"]

Decoder = Callable[[Any], Value]
"""Turns one non-NULL value as the gateway sent it (JSON, so ``Any``) into Python."""

MAX_SAFE_INTEGER = 2**53 - 1
"""The largest integer a JSON number (a double) carries exactly."""


def from_json(value: Any) -> JsonValue:
    """A JSON value as ``json.loads`` reads it: whole numbers as ints (up to 2^53)."""
    if type(value) is float:
        if value.is_integer() and -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            return int(value)
        return value
    if type(value) is list:
        return [from_json(v) for v in value]
    if type(value) is dict:
        return {k: from_json(v) for k, v in value.items()}
    return cast(JsonValue, value)


# A JSON document in a row is a Value too (its lists and dicts hold only JSON values).
_json_value = cast(Decoder, from_json)


def _numeric(value: Any) -> Decimal:
    return Decimal(value) if type(value) is str else Decimal(repr(value))


def _bytea(value: str) -> bytes:
    return binascii.a2b_base64(value)


# Python 3.10's fromisoformat takes 0, 3 or 6 fractional digits; PostgreSQL prints 0 to 6.
_FRACTION = re.compile(r"\.(\d{1,5})(?!\d)")


def _six_digits(text: str) -> str:
    if "." not in text:
        return text
    return _FRACTION.sub(lambda m: "." + m[1].ljust(6, "0"), text, count=1)


def _temporal(parse: Callable[[str], Value]) -> Decoder:
    def decode(value: Any) -> Value:
        try:
            return parse(_six_digits(value))
        except (TypeError, ValueError):
            return cast(str, value)  # infinity, BC, year 10000, 24:00:00: PostgreSQL's text

    return decode


_SCALARS: dict[str, Decoder] = {
    "int2": int,
    "int4": int,
    "int8": int,
    "oid": int,
    "float4": float,
    "float8": float,
    "numeric": _numeric,
    "date": _temporal(date.fromisoformat),
    "time": _temporal(time.fromisoformat),
    "timetz": _temporal(time.fromisoformat),
    "timestamp": _temporal(datetime.fromisoformat),
    "timestamptz": _temporal(datetime.fromisoformat),
    "bytea": _bytea,
    "uuid": uuid.UUID,
    "json": _json_value,
    "jsonb": _json_value,
}


def _array(element: Decoder) -> Decoder:
    def decode(value: Any) -> Value:
        if type(value) is not list:  # an extension type in the array category: its text
            return cast(Value, value)
        return [None if v is None else decode(v) if type(v) is list else element(v) for v in value]

    return decode


@functools.lru_cache(maxsize=512)
def decoder(type_name: str) -> Decoder:
    """The function that turns a non-NULL JSON value of ``type_name`` into Python."""
    if type_name in _SCALARS:
        return _SCALARS[type_name]
    if type_name.startswith("_") and len(type_name) > 1:
        return _array(decoder(type_name[1:]))
    return _json_value


def decode_value(type_name: str, value: Any) -> Value:
    """One JSON value of a column of PostgreSQL type ``type_name``, as the client returns it.

    For callers of the REST routes, whose answers name each column's type as well.
    """
    return None if value is None else decoder(type_name)(value)


def encode_param(value: Any) -> Any:
    """A query parameter as the JSON value the gateway takes.

    Values the client returns go back as they came: ``Decimal``, dates and times, UUIDs
    and bytes as their text (PostgreSQL infers the type from where ``$n`` stands), and
    integers beyond 2^53 as decimal strings, which the gateway asks for because a JSON
    number would round them. Inside a dict (sent as json) integers are left alone.
    """
    return _encode(value, in_json=False)


def _encode(value: Any, *, in_json: bool) -> Any:
    if value is None or isinstance(value, (str, bool, float)):
        return value
    if isinstance(value, int):
        if in_json or -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            return value
        return str(value)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (date, time)):  # datetime is a date
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "\\x" + bytes(value).hex()
    if isinstance(value, (list, tuple)):
        return [_encode(v, in_json=in_json) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _encode(v, in_json=True) for k, v in value.items()}
    return value  # protobuf says what it cannot carry
