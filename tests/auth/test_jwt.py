"""Bearer JWTs: real keys (cryptography), real tokens (PyJWT), a real JWKS file and a real
HTTP JWKS endpoint on 127.0.0.1.

Time is a stand-in clock the test moves, so expiry, leeway and the refetch bounds are
exact rather than slept for.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.server
import json
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from datamorph_gateway.auth.credentials import AuthError, Verified
from datamorph_gateway.auth.jwks import KEYS_MAX_AGE_S, REFETCH_INTERVAL_S, FileKeys
from datamorph_gateway.auth.jwt import JwtVerifier

pytestmark = pytest.mark.timeout(60)

ISSUER = "https://idp.example.test/realms/datamorph"
AUDIENCE = "datamorph-gateway"
SUBJECT = "svc-orchestrator-7f3a"
NOW = 1_800_000_000.0
LEEWAY_S = 30.0


class Clock:
    """The verifier's clock, moved by hand."""

    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


@dataclass(frozen=True)
class Signer:
    """A private key, the ``kid`` its JWK carries and the algorithm it signs with."""

    kid: str
    alg: str
    private: Any

    def jwk(self, *, with_alg: bool = True) -> dict[str, Any]:
        public = self.private.public_key()
        if isinstance(public, rsa.RSAPublicKey):
            data = RSAAlgorithm.to_jwk(public, as_dict=True)
        elif isinstance(public, ec.EllipticCurvePublicKey):
            data = ECAlgorithm.to_jwk(public, as_dict=True)
        else:
            data = OKPAlgorithm.to_jwk(public, as_dict=True)
        data.update(kid=self.kid, use="sig")
        if with_alg:
            data["alg"] = self.alg
        return data

    def public_pem(self) -> bytes:
        return bytes(
            self.private.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def sign(
        self,
        *,
        alg: str | None = None,
        kid: str | None = "",
        typ: str | None = "JWT",
        **changes: Any,
    ) -> str:
        """A token with good claims, except for ``changes`` (None removes a claim)."""
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": SUBJECT,
            "iat": int(NOW),
            "exp": int(NOW) + 300,
        }
        claims.update(changes)
        claims = {name: value for name, value in claims.items() if value is not None}
        headers: dict[str, Any] = {"kid": self.kid if kid == "" else kid} if kid is not None else {}
        headers["typ"] = typ  # None: no typ header at all (PyJWS drops an empty one)
        payload = json.dumps(claims).encode()  # PyJWS: PyJWT would refuse odd claim types
        return jwt.api_jws.encode(payload, self.private, algorithm=alg or self.alg, headers=headers)


@dataclass(frozen=True)
class Keys:
    rsa: Signer
    rsa2: Signer
    ec: Signer
    ec384: Signer
    ed: Signer


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys(
        rsa=Signer("rsa-1", "RS256", rsa.generate_private_key(65537, 2048)),
        rsa2=Signer("rsa-2", "RS256", rsa.generate_private_key(65537, 2048)),
        ec=Signer("ec-1", "ES256", ec.generate_private_key(ec.SECP256R1())),
        ec384=Signer("ec-2", "ES384", ec.generate_private_key(ec.SECP384R1())),
        ed=Signer("ed-1", "EdDSA", ed25519.Ed25519PrivateKey.generate()),
    )


def jwks(*jwk: dict[str, Any]) -> dict[str, Any]:
    return {"keys": list(jwk)}


def write_jwks(path: Path, document: dict[str, Any]) -> None:
    """Replace the file atomically, as a secret or config-map mount does."""
    staged = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    staged.write_text(json.dumps(document))
    os.replace(staged, path)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def jwks_path(tmp_path: Path, keys: Keys) -> Path:
    path = tmp_path / "jwks.json"
    write_jwks(
        path,
        jwks(
            keys.rsa.jwk(),
            keys.ec.jwk(),
            keys.ec384.jwk(),
            keys.ed.jwk(),
            keys.rsa2.jwk(with_alg=False),
        ),
    )
    return path


@pytest.fixture
def verifier(jwks_path: Path, clock: Clock) -> JwtVerifier:
    """A verifier that looks at the JWKS file on every call (the file tests rewrite it)."""
    return JwtVerifier(
        issuer=ISSUER,
        audience=AUDIENCE,
        jwks_file=str(jwks_path),
        leeway_s=LEEWAY_S,
        clock=clock,
        jwks_check_interval_s=0,
    )


def refused(verifier: JwtVerifier, token: str, reason: str) -> AuthError:
    with pytest.raises(AuthError) as caught:
        verifier.verify(token)
    error = caught.value
    assert (error.reason, str(error)) == (reason, error.message)
    assert error.message.startswith(("the bearer token", "the gateway"))
    for secret in (token, *token.split(".")[1:], SUBJECT, ISSUER):
        if len(secret) > 3:
            assert secret not in error.message
    return error


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_made(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    return ".".join(
        [b64(json.dumps(header).encode()), b64(json.dumps(claims).encode()), b64(signature)]
    )


GOOD_CLAIMS = {"iss": ISSUER, "aud": AUDIENCE, "sub": SUBJECT, "exp": int(NOW) + 300}


# -- good tokens ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("signer", "alg"),
    [("rsa", "RS256"), ("ec", "ES256"), ("ec384", "ES384"), ("ed", "EdDSA"), ("rsa2", "PS384")],
)
def test_a_good_token_names_its_subject(
    verifier: JwtVerifier, keys: Keys, signer: str, alg: str
) -> None:
    token = getattr(keys, signer).sign(alg=alg)
    expected = Verified(kind="jwt", subject=SUBJECT, expires_at=NOW + 300)
    assert verifier.verify(token) == expected
    assert verifier.verify(token) == expected  # again, from the cache


def test_an_audience_list_that_holds_ours_is_enough(verifier: JwtVerifier, keys: Keys) -> None:
    token = keys.rsa.sign(aud=["another-api", AUDIENCE])
    assert verifier.verify(token).subject == SUBJECT


# -- time ------------------------------------------------------------------------------


def test_an_expired_token_is_refused(verifier: JwtVerifier, keys: Keys) -> None:
    refused(verifier, keys.rsa.sign(exp=int(NOW) - 31), "expired")


def test_a_token_not_valid_yet_is_refused(verifier: JwtVerifier, keys: Keys) -> None:
    refused(verifier, keys.ec.sign(nbf=int(NOW) + 31), "not_yet_valid")


def test_leeway_forgives_skew_on_both_sides(verifier: JwtVerifier, keys: Keys) -> None:
    assert verifier.verify(keys.rsa.sign(exp=int(NOW) - 29)).expires_at == NOW - 29
    assert verifier.verify(keys.rsa.sign(nbf=int(NOW) + 29)).subject == SUBJECT


def test_without_leeway_the_edges_are_exact(jwks_path: Path, keys: Keys, clock: Clock) -> None:
    strict = JwtVerifier(
        issuer=ISSUER, audience=AUDIENCE, jwks_file=str(jwks_path), leeway_s=0, clock=clock
    )
    refused(strict, keys.rsa.sign(exp=int(NOW)), "expired")
    refused(strict, keys.rsa.sign(nbf=int(NOW) + 1), "not_yet_valid")
    assert strict.verify(keys.rsa.sign(exp=int(NOW) + 1, nbf=int(NOW))).subject == SUBJECT


def test_a_remembered_token_still_expires(verifier: JwtVerifier, keys: Keys, clock: Clock) -> None:
    token = keys.rsa.sign()
    assert verifier.verify(token).subject == SUBJECT
    clock.now = NOW + 300 + LEEWAY_S - 1
    assert verifier.verify(token).subject == SUBJECT
    clock.now = NOW + 300 + LEEWAY_S
    refused(verifier, token, "expired")
    refused(verifier, token, "expired")


def test_a_token_refused_as_early_is_good_once_its_time_comes(
    verifier: JwtVerifier, keys: Keys, clock: Clock
) -> None:
    token = keys.ec.sign(nbf=int(NOW) + 60)
    refused(verifier, token, "not_yet_valid")
    clock.now = NOW + 60 - LEEWAY_S
    assert verifier.verify(token).subject == SUBJECT


# -- claims ----------------------------------------------------------------------------


@pytest.mark.parametrize("aud", ["another-api", ["another-api", "third"], 42])
def test_a_token_for_another_audience_is_refused(
    verifier: JwtVerifier, keys: Keys, aud: object
) -> None:
    refused(verifier, keys.rsa.sign(aud=aud), "wrong_audience")


@pytest.mark.parametrize("iss", ["https://evil.example.test/", ISSUER + "/", 7])
def test_a_token_from_another_issuer_is_refused(
    verifier: JwtVerifier, keys: Keys, iss: object
) -> None:
    refused(verifier, keys.rsa.sign(iss=iss), "wrong_issuer")


@pytest.mark.parametrize("claim", ["sub", "exp", "iss", "aud"])
def test_a_token_without_a_required_claim_is_refused(
    verifier: JwtVerifier, keys: Keys, claim: str
) -> None:
    error = refused(verifier, keys.ec.sign(**{claim: None}), "missing_claim")
    assert f"'{claim}'" in error.message


def test_an_empty_subject_is_no_subject(verifier: JwtVerifier, keys: Keys) -> None:
    refused(verifier, keys.rsa.sign(sub=""), "missing_claim")


@pytest.mark.parametrize(
    "changes",
    [{"sub": 12345}, {"exp": "tomorrow"}, {"exp": True}, {"exp": 10**400}, {"nbf": "now"}],
)
def test_claims_of_the_wrong_type_are_malformed(
    verifier: JwtVerifier, keys: Keys, changes: dict[str, Any]
) -> None:
    refused(verifier, keys.rsa.sign(**changes), "malformed")


def test_an_infinite_expiry_is_malformed(verifier: JwtVerifier, keys: Keys) -> None:
    refused(verifier, keys.rsa.sign(exp=float("inf")), "malformed")


# -- algorithms and keys ---------------------------------------------------------------


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE", ""])
def test_an_unsigned_token_is_refused(verifier: JwtVerifier, alg: str) -> None:
    token = hand_made({"alg": alg, "typ": "JWT", "kid": "rsa-1"}, GOOD_CLAIMS)
    refused(verifier, token, "unsupported_algorithm")


def test_a_token_without_alg_is_refused(verifier: JwtVerifier) -> None:
    refused(verifier, hand_made({"kid": "rsa-1"}, GOOD_CLAIMS, b"x"), "unsupported_algorithm")
    refused(verifier, hand_made({"alg": ["RS256"]}, GOOD_CLAIMS, b"x"), "unsupported_algorithm")


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
def test_the_public_key_as_an_hmac_secret_is_refused(
    verifier: JwtVerifier, keys: Keys, alg: str
) -> None:
    """Key confusion: HMAC over the token with the issuer's public key (PEM or JWK text)."""
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    for secret in (keys.rsa.public_pem(), json.dumps(keys.rsa.jwk()).encode()):
        header = b64(json.dumps({"alg": alg, "typ": "JWT", "kid": "rsa-1"}).encode())
        body = b64(json.dumps(GOOD_CLAIMS).encode())
        mac = hmac.new(secret, f"{header}.{body}".encode(), digest).digest()
        refused(verifier, f"{header}.{body}.{b64(mac)}", "unsupported_algorithm")


def test_an_hmac_key_in_the_jwks_is_never_used(tmp_path: Path, clock: Clock, keys: Keys) -> None:
    secret = b"0123456789abcdef0123456789abcdef"
    path = tmp_path / "jwks.json"
    octet = {"kty": "oct", "k": b64(secret), "kid": "shared", "alg": "HS256"}
    write_jwks(path, jwks(octet, keys.rsa.jwk()))
    verifier = JwtVerifier(issuer=ISSUER, audience=AUDIENCE, jwks_file=str(path), clock=clock)
    hs = jwt.encode(GOOD_CLAIMS, secret, algorithm="HS256", headers={"kid": "shared"})
    refused(verifier, hs, "unsupported_algorithm")
    refused(verifier, keys.rsa.sign(kid="shared"), "unknown_key")
    assert verifier.verify(keys.rsa.sign()).subject == SUBJECT


def test_a_tampered_token_is_refused(verifier: JwtVerifier, keys: Keys) -> None:
    token = keys.rsa.sign()
    header, body, signature = token.split(".")
    middle = len(body) // 2
    flipped = body[:middle] + ("A" if body[middle] != "A" else "B") + body[middle + 1 :]
    refused(verifier, f"{header}.{flipped}.{signature}", "bad_signature")
    forged = b64(json.dumps({**GOOD_CLAIMS, "sub": "admin"}).encode())
    refused(verifier, f"{header}.{forged}.{signature}", "bad_signature")
    first = "B" if signature[0] == "A" else "A"
    refused(verifier, f"{header}.{body}.{first}{signature[1:]}", "bad_signature")


def test_a_signature_by_another_key_under_a_known_kid_is_refused(
    verifier: JwtVerifier, keys: Keys
) -> None:
    refused(verifier, keys.rsa2.sign(kid="rsa-1"), "bad_signature")
    ec_other = Signer("ec-1", "ES256", ec.generate_private_key(ec.SECP256R1()))
    refused(verifier, ec_other.sign(), "bad_signature")


def test_a_short_ec_signature_is_a_bad_signature(verifier: JwtVerifier, keys: Keys) -> None:
    header, body, signature = keys.ec.sign().split(".")
    refused(verifier, f"{header}.{body}.{signature[:20]}", "bad_signature")


def test_an_unknown_kid_is_refused(verifier: JwtVerifier, keys: Keys) -> None:
    refused(verifier, keys.rsa.sign(kid="not-in-the-set"), "unknown_key")


def test_a_token_without_kid_needs_a_single_key(
    tmp_path: Path, verifier: JwtVerifier, keys: Keys, clock: Clock
) -> None:
    refused(verifier, keys.rsa.sign(kid=None), "unknown_key")
    path = tmp_path / "one.json"
    write_jwks(path, jwks(keys.rsa.jwk()))
    single = JwtVerifier(issuer=ISSUER, audience=AUDIENCE, jwks_file=str(path), clock=clock)
    assert single.verify(keys.rsa.sign(kid=None)).subject == SUBJECT


def test_the_algorithm_must_fit_the_key(verifier: JwtVerifier, keys: Keys) -> None:
    refused(verifier, keys.rsa.sign(alg="PS256"), "unsupported_algorithm")  # JWK says RS256
    refused(verifier, keys.rsa.sign(alg="RS512"), "unsupported_algorithm")
    refused(verifier, keys.ec384.sign(kid="ec-1"), "unsupported_algorithm")  # P-384 vs P-256
    refused(verifier, keys.ec.sign(kid="rsa-2"), "unsupported_algorithm")  # EC alg, RSA key
    refused(verifier, keys.rsa2.sign(kid="ed-1"), "unsupported_algorithm")
    assert verifier.verify(keys.rsa2.sign(alg="PS256")).subject == SUBJECT  # JWK has no alg


def test_unusable_jwks_entries_are_skipped(tmp_path: Path, keys: Keys, clock: Clock) -> None:
    path = tmp_path / "jwks.json"
    junk: list[Any] = [
        5,
        "key",
        {"kty": "RSA"},
        {**keys.rsa2.jwk(), "alg": ["RS256"]},
        {**keys.rsa2.jwk(), "kid": 5},
        {**keys.ec.jwk(), "use": "enc", "kid": "enc-1"},
        {**keys.rsa2.jwk(), "alg": "RSA-OAEP", "kid": "oaep"},
        {**keys.ec.jwk(), "crv": "P-999", "kid": "odd-curve"},
    ]
    write_jwks(path, {"keys": [*junk, keys.rsa.jwk()]})
    verifier = JwtVerifier(issuer=ISSUER, audience=AUDIENCE, jwks_file=str(path), clock=clock)
    assert verifier.verify(keys.rsa.sign()).subject == SUBJECT
    refused(verifier, keys.ec.sign(kid="enc-1"), "unknown_key")
    refused(verifier, keys.rsa2.sign(kid="oaep"), "unknown_key")
    refused(verifier, keys.rsa2.sign(kid=None), "bad_signature")  # one usable key: rsa-1


def test_a_jwk_with_private_material_is_not_used(tmp_path: Path, keys: Keys, clock: Clock) -> None:
    path = tmp_path / "jwks.json"
    leaked = RSAAlgorithm.to_jwk(keys.rsa.private, as_dict=True)
    leaked.update(kid="rsa-1", alg="RS256")
    write_jwks(path, jwks(leaked))
    verifier = JwtVerifier(issuer=ISSUER, audience=AUDIENCE, jwks_file=str(path), clock=clock)
    refused(verifier, keys.rsa.sign(), "jwks_unavailable")


# -- size and garbage ------------------------------------------------------------------


def test_a_token_over_the_size_limit_is_refused_before_parsing(
    verifier: JwtVerifier, keys: Keys
) -> None:
    big = keys.rsa.sign(padding="x" * 64 * 1024)
    assert len(big) > 64 * 1024
    refused(verifier, big, "too_large")
    refused(verifier, "\u00e9" * (64 * 1024), "too_large")


def test_the_size_limit_is_inclusive(jwks_path: Path, keys: Keys, clock: Clock) -> None:
    token = keys.rsa.sign()
    at_limit = JwtVerifier(
        issuer=ISSUER,
        audience=AUDIENCE,
        jwks_file=str(jwks_path),
        max_token_bytes=len(token),
        clock=clock,
    )
    assert at_limit.verify(token).subject == SUBJECT
    refused(at_limit, token + "A", "too_large")


@pytest.mark.parametrize(
    "token",
    [
        "",
        " ",
        "\t\n",
        "a.b",
        "a.b.c",
        "...",
        "Bearer x",
        "Bearer eyJhbGciOiJSUzI1NiJ9.e30.c2ln",
        "\u00e9.\u00e9.\u00e9",
        "\x00",
        "eyJhbGciOiJSUzI1NiJ9.!!!!.c2ln",
        "WzFd.e30.c2ln",  # header is [1]
        "eyJhbGciOiJSUzI1NiIsImtpZCI6NX0.e30.c2ln",  # kid is 5
    ],
)
def test_garbage_is_malformed(verifier: JwtVerifier, token: str) -> None:
    refused(verifier, token, "malformed")


def test_whitespace_around_a_good_token_is_malformed(verifier: JwtVerifier, keys: Keys) -> None:
    token = keys.rsa.sign()
    refused(verifier, f" {token}", "malformed")
    refused(verifier, f"{token}\n", "malformed")
    refused(verifier, f"Bearer {token}", "malformed")


# -- the JWKS file ---------------------------------------------------------------------


def test_a_rotated_jwks_file_is_used_without_a_new_verifier(
    jwks_path: Path, verifier: JwtVerifier, keys: Keys
) -> None:
    old, new = keys.rsa.sign(), keys.rsa2.sign()
    assert verifier.verify(old).subject == SUBJECT
    write_jwks(jwks_path, jwks(keys.ec.jwk()))
    refused(verifier, old, "unknown_key")  # remembered, but its key is gone
    refused(verifier, new, "unknown_key")
    write_jwks(jwks_path, jwks(keys.rsa2.jwk()))
    assert verifier.verify(new).subject == SUBJECT
    refused(verifier, old, "unknown_key")


def test_a_jwks_file_rewritten_in_place_is_read_again(
    jwks_path: Path, verifier: JwtVerifier, keys: Keys
) -> None:
    assert verifier.verify(keys.rsa.sign()).subject == SUBJECT
    jwks_path.write_text(json.dumps(jwks(keys.rsa2.jwk())))
    refused(verifier, keys.rsa.sign(), "unknown_key")
    assert verifier.verify(keys.rsa2.sign()).subject == SUBJECT


def test_the_jwks_file_is_looked_at_once_per_interval_or_for_an_unknown_kid(
    jwks_path: Path, keys: Keys
) -> None:
    now = [0.0]
    source = FileKeys(str(jwks_path), check_interval_s=1.0, clock=lambda: now[0])
    stats = 0
    real_stamp = source._stamp

    def counted() -> tuple[int, ...] | None:
        nonlocal stats
        stats += 1
        return real_stamp()

    source._stamp = counted  # type: ignore[method-assign]
    first = source.current()
    looked = stats
    for _ in range(100):
        assert source.current() is first
    assert stats == looked  # no stat within the interval
    write_jwks(jwks_path, jwks(keys.rsa2.jwk()))
    assert source.current() is first  # not seen yet
    now[0] = 1.0
    rotated = source.current()
    assert rotated.generation > first.generation
    write_jwks(jwks_path, jwks(keys.ec.jwk()))
    assert source.refresh().generation > rotated.generation  # an unknown kid: at once


def test_a_broken_jwks_file_keeps_the_keys_read_before(
    jwks_path: Path, verifier: JwtVerifier, keys: Keys
) -> None:
    token = keys.rsa.sign()
    assert verifier.verify(token).subject == SUBJECT
    jwks_path.write_text('{"keys": [')
    assert verifier.verify(token).subject == SUBJECT
    assert verifier.verify(keys.ec.sign()).subject == SUBJECT
    jwks_path.unlink()
    assert verifier.verify(token).subject == SUBJECT
    write_jwks(jwks_path, jwks(keys.rsa2.jwk()))
    refused(verifier, token, "unknown_key")


def test_a_missing_jwks_file_fails_until_it_appears(
    tmp_path: Path, keys: Keys, clock: Clock
) -> None:
    path = tmp_path / "later.json"
    verifier = JwtVerifier(issuer=ISSUER, audience=AUDIENCE, jwks_file=str(path), clock=clock)
    refused(verifier, keys.rsa.sign(), "jwks_unavailable")
    path.write_text('{"keys": []}')
    refused(verifier, keys.rsa.sign(), "jwks_unavailable")
    write_jwks(path, jwks(keys.rsa.jwk()))
    assert verifier.verify(keys.rsa.sign()).subject == SUBJECT


def test_many_threads_get_the_same_answers(verifier: JwtVerifier, keys: Keys) -> None:
    cases = [
        (keys.rsa.sign(), None),
        (keys.ec.sign(), None),
        (keys.ed.sign(sub="another"), None),
        (keys.rsa.sign(exp=int(NOW) - 100), "expired"),
        (keys.rsa.sign(kid="nope"), "unknown_key"),
        (keys.rsa2.sign(kid="rsa-1"), "bad_signature"),
        ("a.b", "malformed"),
    ]

    def outcome(token: str) -> str | None:
        try:
            verifier.verify(token)
        except AuthError as error:
            return error.reason
        return None

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(outcome, [token for token, _ in cases] * 100))
    assert results == [reason for _, reason in cases] * 100


# -- the JWKS URL ----------------------------------------------------------------------


@dataclass
class JwksServer:
    """A JWKS endpoint on 127.0.0.1 that counts the requests it answers."""

    document: dict[str, Any]
    status: int = 200
    body: bytes | None = None
    delay: threading.Event | None = None
    requests: int = 0
    port: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/.well-known/jwks.json"


@pytest.fixture
def jwks_server(keys: Keys) -> Iterator[JwksServer]:
    state = JwksServer(jwks(keys.rsa.jwk(), keys.ec.jwk()))

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            with state.lock:
                state.requests += 1
            if state.delay is not None:
                state.delay.wait(10)
            body = state.body if state.body is not None else json.dumps(state.document).encode()
            self.send_response(state.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def url_verifier(url: str, clock: Clock, **options: Any) -> JwtVerifier:
    return JwtVerifier(issuer=ISSUER, audience=AUDIENCE, jwks_url=url, clock=clock, **options)


def test_keys_are_fetched_on_first_use_and_kept(
    jwks_server: JwksServer, keys: Keys, clock: Clock
) -> None:
    verifier = url_verifier(jwks_server.url, clock)
    assert jwks_server.requests == 0
    assert verifier.verify(keys.rsa.sign()).subject == SUBJECT
    assert verifier.verify(keys.ec.sign()).subject == SUBJECT
    assert verifier.verify(keys.rsa.sign(sub="other")).subject == "other"
    assert jwks_server.requests == 1


def test_bad_tokens_fetch_nothing(jwks_server: JwksServer, keys: Keys, clock: Clock) -> None:
    verifier = url_verifier(jwks_server.url, clock)
    refused(verifier, "x" * (64 * 1024), "too_large")
    refused(verifier, "a.b", "malformed")
    refused(
        verifier, hand_made({"alg": "none", "kid": "new"}, GOOD_CLAIMS), "unsupported_algorithm"
    )
    assert jwks_server.requests == 0


def test_an_unknown_kid_fetches_the_keys_again_once(
    jwks_server: JwksServer, keys: Keys, clock: Clock
) -> None:
    verifier = url_verifier(jwks_server.url, clock)
    assert verifier.verify(keys.rsa.sign()).subject == SUBJECT
    jwks_server.document = jwks(keys.rsa2.jwk(), keys.ec.jwk())
    clock.now += REFETCH_INTERVAL_S
    assert verifier.verify(keys.rsa2.sign()).subject == SUBJECT
    assert jwks_server.requests == 2
    refused(verifier, keys.rsa.sign(), "unknown_key")  # gone from the set
    assert jwks_server.requests == 2
    assert verifier.verify(keys.ec.sign()).subject == SUBJECT
    assert jwks_server.requests == 2


def test_a_flood_of_unknown_kids_fetches_at_most_once_per_interval(
    jwks_server: JwksServer, keys: Keys, clock: Clock
) -> None:
    verifier = url_verifier(jwks_server.url, clock)
    assert verifier.verify(keys.rsa.sign()).subject == SUBJECT
    assert jwks_server.requests == 1

    def flood() -> None:
        tokens = [keys.rsa.sign(kid=uuid.uuid4().hex) for _ in range(200)]
        with ThreadPoolExecutor(16) as pool:
            reasons = set(pool.map(lambda t: refused(verifier, t, "unknown_key").reason, tokens))
        assert reasons == {"unknown_key"}

    flood()
    assert jwks_server.requests == 1  # the first fetch was just now
    clock.now += REFETCH_INTERVAL_S - 0.5
    flood()
    assert jwks_server.requests == 1
    clock.now += 0.5
    flood()
    assert jwks_server.requests == 2
    clock.now += REFETCH_INTERVAL_S
    flood()
    assert jwks_server.requests == 3
    assert verifier.verify(keys.rsa.sign()).subject == SUBJECT


def test_threads_waiting_for_the_first_fetch_share_it(
    jwks_server: JwksServer, keys: Keys, clock: Clock
) -> None:
    verifier = url_verifier(jwks_server.url, clock)
    jwks_server.delay = threading.Event()
    tokens = [keys.rsa.sign(sub=f"caller-{n}") for n in range(32)]
    with ThreadPoolExecutor(16) as pool:
        futures = [pool.submit(verifier.verify, token) for token in tokens]
        threading.Timer(0.2, jwks_server.delay.set).start()
        subjects = [future.result(timeout=20).subject for future in futures]
    assert subjects == [f"caller-{n}" for n in range(32)]
    assert jwks_server.requests == 1


def test_old_keys_are_fetched_again_and_kept_when_the_issuer_is_down(
    jwks_server: JwksServer, keys: Keys, clock: Clock
) -> None:
    verifier = url_verifier(jwks_server.url, clock)
    token = keys.rsa.sign(exp=int(NOW) + 3600)
    assert verifier.verify(token).subject == SUBJECT
    clock.now += KEYS_MAX_AGE_S
    jwks_server.status = 500
    assert verifier.verify(token).subject == SUBJECT
    assert jwks_server.requests == 2
    assert verifier.verify(token).subject == SUBJECT
    assert jwks_server.requests == 2  # no second try within the interval
    jwks_server.status = 200
    jwks_server.document = jwks(keys.ec.jwk())
    clock.now += REFETCH_INTERVAL_S
    refused(verifier, token, "unknown_key")  # remembered, but the new set dropped its key
    assert jwks_server.requests == 3


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b'{"keys": []}', b'{"keys": 5}'])
def test_an_endpoint_without_usable_keys_is_unavailable(
    jwks_server: JwksServer, keys: Keys, clock: Clock, body: bytes
) -> None:
    jwks_server.body = body
    verifier = url_verifier(jwks_server.url, clock)
    refused(verifier, keys.rsa.sign(), "jwks_unavailable")


def test_a_failing_endpoint_is_retried_at_a_bounded_rate(
    jwks_server: JwksServer, keys: Keys, clock: Clock
) -> None:
    jwks_server.status = 503
    verifier = url_verifier(jwks_server.url, clock)
    for _ in range(20):
        refused(verifier, keys.rsa.sign(), "jwks_unavailable")
    assert jwks_server.requests == 1
    jwks_server.status = 200
    clock.now += REFETCH_INTERVAL_S
    assert verifier.verify(keys.rsa.sign()).subject == SUBJECT
    assert jwks_server.requests == 2


def test_a_closed_port_is_unavailable(keys: Keys, clock: Clock) -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    verifier = url_verifier(f"http://127.0.0.1:{port}/jwks", clock)
    refused(verifier, keys.rsa.sign(), "jwks_unavailable")


def test_a_silent_endpoint_times_out(keys: Keys, clock: Clock) -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        verifier = url_verifier(f"http://127.0.0.1:{port}/jwks", clock, timeout_s=0.3)
        refused(verifier, keys.rsa.sign(), "jwks_unavailable")


# -- configuration ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "sources",
    [
        {},
        {"jwks_file": "/etc/jwks.json", "jwks_url": "https://idp.example.test/jwks"},
        {"jwks_url": "ftp://idp.example.test/jwks"},
        {"jwks_url": "file:///etc/jwks.json"},
        {"jwks_url": "http://idp.example.test/jwks"},
        {"jwks_url": "https:///jwks"},
    ],
)
def test_bad_sources_are_refused_at_construction(sources: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="jwks"):
        JwtVerifier(issuer=ISSUER, audience=AUDIENCE, **sources)


@pytest.mark.parametrize(
    "options",
    [{"issuer": ""}, {"audience": ""}, {"leeway_s": -1}, {"timeout_s": 0}, {"max_token_bytes": 0}],
)
def test_bad_settings_are_refused_at_construction(options: dict[str, Any]) -> None:
    settings: dict[str, Any] = {"issuer": ISSUER, "audience": AUDIENCE, "jwks_file": "/x.json"}
    with pytest.raises(ValueError, match="must"):
        JwtVerifier(**{**settings, **options})


def test_loopback_http_is_allowed() -> None:
    for url in ("http://127.0.0.1:1/jwks", "http://localhost:1/jwks", "http://[::1]:1/jwks"):
        JwtVerifier(issuer=ISSUER, audience=AUDIENCE, jwks_url=url)


@pytest.mark.parametrize("typ", [None, "JWT", "jwt", "at+jwt", "AT+JWT", "application/at+jwt"])
def test_an_access_token_type_or_none_is_taken(
    verifier: JwtVerifier, keys: Keys, typ: str | None
) -> None:
    assert verifier.verify(keys.rsa.sign(typ=typ)).subject == SUBJECT


@pytest.mark.parametrize(
    "typ", ["logout+jwt", "dpop+jwt", "secevent+jwt", "application/jose", "JWS", "at+jwt ", 1]
)
def test_another_kind_of_jwt_from_the_same_issuer_is_refused(
    verifier: JwtVerifier, keys: Keys, typ: Any
) -> None:
    """A logout token, a DPoP proof or a security event the issuer signed with the same key
    is not an access token (RFC 8725, 3.11: explicit typing), even with good claims."""
    error = refused(verifier, keys.rsa.sign(typ=typ), "wrong_type")
    assert error.message == "the bearer token is not an access token (its 'typ' header)"
