"""OAuth 2 / OIDC access tokens (``authorization: Bearer <JWT>``), checked against a JWKS.

PyJWT checks signatures and the ``iss``, ``aud`` and required claims; this module decides
which key and which algorithm it may use, because that choice is where JWT verifiers break:

- **Algorithms** are asymmetric only (RS*, PS*, ES*, EdDSA). ``none`` and HS* are refused
  before any key is looked at, and a JWK is never handed to PyJWT as an HMAC secret, so a
  token "signed" with the issuer's public key as an HMAC secret (key confusion) gets nowhere.
  The header's ``alg`` is believed only once it is on that list, fits the key's type (and
  curve), and equals the key's own ``alg`` when the JWK names one.
- **Keys** are picked by ``kid``; a token without one only when the set holds exactly one
  key. Keys meant for encryption, HMAC keys, RSA keys under 2048 bits and JWKs that carry
  private material are never used. Keys are built one by one with ``PyJWK`` (what
  ``PyJWKSet`` does) so that a JWK's own ``alg`` stays apart from the one PyJWT would guess.
- **Time** (``exp``, ``nbf``, with leeway) is checked here against the injected clock, not
  by PyJWT, which reads the system clock; ``iat`` is informational and not checked.
- **A JWKS file** is re-read when its inode, size or times change (one ``stat`` per call),
  so keys rotate without a restart.
- **A JWKS URL** is fetched by ``PyJWKClient`` (timeout, no redirects, http(s) only) on the
  first token, never at start, and again when the keys are ``KEYS_MAX_AGE_S`` old or a
  token names an unknown ``kid``; but never more than once per ``REFETCH_INTERVAL_S``
  whatever the cause, so a flood of made-up kids costs the issuer at most one request per
  interval. One fetch runs at a time, and while a stale set is being refreshed other calls
  keep using it. PyJWKClient's own cache is not used: it drops keys without a ``kid``,
  holds its lock through a fetch, and times its cooldown on a clock of its own.
- A file or URL that stops giving usable keys leaves the last good keys in place (and a
  warning in the log); with none, tokens fail as ``jwks_unavailable``.
- **Verified tokens** are remembered by SHA-256 (never the token itself) in a bounded LRU,
  so a repeat caller costs a hash and a dict lookup. A remembered verdict holds only while
  the key set that produced it is current, and ``exp``/``nbf`` are checked on every hit.

Failures carry fixed messages: never the token, a claim's value or PyJWT's own text.
"""

from __future__ import annotations

import hashlib
import ipaddress
import itertools
import json
import logging
import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeGuard
from urllib.parse import urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from jwt.algorithms import AllowedPublicKeys
from jwt.types import Options

from datamorph_gateway import __version__
from datamorph_gateway.auth.credentials import AuthError, Verified

__all__ = ["ALGORITHMS", "KEYS_MAX_AGE_S", "REFETCH_INTERVAL_S", "JwtVerifier"]

_log = logging.getLogger(__name__)

KEYS_MAX_AGE_S = 300.0
REFETCH_INTERVAL_S = 10.0
TOKEN_CACHE_SIZE = 4096
MIN_RSA_BITS = 2048

_RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
_EC_CURVES = {"ES256": "secp256r1", "ES384": "secp384r1", "ES512": "secp521r1"}
ALGORITHMS = frozenset({*_RSA_ALGORITHMS, *_EC_CURVES, "EdDSA"})

_REQUIRED_CLAIMS = ("exp", "sub", "iss", "aud")
_PUBLIC_KEYS = (
    rsa.RSAPublicKey,
    ec.EllipticCurvePublicKey,
    ed25519.Ed25519PublicKey,
    ed448.Ed448PublicKey,
)
_PRIVATE_KEYS = (
    rsa.RSAPrivateKey,
    ec.EllipticCurvePrivateKey,
    ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
)
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
    "jwks_unavailable": "the gateway cannot check bearer tokens right now",
}


def _refused(reason: str) -> AuthError:
    return AuthError(reason, _MESSAGES[reason])


def _missing(claim: str) -> AuthError:
    if claim not in _REQUIRED_CLAIMS:
        return AuthError("missing_claim", "the bearer token lacks a required claim")
    return AuthError("missing_claim", f"the bearer token has no '{claim}' claim")


def _recent(now: float, then: float, window_s: float) -> bool:
    """``then`` lies within ``window_s`` before ``now`` (a clock that stepped back: no)."""
    return 0.0 <= now - then < window_s


def _is_algorithm(alg: object) -> TypeGuard[str]:
    return isinstance(alg, str) and alg in ALGORITHMS


@dataclass(frozen=True)
class _Key:
    kid: str | None
    alg: str | None  # the JWK's own "alg", when it names one
    public: AllowedPublicKeys

    def fits(self, alg: str) -> bool:
        if self.alg is not None and self.alg != alg:
            return False
        if alg in _RSA_ALGORITHMS:
            return isinstance(self.public, rsa.RSAPublicKey)
        if alg == "EdDSA":
            return isinstance(self.public, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey)
        return (
            isinstance(self.public, ec.EllipticCurvePublicKey)
            and self.public.curve.name == _EC_CURVES[alg]
        )


@dataclass(frozen=True)
class _KeySet:
    keys: tuple[_Key, ...]
    generation: int

    def named(self, kid: str | None) -> list[_Key]:
        if kid is None:
            return list(self.keys) if len(self.keys) == 1 else []
        return [key for key in self.keys if key.kid == kid]


def _signing_key(entry: object) -> _Key | None:
    if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
        return None
    kid, alg = entry.get("kid"), entry.get("alg")
    if not isinstance(kid, str | None) or not (alg is None or _is_algorithm(alg)):
        return None
    try:
        key = jwt.PyJWK(entry).key
    except (jwt.PyJWTError, ValueError, TypeError, KeyError):
        return None
    if isinstance(key, _PRIVATE_KEYS):
        _log.warning("JWKS key %r carries private key material; not used", kid)
        return None
    if not isinstance(key, _PUBLIC_KEYS):
        return None
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        _log.warning(
            "JWKS key %r is RSA-%d, under %d bits; not used", kid, key.key_size, MIN_RSA_BITS
        )
        return None
    return _Key(kid, alg if isinstance(alg, str) else None, key)


def _signing_keys(document: object) -> tuple[_Key, ...]:
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise ValueError("not a JWK Set: no 'keys' list")
    keys = tuple(key for entry in entries if (key := _signing_key(entry)) is not None)
    if not keys:
        raise ValueError("no usable signing key in the JWK Set")
    return keys


class _KeySource(Protocol):
    def current(self) -> _KeySet: ...

    def refresh(self) -> _KeySet: ...


class _FileKeys:
    """A JWKS file, read again whenever ``stat`` says it changed."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._seen: tuple[int, ...] | None = ()  # () never looked; None missing
        self._raw = b""
        self._set: _KeySet | None = None
        self._generations = itertools.count(1)

    def current(self) -> _KeySet:
        if self._stamp() != self._seen:
            with self._lock:
                stamp = self._stamp()
                if stamp != self._seen:
                    self._load()
                    self._seen = stamp
        if self._set is None:
            raise _refused("jwks_unavailable")
        return self._set

    refresh = current

    def _stamp(self) -> tuple[int, ...] | None:
        try:
            st = os.stat(self._path)
        except OSError:
            return None
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def _load(self) -> None:
        try:
            with open(self._path, "rb") as file:
                raw = file.read()
            if raw == self._raw:
                return
            keys = _signing_keys(json.loads(raw))
        except (OSError, ValueError, RecursionError) as error:
            kept = "keeping the keys read before" if self._set else "no key to check tokens with"
            _log.warning("cannot use the JWKS file %s (%s); %s", self._path, error, kept)
            return
        self._raw = raw
        self._set = _KeySet(keys, next(self._generations))


class _UrlKeys:
    """A JWKS URL, fetched by PyJWKClient when needed and at a bounded rate."""

    def __init__(self, url: str, timeout_s: float, clock: Callable[[], float]) -> None:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if not (parts.scheme == "https" and host) and not (
            parts.scheme == "http" and _is_loopback(host)
        ):
            raise ValueError("jwks_url must be https:// (http:// only on a loopback address)")
        self._label = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"
        self._client = jwt.PyJWKClient(
            url,
            cache_jwk_set=False,
            timeout=timeout_s,
            headers={"User-Agent": f"datamorph-gateway/{__version__}"},
        )
        self._clock = clock
        self._lock = threading.Lock()
        self._document: object = None
        self._set: _KeySet | None = None
        self._fetched_at = -math.inf
        self._tried_at = -math.inf
        self._generations = itertools.count(1)

    def current(self) -> _KeySet:
        key_set = self._set
        if key_set is not None and _recent(self._clock(), self._fetched_at, KEYS_MAX_AGE_S):
            return key_set
        return self._fetch(wait=key_set is None)

    def refresh(self) -> _KeySet:
        return self._fetch(wait=True)

    def _fetch(self, *, wait: bool) -> _KeySet:
        if self._lock.acquire(blocking=wait):
            try:
                if not _recent(self._clock(), self._tried_at, REFETCH_INTERVAL_S):
                    self._tried_at = self._clock()
                    self._download()
            finally:
                self._lock.release()
        if self._set is None:
            raise _refused("jwks_unavailable")
        return self._set

    def _download(self) -> None:
        try:
            document = self._client.fetch_data()
            keys = _signing_keys(document)
        except (jwt.PyJWTError, OSError, ValueError, RecursionError) as error:
            kept = "keeping the keys fetched before" if self._set else "no key to check tokens with"
            _log.warning("cannot fetch the JWKS from %s (%s); %s", self._label, error, kept)
            return
        self._fetched_at = self._clock()
        if document != self._document:
            self._document = document
            self._set = _KeySet(keys, next(self._generations))


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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
        with self._lock:
            verdict = self._entries.get(digest)
            if verdict is not None:
                self._entries.move_to_end(digest)
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
        self._keys: _KeySource = (
            _FileKeys(jwks_file) if jwks_file else _UrlKeys(jwks_url, timeout_s, clock)
        )
        self._cache = _VerdictCache(TOKEN_CACHE_SIZE)

    def verify(self, token: str) -> Verified:
        """Who the token proves the caller to be; ``AuthError`` if it proves nothing."""
        if len(token) > self._max_token_bytes:
            raise _refused("too_large")
        if not token.isascii():
            raise _refused("malformed")
        digest = hashlib.sha256(token.encode("ascii")).digest()
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
        if not _is_algorithm(alg):
            raise _refused("unsupported_algorithm")
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
