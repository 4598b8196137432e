"""API keys: random, at least 128 bits, stored only as ``sha256:<hex>`` of their UTF-8 bytes.

A key is looked up by its hash, so the policy never holds anything that would let its
reader call the gateway, and a key is never logged or echoed: only the principal it
belongs to is.

Every call with a key (or a remembered token) hashes it, so the hash is on the hot path.
``sha256`` is CPython's own SHA-256 where this Python has it (``_sha2`` from 3.12,
``_sha256`` before): for the few hundred bytes of a credential it is about twice as fast as
OpenSSL's through ``hashlib`` when the caches are cold, as they are at one call at a time
(OpenSSL 3's per-call set-up, not the hashing, is the cost; docs/benchmarks.md). The digest
is the same; ``hashlib.sha256`` stands in where the builtin is missing. The builtin is not
OpenSSL's FIPS-validated module: nothing here needs FIPS (it looks keys up, it does not
protect them in transit), but a deployment that requires every hash to be is told so in
docs/security.md.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Callable

__all__ = ["HASH_PATTERN", "KEY_PREFIX", "key_digest", "key_hash", "new_key", "sha256"]

KEY_PREFIX = "dmgw_"
HASH_PATTERN = re.compile(r"^sha256:[0-9a-f]{64}$")
_KEY_BYTES = 32  # 256 bits


def _builtin_sha256() -> Callable[[bytes], hashlib._Hash]:
    try:
        from _sha2 import sha256 as builtin  # type: ignore[import-not-found]  # 3.12+
    except ImportError:
        try:
            from _sha256 import sha256 as builtin  # type: ignore[import-not-found]  # 3.11
        except ImportError:
            return hashlib.sha256
    return builtin  # type: ignore[no-any-return]


sha256 = _builtin_sha256()


def new_key() -> str:
    """A new random API key (256 bits, URL-safe, recognisable by its prefix)."""
    return KEY_PREFIX + secrets.token_urlsafe(_KEY_BYTES)


def key_digest(key: str) -> bytes:
    """The SHA-256 of ``key``'s UTF-8 bytes, as the gateway looks keys up."""
    return sha256(key.encode("utf-8")).digest()


def key_hash(key: str) -> str:
    """What the policy stores for ``key``."""
    return "sha256:" + key_digest(key).hex()
