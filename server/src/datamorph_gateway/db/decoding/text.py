"""Text-like types and bytea: strings as they are, bytes as base64."""

from __future__ import annotations

import binascii
import re
from typing import Any

__all__ = ["decode_bytea", "decode_text"]


def decode_text(s: str | None, _cur: Any = None) -> str | None:
    return s


_BYTEA_ESCAPE = re.compile(rb"\\(\\|[0-7]{3})")


def decode_bytea(s: str | None, _cur: Any = None) -> str | None:
    if s is None:
        return None
    if s[:2] == "\\x":
        raw = binascii.a2b_hex(s[2:])
    else:  # bytea_output = escape, set by user SQL
        raw = _BYTEA_ESCAPE.sub(
            lambda m: b"\\" if m[1] == b"\\" else bytes((int(m[1], 8),)), s.encode("ascii")
        )
    return binascii.b2a_base64(raw, newline=False).decode("ascii")
