"""OAuth 2 / OIDC access tokens (``authorization: Bearer <JWT>``), checked against a JWKS.

PyJWT checks signatures and the ``iss``, ``aud`` and required claims; the gateway decides
which key and which algorithm it may use, because that choice is where JWT verifiers break.
Which keys there are, and which of them may be used at all, is ``jwks``'s business (a file
or a URL, refreshed at a bounded rate); this module verifies a token with them:

- **Algorithms** are asymmetric only (RS*, PS*, ES*, EdDSA). ``none`` and HS* are refused
  before any key is looked at, and a JWK is never handed to PyJWT as an HMAC secret, so a
  token "signed" with the issuer's public key as an HMAC secret (key confusion) gets nowhere.
  The header's ``alg`` is believed only once it is on that list, fits the key's type (and
  curve), and equals the key's own ``alg`` when the JWK names one.
- **Type**: a header ``typ`` other than ``JWT`` or ``at+jwt`` (RFC 9068's access tokens;
  either with or without ``application/``, any case) is refused, so that another JWT the
  same issuer signs (a logout token, a DPoP proof, ``secevent+jwt``) is never taken for an
  access token (RFC 8725, 3.11). A token without ``typ`` is taken: many issuers omit it.
- **Time** (``exp``, ``nbf``, with leeway) is checked here against the injected clock, not
  by PyJWT, which reads the system clock; ``iat`` is informational and not checked.
- **Verified tokens** are remembered by SHA-256 (never the token itself) in a bounded LRU,
  so a repeat caller costs a hash and a dict lookup. A remembered verdict holds only while
  the key set that produced it is current, and ``exp``/``nbf`` are checked on every hit.

Failures carry fixed messages: never the token, a claim's value or PyJWT's own text.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
from jwt.algorithms import AllowedPublicKeys
from jwt.types import Options

from datamorph_gateway.auth.credentials import AuthError, Verified
from datamorph_gateway.auth.jwks import (
    FILE_CHECK_INTERVAL_S,
    FileKeys,
    KeySource,
    UrlKeys,
    is_algorithm,
)
from datamorph_gateway.auth.keys import sha256

__all__ = ["JwtVerifier"]

TOKEN_CACHE_SIZE = 4096

_REQUIRED_CLAIMS = ("exp", "sub", "iss", "aud")
_MESSAGES = {
    "malformed": "the bearer token is not a well-formed JWT",
    "too_large": "the bearer token is larger than the gateway accepts",
    "unsupported_algorithm": "the bearer token's signing algorithm is not accepted",
    "unknown_key": "the bearer token was signed with a key the gateway does not know",
    "bad_signature": "the bearer token's signature does not verify",
    "expired": "the bearer token has expired",
    "not_yet_valid": "the bearer token is not valid yet",
    "wrong_issuer": "the bearer token comes from an issuer the gateway does not trust",
    "wrong_audience": "the bearer token is not meant for this gateway",
    "wrong_type": "the bearer token is not an access token (its 'typ' header)",
}
# The header typ values an access token may carry (lowercased, "application/" removed).
_ACCESS_TOKEN_TYPES = frozenset({"jwt", "at+jwt"})


def _is_access_token_type(typ: object) -> bool:
    if typ is None:
        return True
    if not isinstance(typ, str):
        return False
    return typ.lower().removeprefix("application/") in _ACCESS_TOKEN_TYPES


def _refused(reason: str) -> AuthError:
    return AuthError(reason, _MESSAGES[reason])


def _missing(claim: str) -> AuthError:
    if claim not in _REQUIRED_CLAIMS:
        return AuthError("missing_claim", "the bearer token lacks a required claim")
    return AuthError("missing_claim", f"the bearer token has no '{claim}' claim")


@dataclass(frozen=True)
class _Verdict:
    verified: Verified
    expires_at: float
    not_before: float | None
    generation: int


class _VerdictCache:
    """Verified tokens by SHA-256, least recently used first out."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._entries: OrderedDict[bytes, _Verdict] = OrderedDict()

    def get(self, digest: bytes) -> _Verdict | None:
        # No lock on the hit path (every call with a token takes it): each OrderedDict
        # operation is atomic, and an entry another thread evicted in between is a miss.
        verdict = self._entries.get(digest)
        if verdict is not None:
            try:
                self._entries.move_to_end(digest)
            except KeyError:
                return None
        return verdict

    def put(self, digest: bytes, verdict: _Verdict) -> None:
        with self._lock:
            self._entries[digest] = verdict
            self._entries.move_to_end(digest)
            if len(self._entries) > self._size:
                self._entries.popitem(last=False)

    def drop(self, digest: bytes) -> None:
        with self._lock:
            self._entries.pop(digest, None)


def _time_claim(claims: dict[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _refused("malformed")
    try:
        number = float(value)
    except OverflowError:
        raise _refused("malformed") from None
    if not math.isfinite(number):
        raise _refused("malformed")
    return number


class JwtVerifier:
    """Verifies bearer JWTs from one issuer, for one audience (see the module's docstring)."""

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        jwks_file: str = "",
        jwks_url: str = "",
        leeway_s: float = 30.0,
        timeout_s: float = 5.0,
        max_token_bytes: int = 16384,
        clock: Callable[[], float] = time.time,
        jwks_check_interval_s: float = FILE_CHECK_INTERVAL_S,
    ) -> None:
        if bool(jwks_file) == bool(jwks_url):
            raise ValueError("give exactly one of jwks_file and jwks_url")
        if not issuer or not audience:
            raise ValueError("issuer and audience must not be empty")
        if leeway_s < 0 or timeout_s <= 0 or max_token_bytes <= 0:
            raise ValueError("leeway_s must be >= 0, timeout_s and max_token_bytes > 0")
        self._issuer = issuer
        self._audience = audience
        self._leeway_s = leeway_s
        self._max_token_bytes = max_token_bytes
        self._clock = clock
        self._keys: KeySource = (
            FileKeys(jwks_file, jwks_check_interval_s)
            if jwks_file
            else UrlKeys(jwks_url, timeout_s, clock)
        )
        self._cache = _VerdictCache(TOKEN_CACHE_SIZE)

    def verify(self, token: str) -> Verified:
        """Who the token proves the caller to be; ``AuthError`` if it proves nothing."""
        if len(token) > self._max_token_bytes:
            raise _refused("too_large")
        if not token.isascii():
            raise _refused("malformed")
        digest = sha256(token.encode("ascii")).digest()
        verdict = self._cache.get(digest)
        if verdict is not None:
            if verdict.generation == self._keys.current().generation:
                try:
                    self._check_time(verdict)
                except AuthError:
                    self._cache.drop(digest)
                    raise
                return verdict.verified
            self._cache.drop(digest)
        verdict = self._decode(token)
        self._check_time(verdict)
        self._cache.put(digest, verdict)
        return verdict.verified

    def _check_time(self, verdict: _Verdict) -> None:
        now = self._clock()
        if verdict.not_before is not None and now < verdict.not_before - self._leeway_s:
            raise _refused("not_yet_valid")
        if now >= verdict.expires_at + self._leeway_s:
            raise _refused("expired")

    def _decode(self, token: str) -> _Verdict:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise _refused("malformed") from None
        alg, kid = header.get("alg"), header.get("kid")
        if not is_algorithm(alg):
            raise _refused("unsupported_algorithm")
        if not _is_access_token_type(header.get("typ")):
            raise _refused("wrong_type")
        key_set = self._keys.current()
        named = key_set.named(kid)
        if not named and kid is not None:
            key_set = self._keys.refresh()
            named = key_set.named(kid)
        if not named:
            raise _refused("unknown_key")
        fitting = [key for key in named if key.fits(alg)]
        if not fitting:
            raise _refused("unsupported_algorithm")
        claims = self._claims(token, fitting[0].public, alg)
        subject = claims["sub"]
        if not subject:
            raise _missing("sub")
        expires_at = _time_claim(claims, "exp")
        if expires_at is None:
            raise _missing("exp")
        return _Verdict(
            Verified(kind="jwt", subject=subject, expires_at=expires_at),
            expires_at,
            _time_claim(claims, "nbf"),
            key_set.generation,
        )

    def _claims(self, token: str, key: AllowedPublicKeys, alg: str) -> dict[str, Any]:
        options: Options = {
            "require": list(_REQUIRED_CLAIMS),
            "verify_exp": False,
            "verify_nbf": False,
            "verify_iat": False,
            "enforce_minimum_key_length": True,
        }
        try:
            return jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self._audience,
                issuer=self._issuer,
                options=options,
            )
        except jwt.InvalidSignatureError:
            raise _refused("bad_signature") from None
        except jwt.MissingRequiredClaimError as error:
            raise _missing(error.claim) from None
        except jwt.InvalidIssuerError:
            raise _refused("wrong_issuer") from None
        except jwt.InvalidAudienceError:
            raise _refused("wrong_audience") from None
        except jwt.InvalidKeyError:
            raise _refused("unknown_key") from None
        except jwt.PyJWTError:
            raise _refused("malformed") from None
