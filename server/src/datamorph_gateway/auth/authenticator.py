"""Authentication and authorization of every call, the same on the gRPC port and through Envoy.

Envoy passes a caller's headers through as gRPC metadata, so one check here covers REST
and gRPC, and a Lambda that calls the gRPC port directly meets the same check.

A caller proves who it is with one of (the first one present decides; a credential that
is present and wrong is never passed over for another):

- ``x-api-key``: looked up by its SHA-256 (``keys``);
- ``authorization: Bearer <jwt>``: verified against the policy's JWKS (``jwt``);
- ``x-datamorph-aws-iam``: a presigned ``sts:GetCallerIdentity`` (``aws_iam``);
- a client certificate verified by mTLS (``identity``), matched against ``tls_subjects``.

No credential, or one that matches no principal: ``UNAUTHENTICATED``, with the same
message for a key that is unknown as for no key at all. A principal calling what its
``allow`` list lacks: ``PERMISSION_DENIED`` naming the RPC. ``Health`` (and the standard
health and reflection services, which never reach here) stay open. Failures are logged
with their reason and counted (``failures``), never with the credential.

Without a policy every call is ``anonymous`` and allowed: that is only permitted while
every listener binds a loopback address (``check_exposure``).

The policy is re-read on ``reload()`` (SIGHUP) and when its file changes (checked at
most once a second, on calls); a bad new policy is refused with a log line and the old
one stays in force. Per-principal rate limits are token buckets of this process.
"""

from __future__ import annotations

import collections
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import grpc

from datamorph_client.aws_iam import AWS_IAM_HEADER
from datamorph_gateway.auth.credentials import AuthError, Verified
from datamorph_gateway.auth.keys import key_digest
from datamorph_gateway.auth.policy import (
    ANONYMOUS,
    OPEN_RPCS,
    Policy,
    Principal,
    load_policy,
)
from datamorph_gateway.config import AuthSettings, AwsSettings, is_loopback
from datamorph_gateway.errors import (
    ConfigError,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
)
from datamorph_gateway.identity import ClientIdentities
from datamorph_gateway.observability import metrics

__all__ = ["AWS_IAM_HEADER", "Authenticator", "check_exposure"]

log = logging.getLogger("datamorph_gateway.auth")

API_KEY_HEADER = "x-api-key"
AUTHORIZATION_HEADER = "authorization"
_CREDENTIAL_HEADERS = frozenset({API_KEY_HEADER, AUTHORIZATION_HEADER, AWS_IAM_HEADER})
# Larger credentials are refused before any work (an authorization header of 64 KiB...).
MAX_CREDENTIAL_BYTES = 16 * 1024
_RELOAD_CHECK_S = 1.0
_NO_CREDENTIALS = (
    "no valid credentials: send x-api-key, authorization: Bearer <token>, "
    "x-datamorph-aws-iam, or a client certificate this gateway's policy names"
)


class _Verifier(Protocol):
    """What the JWT and IAM verifiers offer."""

    def verify(self, token: str) -> Verified: ...


@dataclass
class _Bucket:
    tokens: float
    updated: float


@dataclass(frozen=True)
class _State:
    policy: Policy
    jwt: _Verifier | None
    iam: _Verifier | None
    # The policy's key hashes as raw digests: no hex text to build per call.
    by_key_digest: dict[bytes, Principal]


def check_exposure(settings: AuthSettings, hosts: dict[str, str]) -> None:
    """Refuse to serve without a policy on a non-loopback address (unless told to).

    ``hosts`` maps each listener's setting name to the address it binds.
    """
    if settings.auth_policy_file or settings.auth_policy:
        return
    exposed = {key: host for key, host in hosts.items() if not is_loopback(host)}
    if exposed and not settings.auth_allow_anonymous:
        where = ", ".join(f"{key}={host}" for key, host in exposed.items())
        raise ConfigError(
            f"{where} is reachable from other machines but no AUTH_POLICY_FILE is set: "
            "anyone could run SQL; set AUTH_POLICY_FILE (docs/security.md) or "
            "AUTH_ALLOW_ANONYMOUS=true"
        )


class Authenticator:
    """Resolves each call's principal and checks what it may call (see the module)."""

    def __init__(
        self,
        settings: AuthSettings,
        aws: AwsSettings,
        identities: ClientIdentities,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_reload: Callable[[Policy], None] | None = None,
    ) -> None:
        self._settings = settings
        # Told each policy a reload puts in force (the database closes removed logins' pools).
        self._on_reload = on_reload
        self._aws = aws
        self._identities = identities
        self._clock = clock
        self._lock = threading.Lock()
        # One reload at a time (SIGHUP threads and the file check): the policy left in
        # force, and the one ``on_reload`` is told, are the last one read.
        self._reload_lock = threading.Lock()
        self._buckets: dict[str, _Bucket] = {}
        self.failures: collections.Counter[str] = collections.Counter()
        self._file_signature: tuple[int, int, int] | None = None
        # When the policy file is looked at next (once a second; never without a file).
        self._next_check = 0.0 if settings.auth_policy_file else math.inf
        self._state: _State | None = None
        if settings.auth_policy_file or settings.auth_policy:
            self._state = self._load()  # a bad policy stops the start here

    @property
    def enabled(self) -> bool:
        return self._state is not None

    @property
    def policy(self) -> Policy | None:
        state = self._state
        return None if state is None else state.policy

    # -- the policy --------------------------------------------------------------

    def _load(self) -> _State:
        path = self._settings.auth_policy_file
        signature = _signature(path) if path else None
        policy = load_policy(path=path, text=self._settings.auth_policy)
        try:
            state = _State(
                policy,
                self._jwt_verifier(policy),
                self._iam_verifier(policy),
                {
                    bytes.fromhex(hashed.removeprefix("sha256:")): principal
                    for hashed, principal in policy.by_key_hash.items()
                },
            )
        except ValueError as exc:
            # A setting a verifier refuses (an AWS_REGION, an STS endpoint): one line at start,
            # the old policy kept on a reload, as for any policy that does not check out.
            raise ConfigError(f"auth policy: {exc}") from None
        self._file_signature = signature
        return state

    def _jwt_verifier(self, policy: Policy) -> _Verifier | None:
        if policy.jwt is None:
            return None
        from datamorph_gateway.auth.jwt import JwtVerifier

        return JwtVerifier(
            issuer=policy.jwt.issuer,
            audience=policy.jwt.audience,
            jwks_file=policy.jwt.jwks_file,
            jwks_url=policy.jwt.jwks_url,
        )

    def _iam_verifier(self, policy: Policy) -> _Verifier | None:
        if policy.aws_iam is None:
            return None
        from datamorph_gateway.auth.aws_iam import IamVerifier

        return IamVerifier(
            gateway_id=policy.aws_iam.gateway_id,
            sts_endpoint_url=self._aws.sts_endpoint_url or self._aws.aws_endpoint_url,
            region=self._aws.aws_region,
            timeout_s=self._aws.aws_timeout_s,
        )

    def reload(self) -> bool:
        """Read the policy again; keep the old one (and say why) if the new one is bad."""
        if self._state is None:
            return False
        with self._reload_lock:
            try:
                state = self._load()
            except ConfigError as exc:
                log.error("the new auth policy is refused, the old one stays in force: %s", exc)
                return False
            self._state = state
            log.info("auth policy loaded: %d principals", len(state.policy.principals))
            if self._on_reload is not None:
                try:
                    self._on_reload(state.policy)
                except Exception:  # the new policy is in force either way
                    log.exception("after the auth policy was reloaded")
            return True

    def _check_file(self, state: _State) -> _State:
        """Reload when the policy file changed since it was read (called once a second)."""
        with self._lock:
            if self._clock() < self._next_check:
                return self._state or state
            self._next_check = self._clock() + _RELOAD_CHECK_S
            changed = _signature(self._settings.auth_policy_file) != self._file_signature
        if changed:
            self.reload()
        return self._state or state

    # -- each call -----------------------------------------------------------------

    def authorize(self, rpc: str, context: grpc.ServicerContext) -> Principal:
        """The call's principal, if it may make this call; otherwise a request error.

        Every call comes through here, and at one call at a time its caches are cold, so
        every Python call and attribute look-up in the common case (one API key or one
        remembered token, allowed) shows in the latency: the path stays short on purpose
        (docs/benchmarks.md, issue 11).
        """
        state = self._state
        if state is None or rpc in OPEN_RPCS:
            return ANONYMOUS
        if self._clock() >= self._next_check:  # never, without a policy file to watch
            state = self._check_file(state)
        principal = self._authenticate(state, rpc, context)
        if not principal.allows(rpc):
            log.warning(
                "call refused: principal=%s rpc=%s (not in its allow list)", principal.name, rpc
            )
            raise PermissionDenied(
                f"principal {principal.name!r} may not call {rpc}",
                reason="RPC_NOT_ALLOWED",
                metadata={"principal": principal.name, "rpc": rpc},
            )
        if principal.rate_limit_per_s is not None:
            self._take(principal)
        return principal

    def _authenticate(self, state: _State, rpc: str, context: grpc.ServicerContext) -> Principal:
        metadata = context.invocation_metadata() or ()
        # gRPC's metadata items are (key, value) pairs; credential values are text (no
        # credential header ends in -bin). One dict, built in C, for the common case.
        given = dict(metadata)
        if len(given) != len(metadata):  # some header came more than once
            self._refuse_repeated(rpc, context, metadata)
        api_key = given.get(API_KEY_HEADER)
        bearer = given.get(AUTHORIZATION_HEADER)
        iam = given.get(AWS_IAM_HEADER)
        if api_key is not None:
            if len(api_key) > MAX_CREDENTIAL_BYTES:
                raise self._failed(rpc, context, "too_large", "the API key is too large")
            found = state.by_key_digest.get(key_digest(api_key))
            if found is None:
                raise self._failed(rpc, context, "unknown_api_key", _NO_CREDENTIALS)
            return found
        policy = state.policy
        if bearer is not None:
            scheme, _, token = bearer.partition(" ")
            token = token.strip()
            if scheme.lower() != "bearer" or not token:
                raise self._failed(
                    rpc, context, "malformed", "the authorization header must be 'Bearer <token>'"
                )
            return self._verified(state.jwt, "jwt", token, rpc, context, policy)
        if iam is not None:
            return self._verified(state.iam, "aws_iam", iam, rpc, context, policy)
        identity = self._identities.of(context)
        if identity is not None:
            found = policy.by_tls_subject.get(identity.name) or policy.by_tls_subject.get(
                identity.subject
            )
            if found is None:
                raise self._failed(rpc, context, "unknown_tls_subject", _NO_CREDENTIALS)
            return found
        raise self._failed(rpc, context, "no_credentials", _NO_CREDENTIALS)

    def _refuse_repeated(
        self, rpc: str, context: grpc.ServicerContext, metadata: Sequence[tuple[str, Any]]
    ) -> None:
        """Refuse a call that sends a credential header more than once: which one counts
        would be up to every proxy on the way, and none does."""
        seen: set[str] = set()
        for key, _ in metadata:
            if key in _CREDENTIAL_HEADERS:
                if key in seen:
                    raise self._failed(
                        rpc, context, "repeated_credential", f"{key} is sent more than once"
                    )
                seen.add(key)

    def _verified(
        self,
        verifier: _Verifier | None,
        kind: str,
        token: str,
        rpc: str,
        context: grpc.ServicerContext,
        policy: Policy,
    ) -> Principal:
        if verifier is None:
            what = "bearer tokens" if kind == "jwt" else "AWS IAM tokens"
            raise self._failed(
                rpc, context, f"{kind}_not_configured", f"this gateway takes no {what}"
            )
        if len(token) > MAX_CREDENTIAL_BYTES:
            raise self._failed(rpc, context, "too_large", "the token is too large")
        try:
            verified = verifier.verify(token)
        except AuthError as exc:
            raise self._failed(rpc, context, exc.reason, exc.message) from None
        if kind == "jwt":
            found = policy.by_jwt_subject.get(verified.subject)
        else:
            found = policy.for_iam_arn(verified.subject)
        if found is None:
            raise self._failed(rpc, context, f"unknown_{kind}_subject", _NO_CREDENTIALS)
        return found

    def _failed(
        self, rpc: str, context: grpc.ServicerContext, reason: str, message: str
    ) -> Unauthenticated:
        with self._lock:
            self.failures[reason] += 1
        metrics.auth_failure(reason)
        log.warning("authentication failed: rpc=%s reason=%s peer=%s", rpc, reason, context.peer())
        return Unauthenticated(message, reason="UNAUTHENTICATED", metadata={"cause": reason})

    def _take(self, principal: Principal) -> None:
        """One token from the principal's bucket (rate per second, burst twice that)."""
        rate = principal.rate_limit_per_s or 0.0
        burst = rate * 2
        now = self._clock()
        with self._lock:
            bucket = self._buckets.get(principal.name)
            if bucket is None:
                bucket = self._buckets[principal.name] = _Bucket(burst, now)
            bucket.tokens = min(burst, bucket.tokens + (now - bucket.updated) * rate)
            bucket.updated = now
            if bucket.tokens >= 1:
                bucket.tokens -= 1
                return
            wait_s = (1 - bucket.tokens) / rate
        metrics.rate_limited()
        raise ResourceExhausted(
            f"principal {principal.name!r} is over its rate limit of {rate:g} calls per second",
            reason="RATE_LIMITED",
            metadata={"principal": principal.name, "limit_per_s": f"{rate:g}"},
            retry_delay_s=wait_s,
        )


def _signature(path: str) -> tuple[int, int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return (stat.st_ino, stat.st_size, stat.st_mtime_ns)


def principal_key(principal: Principal) -> str | None:
    """The per-caller limit key of a named principal (None for anonymous)."""
    return None if principal.anonymous else f"principal:{principal.name}"
