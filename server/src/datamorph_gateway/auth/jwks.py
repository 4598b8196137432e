"""Where a JWT verifier's keys come from: a JWKS file or URL, loaded, cached and refreshed.

- **Keys** are picked by ``kid``; a token without one only when the set holds exactly one
  key. Keys meant for encryption, HMAC keys, RSA keys under 2048 bits and JWKs that carry
  private material are never used. Keys are built one by one with ``PyJWK`` (what
  ``PyJWKSet`` does) so that a JWK's own ``alg`` stays apart from the one PyJWT would guess;
  a key fits an algorithm when its type (and curve) does, and equals its own ``alg`` when
  the JWK names one.
- **A JWKS file** is re-read when its inode, size or times change, so keys rotate without a
  restart. Its ``stat`` is looked at most once per ``FILE_CHECK_INTERVAL_S`` (a ``stat`` per
  call released and re-took the GIL on every call: under load a JWT cost a tenth of a
  millisecond more than an API key), and at once when a token names an unknown ``kid`` or
  no key could be read yet; so a key taken out of the file stops verifying within that
  interval.
- **A JWKS URL** is fetched by ``PyJWKClient`` (timeout, no redirects, http(s) only) on the
  first token, never at start, and again when the keys are ``KEYS_MAX_AGE_S`` old or a
  token names an unknown ``kid``; but never more than once per ``REFETCH_INTERVAL_S``
  whatever the cause, so a flood of made-up kids costs the issuer at most one request per
  interval. One fetch runs at a time, and while a stale set is being refreshed other calls
  keep using it. PyJWKClient's own cache is not used: it drops keys without a ``kid``,
  holds its lock through a fetch, and times its cooldown on a clock of its own.
- A file or URL that stops giving usable keys leaves the last good keys in place (and a
  warning in the log); with none, tokens fail as ``jwks_unavailable``.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeGuard
from urllib.parse import urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from jwt.algorithms import AllowedPublicKeys

from datamorph_gateway import __version__
from datamorph_gateway.auth.credentials import AuthError
from datamorph_gateway.config import is_loopback

__all__ = [
    "ALGORITHMS",
    "KEYS_MAX_AGE_S",
    "REFETCH_INTERVAL_S",
    "FileKeys",
    "Key",
    "KeySet",
    "KeySource",
    "UrlKeys",
    "is_algorithm",
]

_log = logging.getLogger(__name__)

KEYS_MAX_AGE_S = 300.0
REFETCH_INTERVAL_S = 10.0
# How often a JWKS file's stat is looked at, at most (see the module).
FILE_CHECK_INTERVAL_S = 1.0
MIN_RSA_BITS = 2048

_RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
_EC_CURVES = {"ES256": "secp256r1", "ES384": "secp384r1", "ES512": "secp521r1"}
ALGORITHMS = frozenset({*_RSA_ALGORITHMS, *_EC_CURVES, "EdDSA"})

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


def _unavailable() -> AuthError:
    return AuthError("jwks_unavailable", "the gateway cannot check bearer tokens right now")


def _recent(now: float, then: float, window_s: float) -> bool:
    """``then`` lies within ``window_s`` before ``now`` (a clock that stepped back: no)."""
    return 0.0 <= now - then < window_s


def is_algorithm(alg: object) -> TypeGuard[str]:
    """One of the asymmetric algorithms a token may be signed with."""
    return isinstance(alg, str) and alg in ALGORITHMS


@dataclass(frozen=True)
class Key:
    """A usable public signing key of the set."""

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
class KeySet:
    """The usable keys of one load; ``generation`` changes whenever they do."""

    keys: tuple[Key, ...]
    generation: int

    def named(self, kid: str | None) -> list[Key]:
        if kid is None:
            return list(self.keys) if len(self.keys) == 1 else []
        return [key for key in self.keys if key.kid == kid]


def _signing_key(entry: object) -> Key | None:
    if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
        return None
    kid, alg = entry.get("kid"), entry.get("alg")
    if not isinstance(kid, str | None) or not (alg is None or is_algorithm(alg)):
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
    return Key(kid, alg if isinstance(alg, str) else None, key)


def _signing_keys(document: object) -> tuple[Key, ...]:
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise ValueError("not a JWK Set: no 'keys' list")
    keys = tuple(key for entry in entries if (key := _signing_key(entry)) is not None)
    if not keys:
        raise ValueError("no usable signing key in the JWK Set")
    return keys


class KeySource(Protocol):
    """The keys as they are now, and (for a token's unknown ``kid``) fetched again."""

    def current(self) -> KeySet: ...

    def refresh(self) -> KeySet: ...


class FileKeys:
    """A JWKS file, read again whenever ``stat`` says it changed (looked at most once per
    `check_interval_s`, unless asked to ``refresh``)."""

    def __init__(
        self,
        path: str,
        check_interval_s: float = FILE_CHECK_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._path = path
        self._check_interval_s = check_interval_s
        self._clock = clock
        self._next_check = -math.inf
        self._lock = threading.Lock()
        self._seen: tuple[int, ...] | None = ()  # () never looked; None missing
        self._raw = b""
        self._set: KeySet | None = None
        self._generations = itertools.count(1)

    def current(self) -> KeySet:
        if self._set is None or self._clock() >= self._next_check:
            return self.refresh()
        return self._set

    def refresh(self) -> KeySet:
        self._next_check = self._clock() + self._check_interval_s
        if self._stamp() != self._seen:
            with self._lock:
                stamp = self._stamp()
                if stamp != self._seen:
                    self._load()
                    self._seen = stamp
        if self._set is None:
            raise _unavailable()
        return self._set

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
        self._set = KeySet(keys, next(self._generations))


class UrlKeys:
    """A JWKS URL, fetched by PyJWKClient when needed and at a bounded rate."""

    def __init__(self, url: str, timeout_s: float, clock: Callable[[], float]) -> None:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if not (parts.scheme == "https" and host) and not (
            parts.scheme == "http" and is_loopback(host)
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
        self._set: KeySet | None = None
        self._fetched_at = -math.inf
        self._tried_at = -math.inf
        self._generations = itertools.count(1)

    def current(self) -> KeySet:
        key_set = self._set
        if key_set is not None and _recent(self._clock(), self._fetched_at, KEYS_MAX_AGE_S):
            return key_set
        return self._fetch(wait=key_set is None)

    def refresh(self) -> KeySet:
        return self._fetch(wait=True)

    def _fetch(self, *, wait: bool) -> KeySet:
        if self._lock.acquire(blocking=wait):
            try:
                if not _recent(self._clock(), self._tried_at, REFETCH_INTERVAL_S):
                    self._tried_at = self._clock()
                    self._download()
            finally:
                self._lock.release()
        if self._set is None:
            raise _unavailable()
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
            self._set = KeySet(keys, next(self._generations))
