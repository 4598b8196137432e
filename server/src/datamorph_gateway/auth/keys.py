"""API keys: random, at least 128 bits, stored only as ``sha256:<hex>`` of their UTF-8 bytes.

A key is looked up by its hash, so the policy never holds anything that would let its
reader call the gateway, and a key is never logged or echoed: only the principal it
belongs to is.
"""

from __future__ import annotations

import hashlib
import re
import secrets

__all__ = ["HASH_PATTERN", "KEY_PREFIX", "key_hash", "new_key"]

KEY_PREFIX = "dmgw_"
HASH_PATTERN = re.compile(r"^sha256:[0-9a-f]{64}$")
_KEY_BYTES = 32  # 256 bits


def new_key() -> str:
    """A new random API key (256 bits, URL-safe, recognisable by its prefix)."""
    return KEY_PREFIX + secrets.token_urlsafe(_KEY_BYTES)


def key_hash(key: str) -> str:
    """What the policy stores for ``key``."""
    return "sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()
