"""Timestamps and times with zones, from the ISO DateStyle to ISO-8601.

date, time and interval need nothing: in the pinned formats their text already is the
contract's value. Timestamps in another DateStyle (one user SQL set), BC timestamps and
infinities pass through unchanged; ISO-8601 has no form for the last two.
"""

from __future__ import annotations

from typing import Any

__all__ = ["decode_timestamp", "decode_timestamptz", "decode_timetz"]


def _offset(t: str) -> str:
    """``…+00`` → ``…+00:00``; ``±HH:MM`` and ``±HH:MM:SS`` are kept."""
    return t + ":00" if t[-3] in "+-" else t


def decode_timestamp(s: str | None, _cur: Any = None) -> str | None:
    if s is None:
        return None
    p = s.find(" ")
    # ISO output has "-DD " before the space; other DateStyles and BC/infinity pass through.
    if p < 3 or s[p - 3] != "-" or s[-1] == "C":
        return s
    return s[:p] + "T" + s[p + 1 :]


def decode_timestamptz(s: str | None, _cur: Any = None) -> str | None:
    if s is None:
        return None
    p = s.find(" ")
    if p < 3 or s[p - 3] != "-" or s[-1] == "C":
        return s
    return s[:p] + "T" + _offset(s[p + 1 :])


def decode_timetz(s: str | None, _cur: Any = None) -> str | None:
    return None if s is None else _offset(s)
