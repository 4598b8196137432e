"""What authentication costs a call: the same cells with the policy off and on, interleaved.

Two gateways with the same settings run side by side, each behind an Envoy of its own:
one without a policy (every call is ``anonymous``), one with ``AUTH_POLICY_FILE`` naming
one principal that may call everything. That principal is reached two ways: an API key
(``x-api-key``, looked up by its SHA-256) and an RS256 bearer JWT checked against a JWKS
file. The verifier remembers a token after its first check, and the probes make that
check, so every timed call is the cached case a repeat caller meets. Before anything is
timed, every variant must answer its probes right and the gateway with the policy must
refuse a call that carries no credential: a policy that is silently off measures nothing.

Each c=1 round gets a fresh pair of gateways, started in turns, with its three c=8 rounds:
a process's luck (its core, its memory, its Envoy) is not the policy's for the whole run.
The rounds are ``bench/ab.py``'s: at c=1 each credential is measured together with the
policy off, request by request in turn; at c=8 each variant's cells run back to back, in
three times as many rounds. The judgments (``bench/targets.py``) compare each round's
"on" with the same round's "off" and take the median over rounds.

Two measurements split the added latency: ``authorize`` timed in process
(``in_process_us``), without gRPC, and "carried" (c=1 only, not judged): the gateway
without a policy sent the JWT it ignores, against itself sent nothing, which is what
carrying a credential costs the client, Envoy and gRPC before any check.

The key, the token and the signing key live in this process's memory and, for the run,
in the load generators' arguments and wrk's private script; the policy file holds only
the key's hash, and the JWKS file only the public key.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import jwt
import yaml
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from bench import ab
from bench.scenarios import GATEWAY_GRPC, GATEWAY_REST, scenarios
from bench.stack import StackError
from datamorph_gateway.auth.authenticator import (
    API_KEY_HEADER,
    AUTHORIZATION_HEADER,
    Authenticator,
)
from datamorph_gateway.auth.keys import key_hash, new_key
from datamorph_gateway.config import AuthSettings, AwsSettings
from datamorph_gateway.identity import ClientIdentities

if TYPE_CHECKING:
    from bench.suite import Stack, Suite

ISSUER = "https://issuer.bench.invalid"
AUDIENCE = "datamorph-gateway-bench"
PRINCIPAL = "bench"
KEY_ID = "bench-rs256"
TOKEN_LIFETIME_S = 24 * 3600

OFF = "off"
VARIANTS = (OFF, "api_key", "jwt")  # "off" first: the others are judged against it
CARRIED = "carried"  # the policy off, the JWT sent anyway: the header's own cost
SCENARIOS = ("get_data_2e4", "execute_query_small")
TRANSPORTS = (GATEWAY_GRPC, GATEWAY_REST)
ROUNDS = 5
DURATION_S = 2


@dataclass(frozen=True)
class Credentials:
    """The bench principal's policy file and the two credentials that name it."""

    policy_file: Path
    api_key: str
    token: str

    def headers(self, variant: str) -> dict[str, str]:
        """What a call of `variant` sends (REST headers and gRPC metadata alike)."""
        if variant == "api_key":
            return {API_KEY_HEADER: self.api_key}
        if variant == "jwt":
            return {AUTHORIZATION_HEADER: f"Bearer {self.token}"}
        return {}


def write_policy(directory: Path) -> Credentials:
    """A policy with one principal that may call everything, by API key or by JWT."""
    directory.mkdir(parents=True, exist_ok=True)
    signing_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = RSAAlgorithm.to_jwk(signing_key.public_key(), as_dict=True)
    jwk.update(kid=KEY_ID, use="sig", alg="RS256")
    jwks_file = directory / "jwks.json"
    jwks_file.write_text(json.dumps({"keys": [jwk]}), encoding="utf-8")
    api_key = new_key()
    policy = {
        "jwt": {"issuer": ISSUER, "audience": AUDIENCE, "jwks_file": str(jwks_file.resolve())},
        "principals": [
            {
                "name": PRINCIPAL,
                "api_keys": [key_hash(api_key)],
                "jwt_subjects": [PRINCIPAL],
                "allow": ["*"],
            }
        ],
    }
    policy_file = directory / "policy.yaml"
    policy_file.write_text(yaml.safe_dump(policy, sort_keys=False), encoding="utf-8")
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": PRINCIPAL, "iat": now}
    claims["exp"] = now + TOKEN_LIFETIME_S
    token = jwt.encode(claims, signing_key, algorithm="RS256", headers={"kid": KEY_ID})
    return Credentials(policy_file, api_key, token)


class _Metadatum(NamedTuple):  # as gRPC's: a (key, value) named tuple
    key: str
    value: str


class StandInContext:
    """A stand-in for ``grpc.ServicerContext`` with what ``authorize`` reads (the metadata
    and the peer), for timing it in process: a real call would add the transport's cost,
    which the end-to-end cells measure."""

    def __init__(self, headers: dict[str, str]) -> None:
        sent = [_Metadatum("user-agent", "grpc-python/bench"), _Metadatum("x-request-id", "r")]
        self._metadata = tuple(sent + [_Metadatum(k, v) for k, v in headers.items()])

    def invocation_metadata(self) -> tuple[_Metadatum, ...]:
        return self._metadata

    def peer(self) -> str:
        return "ipv4:127.0.0.1:50000"


def in_process_us(
    credentials: Credentials, calls: int = 20_000, rounds: int = 5
) -> dict[str, float]:
    """Microseconds one ``Authenticator.authorize("GetData", ...)`` takes, per variant
    (median of `rounds` runs of `calls` calls; the JWT is verified once beforehand)."""
    identities = ClientIdentities(None)
    policy = AuthSettings(auth_policy_file=str(credentials.policy_file))
    off = Authenticator(AuthSettings(), AwsSettings(), identities)
    on = Authenticator(policy, AwsSettings(), identities)
    out = {}
    for variant in VARIANTS:
        authenticator = off if variant == OFF else on
        context: Any = StandInContext(credentials.headers(variant))
        authenticator.authorize("GetData", context)
        runs = []
        for _ in range(rounds):
            start = time.perf_counter()
            for _ in range(calls):
                authenticator.authorize("GetData", context)
            runs.append((time.perf_counter() - start) / calls * 1e6)
        out[variant] = round(statistics.median(runs), 2)
    return out


def compare(suite: Suite, rounds: int = ROUNDS, duration_s: int = DURATION_S) -> dict[str, Any]:
    """Start the two gateways, probe every variant, run the rounds; the results' ``auth``."""
    by_name = {s.name: s for s in scenarios()}
    chosen = [by_name[name] for name in SCENARIOS]
    directory = suite.run_dir / "auth"
    credentials = write_policy(directory)
    out: dict[str, Any] = {
        "in_process_us": in_process_us(credentials),
        "rounds": rounds,
        "throughput_rounds": rounds * ab.THROUGHPUT_ROUNDS_FACTOR,
        "duration_s": duration_s,
        "variants": list(VARIANTS),
        "scenarios": list(SCENARIOS),
        "titles": {s.name: s.title for s in chosen},
        "concurrencies": [1, ab.THROUGHPUT_CONCURRENCY],
        "principal": PRINCIPAL,
        "restarts": "a fresh off/on pair of gateways per c=1 round",
    }
    plan = ab.Plan("auth", VARIANTS, chosen, TRANSPORTS, extra_pairs=(CARRIED,))
    out["cells"] = []
    for run in range(rounds):
        # A fresh pair of gateways (and Envoys) per c=1 round, started in turns: which
        # process runs with the policy is never the same one for the whole comparison, so
        # where a process landed (its core, its memory, its Envoy) cannot pass for the
        # policy's cost. With one pair for every round, the cell that lost most moved
        # between transports and scenarios from one run to the next (bench/analysis.md).
        with contextlib.ExitStack() as servers:
            stacks = _start_pair(suite, servers, directory / f"run{run + 1}", credentials, run)
            if run == 0:
                out["refused_without_credentials"] = _refusals(suite, chosen[0], stacks["on"])
                out["probes"] = ab.probe(suite, plan, stacks)
            else:
                _refusals(suite, chosen[0], stacks["on"])
                ab.probe(suite, plan, stacks)
            first = run * ab.THROUGHPUT_ROUNDS_FACTOR + 1
            out["cells"] += ab.run_rounds(suite, plan, stacks, 1, duration_s, first)
    return out


def _start_pair(
    suite: Suite, servers: contextlib.ExitStack, directory: Path, credentials: Credentials, run: int
) -> dict[str, Stack]:
    """The gateway without a policy and the one with it, the first started first in even
    runs and second in odd ones; every variant's stack by name (and ``on`` itself)."""
    started: dict[str, Stack] = {}
    order = (OFF, "on") if run % 2 == 0 else ("on", OFF)
    for which in order:
        env = {} if which == OFF else {"AUTH_POLICY_FILE": str(credentials.policy_file)}
        started[which] = suite.start_gateway(servers, directory / which, env)
    off, on = started[OFF], started["on"]
    stacks: dict[str, Stack] = {
        OFF: off,
        "on": on,
        CARRIED: dataclasses.replace(off, headers=credentials.headers("jwt")),
    }
    for variant in VARIANTS[1:]:
        stacks[variant] = dataclasses.replace(on, headers=credentials.headers(variant))
    return stacks


def _refusals(suite: Suite, scenario: Any, on: Stack) -> dict[str, str]:
    """The gateway with the policy must refuse a call without credentials, on both paths."""
    bare = dataclasses.replace(on, headers={})
    statuses = {}
    for system in TRANSPORTS:
        probe = suite.probe(scenario, system, bare)
        statuses[system[1]] = probe["status"]
        if probe["status"] not in ("UNAUTHENTICATED", "HTTP 401"):
            raise StackError(
                f"the gateway with AUTH_POLICY_FILE answered a call without credentials over "
                f"{system[1]} with {probe['status']}: its numbers would not measure "
                "authentication"
            )
    return statuses
