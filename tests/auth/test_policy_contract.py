"""The auth policy file, read without a gateway: every key, every refusal, every decision.

tests/auth/test_auth.py checks the policy through a running gateway; these tables pin
what ``parse_policy`` makes of each key, the exact line a bad policy is refused with,
how each kind of credential finds its principal, and what each allow list lets through,
so that a change to any of them fails here in about a second (mutation/modules.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest

from datamorph_gateway.auth.credentials import AuthError, Verified
from datamorph_gateway.auth.keys import (
    HASH_PATTERN,
    KEY_PREFIX,
    key_digest,
    key_hash,
    new_key,
    sha256,
)
from datamorph_gateway.auth.policy import (
    ANONYMOUS,
    RPC_NAMES,
    IamConfig,
    JwtConfig,
    Policy,
    Principal,
    load_policy,
    parse_policy,
)
from datamorph_gateway.errors import ConfigError

HASH_A = key_hash("key-a")
HASH_B = key_hash("key-b")
JWT = {"issuer": "https://issuer.example.test/", "audience": "gw", "jwks_file": "/etc/jwks.json"}
IAM = {"gateway_id": "datamorph-prod"}
ALL_RPCS = (
    "StartWorkflow",
    "GetSchemas",
    "GetData",
    "ExecuteQuery",
    "StreamQuery",
    "GetLogs",
    "WatchLogs",
    "Health",
)
KNOWN_RPCS = (
    "*, ExecuteQuery, ExecuteQuery:read, GetData, GetLogs, GetSchemas, Health, StartWorkflow, "
    "StreamQuery, WatchLogs"
)
PRINCIPAL_KEYS = (
    "allow, api_keys, aws_iam_arns, database_iam_auth, database_secret, database_user, "
    "jwt_subjects, name, rate_limit_per_s, tls_subjects"
)
BAD_HASH = (
    "must be sha256:<64 lower-case hex digits> (the hash, never the key: "
    "python -m datamorph_gateway.auth new-key NAME)"
)
JWKS_URL = "must be https:// with a host (http:// only on a loopback address)"


def one(**principal: Any) -> dict[str, Any]:
    """A policy of one principal named ``p`` with these keys (and both sections)."""
    return {"jwt": JWT, "aws_iam": IAM, "principals": [{"name": "p", **principal}]}


def refusal(data: Any, source: str = "AUTH_POLICY_FILE") -> str:
    with pytest.raises(ConfigError) as err:
        parse_policy(data, source)
    return str(err.value)


# -- what each key means ------------------------------------------------------------------


def test_every_key_and_its_parsed_meaning() -> None:
    data = {
        "jwt": {
            "issuer": "https://idp.example.test/",
            "audience": "gw",
            "jwks_url": "https://idp.example.test/jwks",
        },
        "aws_iam": {"gateway_id": "datamorph-prod"},
        "principals": [
            {
                "name": "etl-reader",
                "api_keys": [HASH_A, HASH_B],
                "jwt_subjects": ["svc-etl", "svc-etl-2"],
                "aws_iam_arns": ["arn:aws:iam::123456789012:role/etl-*"],
                "tls_subjects": ["spiffe://datamorph/etl", "CN=etl,O=DataMorph"],
                "allow": ["GetSchemas", "GetData", "ExecuteQuery:read", "StreamQuery"],
                "database_user": "etl_reader",
                "database_secret": "prod/datamorph/etl_reader",
                "rate_limit_per_s": 50,
            },
            {
                "name": "orchestrator",
                "allow": ["*"],
                "database_user": "orchestrator",
                "database_iam_auth": True,
                "rate_limit_per_s": 0.5,
            },
        ],
    }
    reader = Principal(
        name="etl-reader",
        allow=frozenset({"GetSchemas", "GetData", "ExecuteQuery", "StreamQuery"}),
        read_only_queries=True,
        api_keys=(HASH_A, HASH_B),
        jwt_subjects=("svc-etl", "svc-etl-2"),
        aws_iam_arns=("arn:aws:iam::123456789012:role/etl-*",),
        tls_subjects=("spiffe://datamorph/etl", "CN=etl,O=DataMorph"),
        database_user="etl_reader",
        database_secret="prod/datamorph/etl_reader",
        rate_limit_per_s=50.0,
    )
    orchestrator = Principal(
        name="orchestrator",
        allow=frozenset({"*"}),
        database_user="orchestrator",
        database_iam_auth=True,
        rate_limit_per_s=0.5,
    )
    policy = parse_policy(data)
    assert policy == Policy(
        principals=(reader, orchestrator),
        jwt=JwtConfig("https://idp.example.test/", "gw", jwks_url="https://idp.example.test/jwks"),
        aws_iam=IamConfig("datamorph-prod"),
        by_key_hash={HASH_A: reader, HASH_B: reader},
        by_jwt_subject={"svc-etl": reader, "svc-etl-2": reader},
        by_tls_subject={"spiffe://datamorph/etl": reader, "CN=etl,O=DataMorph": reader},
    )
    assert type(policy.principals[0].rate_limit_per_s) is float  # an int in YAML, a float here
    assert policy.jwt == JwtConfig(
        "https://idp.example.test/", "gw", "", "https://idp.example.test/jwks"
    )


def test_a_principal_with_only_a_name_has_every_default() -> None:
    (principal,) = parse_policy({"principals": [{"name": "nobody"}]}).principals
    assert principal == Principal("nobody")
    assert (principal.allow, principal.read_only_queries, principal.api_keys) == (
        frozenset(),
        False,
        (),
    )
    assert (principal.jwt_subjects, principal.aws_iam_arns, principal.tls_subjects) == ((), (), ())
    assert (principal.database_user, principal.database_secret) == ("", "")
    assert (principal.database_iam_auth, principal.rate_limit_per_s) == (False, None)
    assert not principal.anonymous


@pytest.mark.parametrize(
    "data",
    [
        None,
        {},
        {"principals": None},
        {"principals": []},
        {"jwt": None, "aws_iam": None, "principals": []},
    ],
)
def test_an_empty_policy_names_nobody(data: Any) -> None:
    """An empty file is a policy under which every call but Health is unauthenticated."""
    assert parse_policy(data) == Policy(())
    assert parse_policy(data) == Policy((), None, None, {}, {}, {})


@pytest.mark.parametrize(
    ("values", "kept"),
    [
        ({"database_user": "", "database_secret": "", "rate_limit_per_s": None}, Principal("p")),
        ({"api_keys": None, "allow": None, "tls_subjects": []}, Principal("p")),
        ({"database_iam_auth": False}, Principal("p")),
        ({"database_user": "u"}, Principal("p", database_user="u")),
        ({"database_user": "u", "database_iam_auth": False}, Principal("p", database_user="u")),
        ({"rate_limit_per_s": 1e-9}, Principal("p", rate_limit_per_s=1e-9)),
        ({"rate_limit_per_s": 10**300}, Principal("p", rate_limit_per_s=1e300)),
        ({"name": "a b"}, Principal("a b")),  # only the ends must not be white space
    ],
)
def test_empty_and_null_values_mean_the_default(values: dict[str, Any], kept: Principal) -> None:
    (principal,) = parse_policy({"principals": [{"name": "p", **values}]}).principals
    assert principal == kept


@pytest.mark.parametrize(
    ("jwt", "parsed"),
    [
        ({**JWT}, JwtConfig(JWT["issuer"], "gw", jwks_file="/etc/jwks.json")),
        (
            {"issuer": "i", "audience": "a", "jwks_file": "", "jwks_url": "https://idp/jwks"},
            JwtConfig("i", "a", jwks_url="https://idp/jwks"),
        ),
        (
            {
                "issuer": "i",
                "audience": "a",
                "jwks_file": None,
                "jwks_url": "http://127.0.0.1:8080/j",
            },
            JwtConfig("i", "a", jwks_url="http://127.0.0.1:8080/j"),
        ),
        (
            {"issuer": "i", "audience": "a", "jwks_url": "http://localhost:8080/j"},
            JwtConfig("i", "a", jwks_url="http://localhost:8080/j"),
        ),
        (
            {"issuer": "i", "audience": "a", "jwks_url": "http://[::1]:8080/j"},
            JwtConfig("i", "a", jwks_url="http://[::1]:8080/j"),
        ),
        (
            {"issuer": "i", "audience": "a", "jwks_url": "http://127.0.0.2/j"},
            JwtConfig("i", "a", jwks_url="http://127.0.0.2/j"),
        ),
        (
            {"issuer": "i", "audience": "a", "jwks_url": "HTTPS://idp.example.test/j"},
            JwtConfig("i", "a", jwks_url="HTTPS://idp.example.test/j"),
        ),
    ],
)
def test_the_jwt_section(jwt: dict[str, Any], parsed: JwtConfig) -> None:
    assert parse_policy({"jwt": jwt}).jwt == parsed


# -- the allow list -----------------------------------------------------------------------


def test_the_rpc_names_are_the_services_own() -> None:
    assert frozenset(ALL_RPCS) == RPC_NAMES


@pytest.mark.parametrize(
    ("allow", "kept", "read_only", "allowed"),
    [
        ([], set(), False, {"Health"}),
        (["*"], {"*"}, False, set(ALL_RPCS)),
        (["GetData"], {"GetData"}, False, {"GetData", "Health"}),
        (["GetData", "GetData"], {"GetData"}, False, {"GetData", "Health"}),
        (["ExecuteQuery"], {"ExecuteQuery"}, False, {"ExecuteQuery", "Health"}),
        (["ExecuteQuery:read"], {"ExecuteQuery"}, True, {"ExecuteQuery", "Health"}),
        (
            ["ExecuteQuery:read", "ExecuteQuery"],
            {"ExecuteQuery"},
            False,
            {"ExecuteQuery", "Health"},
        ),
        (
            ["ExecuteQuery", "ExecuteQuery:read"],
            {"ExecuteQuery"},
            False,
            {"ExecuteQuery", "Health"},
        ),
        (["ExecuteQuery:read", "*"], {"*"}, False, set(ALL_RPCS)),
        (["*", "ExecuteQuery:read"], {"*"}, False, set(ALL_RPCS)),
        (
            ["GetSchemas", "ExecuteQuery:read", "StreamQuery"],
            {"GetSchemas", "ExecuteQuery", "StreamQuery"},
            True,
            {"GetSchemas", "ExecuteQuery", "StreamQuery", "Health"},
        ),
        (["Health"], {"Health"}, False, {"Health"}),
        (list(ALL_RPCS), set(ALL_RPCS), False, set(ALL_RPCS)),
    ],
)
def test_what_an_allow_list_lets_through(
    allow: list[str], kept: set[str], read_only: bool, allowed: set[str]
) -> None:
    """``ExecuteQuery:read`` alone is ExecuteQuery as a read; with ExecuteQuery or * it adds
    nothing. Health is open to everyone; * lets any name through."""
    (principal,) = parse_policy({"principals": [{"name": "p", "allow": allow}]}).principals
    assert principal.allow == frozenset(kept)
    assert principal.read_only_queries is read_only
    assert {rpc for rpc in ALL_RPCS if principal.allows(rpc)} == allowed
    assert principal.allows("ExecuteQuery:read") is ("*" in kept)
    assert principal.allows("Unknown") is ("*" in kept)


def test_anonymous_may_call_everything_and_is_the_only_anonymous() -> None:
    assert Principal("anonymous", allow=frozenset({"*"})) == ANONYMOUS
    assert ANONYMOUS.anonymous
    assert all(ANONYMOUS.allows(rpc) for rpc in ALL_RPCS)
    assert not ANONYMOUS.read_only_queries
    assert ANONYMOUS.rate_limit_per_s is None
    (named,) = parse_policy({"principals": [{"name": "anonymous", "allow": ["*"]}]}).principals
    assert named == ANONYMOUS
    assert not named.anonymous


# -- how a credential finds its principal ----------------------------------------------------


def lookup_policy() -> Policy:
    return parse_policy(
        {
            "jwt": JWT,
            "aws_iam": IAM,
            "principals": [
                {
                    "name": "etl",
                    "api_keys": [HASH_A],
                    "jwt_subjects": ["svc-etl"],
                    "tls_subjects": ["spiffe://datamorph/etl"],
                    "aws_iam_arns": ["arn:aws:iam::111122223333:role/etl-*"],
                },
                {
                    "name": "ops",
                    "api_keys": [HASH_B],
                    "jwt_subjects": ["svc-ops"],
                    "tls_subjects": ["CN=ops,O=DataMorph"],
                    "aws_iam_arns": [
                        "arn:aws:iam::111122223333:role/ops",
                        "arn:aws:iam::111122223333:role/etl-admin",
                        "arn:aws:iam::444455556666:user/*",
                    ],
                },
                {"name": "none"},
            ],
        }
    )


@pytest.mark.parametrize(
    "text", ["", "test", "dmgw_" + "A" * 43, "clé ünïcode ✓", "x" * 1000, "\x00\n\t"]
)
def test_the_fast_sha256_is_sha256(text: str) -> None:
    """The builtin SHA-256 the hot path uses (keys.sha256) gives hashlib's digest."""
    data = text.encode("utf-8")
    assert sha256(data).digest() == hashlib.sha256(data).digest()
    assert key_digest(text) == hashlib.sha256(data).digest()
    assert key_hash(text) == "sha256:" + hashlib.sha256(data).hexdigest()


def test_a_key_hash_is_the_issues_own_example() -> None:
    # SHA-256 of "test": the value issue 11's policy example begins with.
    assert key_hash("test") == (
        "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    )


def test_api_keys_jwt_and_tls_subjects_are_looked_up_exactly() -> None:
    policy = lookup_policy()
    etl, ops, _ = policy.principals
    assert dict(policy.by_key_hash) == {HASH_A: etl, HASH_B: ops}
    assert policy.by_key_hash.get(key_hash("key-a")) is etl
    assert policy.by_key_hash.get("key-a") is None  # a key itself is no hash
    assert dict(policy.by_jwt_subject) == {"svc-etl": etl, "svc-ops": ops}
    assert policy.by_jwt_subject.get("SVC-ETL") is None
    assert dict(policy.by_tls_subject) == {"spiffe://datamorph/etl": etl, "CN=ops,O=DataMorph": ops}


@pytest.mark.parametrize(
    ("arn", "name"),
    [
        ("arn:aws:iam::111122223333:role/etl-loader", "etl"),
        ("arn:aws:iam::111122223333:role/etl-", "etl"),
        # Both match: the first principal in the policy's order wins.
        ("arn:aws:iam::111122223333:role/etl-admin", "etl"),
        ("arn:aws:iam::111122223333:role/ops", "ops"),
        ("arn:aws:iam::444455556666:user/alice", "ops"),
        ("arn:aws:iam::444455556666:user/path/bob", "ops"),  # fnmatch's * crosses /
        ("arn:aws:iam::111122223333:role/ops-2", None),
        ("arn:aws:iam::111122223333:role/ETL-loader", None),  # case counts
        ("arn:aws:iam::999999999999:role/etl-loader", None),
        ("arn:aws:iam::111122223333:role/etl", None),
        ("", None),
    ],
)
def test_an_iam_arn_is_matched_against_the_globs_in_policy_order(
    arn: str, name: str | None
) -> None:
    found = lookup_policy().for_iam_arn(arn)
    assert (found.name if found else None) == name


# -- refusals -------------------------------------------------------------------------------

WHERE = "AUTH_POLICY_FILE principals[0]"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        # The top level.
        ([], "AUTH_POLICY_FILE: must be a mapping"),
        ("principals", "AUTH_POLICY_FILE: must be a mapping"),
        ({"extra": 1}, "AUTH_POLICY_FILE extra: unknown key (known: aws_iam, jwt, principals)"),
        ({1: 1}, "AUTH_POLICY_FILE 1: unknown key (known: aws_iam, jwt, principals)"),
        ({"principals": {"name": "a"}}, "AUTH_POLICY_FILE principals: must be a list"),
        ({"principals": "a"}, "AUTH_POLICY_FILE principals: must be a list"),
        ({"principals": b"a"}, "AUTH_POLICY_FILE principals: must be a list"),
        ({"principals": 1}, "AUTH_POLICY_FILE principals: must be a list"),
        # The jwt: section.
        ({"jwt": []}, "AUTH_POLICY_FILE jwt: must be a mapping"),
        ({"jwt": ""}, "AUTH_POLICY_FILE jwt: must be a mapping"),
        (
            {"jwt": {**JWT, "leeway": 1}},
            "AUTH_POLICY_FILE jwt.leeway: unknown key "
            "(known: audience, issuer, jwks_file, jwks_url)",
        ),
        ({"jwt": {"audience": "a", "jwks_file": "f"}}, "AUTH_POLICY_FILE jwt.issuer: is required"),
        ({"jwt": {"issuer": "", "audience": "a"}}, "AUTH_POLICY_FILE jwt.issuer: is required"),
        ({"jwt": {"issuer": "i", "jwks_file": "f"}}, "AUTH_POLICY_FILE jwt.audience: is required"),
        ({"jwt": {**JWT, "issuer": 1}}, "AUTH_POLICY_FILE jwt.issuer: must be a string"),
        ({"jwt": {**JWT, "audience": ["a"]}}, "AUTH_POLICY_FILE jwt.audience: must be a string"),
        ({"jwt": {**JWT, "jwks_file": 1}}, "AUTH_POLICY_FILE jwt.jwks_file: must be a string"),
        ({"jwt": {**JWT, "jwks_url": True}}, "AUTH_POLICY_FILE jwt.jwks_url: must be a string"),
        (
            {"jwt": {**JWT, "issuer": "i "}},
            "AUTH_POLICY_FILE jwt.issuer: must not start or end with white space",
        ),
        (
            {"jwt": {"issuer": "i", "audience": "a"}},
            "AUTH_POLICY_FILE jwt: needs exactly one of jwks_file and jwks_url",
        ),
        (
            {"jwt": {**JWT, "jwks_url": "https://idp/jwks"}},
            "AUTH_POLICY_FILE jwt: needs exactly one of jwks_file and jwks_url",
        ),
        # The aws_iam: section.
        ({"aws_iam": ["x"]}, "AUTH_POLICY_FILE aws_iam: must be a mapping"),
        (
            {"aws_iam": {**IAM, "region": "eu-west-1"}},
            "AUTH_POLICY_FILE aws_iam.region: unknown key (known: gateway_id)",
        ),
        ({"aws_iam": {}}, "AUTH_POLICY_FILE aws_iam.gateway_id: is required"),
        ({"aws_iam": {"gateway_id": 7}}, "AUTH_POLICY_FILE aws_iam.gateway_id: must be a string"),
        # A principal.
        ({"principals": [["name", "a"]]}, f"{WHERE}: must be a mapping"),
        ({"principals": [None]}, f"{WHERE}.name: is required"),
        ({"principals": [{"allow": ["*"]}]}, f"{WHERE}.name: is required"),
        ({"principals": [{"name": ""}]}, f"{WHERE}.name: is required"),
        ({"principals": [{"name": 1}]}, f"{WHERE}.name: must be a string"),
        ({"principals": [{"name": " a"}]}, f"{WHERE}.name: must not start or end with white space"),
        (
            {"principals": [{"name": "a\n"}]},
            f"{WHERE}.name: must not start or end with white space",
        ),
        (
            {"principals": [{"name": "a", "colour": "red"}]},
            f"{WHERE}.colour: unknown key (known: {PRINCIPAL_KEYS})",
        ),
        (
            {"principals": [{"name": "a"}, {"name": "b", "key": "k"}]},
            f"AUTH_POLICY_FILE principals[1].key: unknown key (known: {PRINCIPAL_KEYS})",
        ),
        # Lists of text.
        (one(api_keys=HASH_A), f"{WHERE}.api_keys: must be a list"),
        (one(api_keys=[None]), f"{WHERE}.api_keys[0]: is required"),
        (one(api_keys=[HASH_A, ""]), f"{WHERE}.api_keys[1]: is required"),
        (one(api_keys=[1]), f"{WHERE}.api_keys[0]: must be a string"),
        (one(jwt_subjects="svc"), f"{WHERE}.jwt_subjects: must be a list"),
        (one(jwt_subjects=["a", ""]), f"{WHERE}.jwt_subjects[1]: is required"),
        (one(aws_iam_arns={"arn": 1}), f"{WHERE}.aws_iam_arns: must be a list"),
        (
            one(aws_iam_arns=[" arn"]),
            f"{WHERE}.aws_iam_arns[0]: must not start or end with white space",
        ),
        (one(tls_subjects="CN=a"), f"{WHERE}.tls_subjects: must be a list"),
        (one(tls_subjects=[1.5]), f"{WHERE}.tls_subjects[0]: must be a string"),
        (one(allow="*"), f"{WHERE}.allow: must be a list"),
        (one(allow=["*", None]), f"{WHERE}.allow[1]: is required"),
        (one(allow=[["GetData"]]), f"{WHERE}.allow[0]: must be a string"),
        # Key hashes: the hash, in lower case, of exactly 64 digits.
        (one(api_keys=["abc"]), f"{WHERE}.api_keys[0]: {BAD_HASH}"),
        (one(api_keys=["dmgw_secret"]), f"{WHERE}.api_keys[0]: {BAD_HASH}"),
        (one(api_keys=[HASH_A.upper()]), f"{WHERE}.api_keys[0]: {BAD_HASH}"),
        (one(api_keys=["SHA256:" + HASH_A[7:]]), f"{WHERE}.api_keys[0]: {BAD_HASH}"),
        (one(api_keys=[HASH_A[:-1]]), f"{WHERE}.api_keys[0]: {BAD_HASH}"),
        (one(api_keys=[HASH_A + "0"]), f"{WHERE}.api_keys[0]: {BAD_HASH}"),
        (one(api_keys=[HASH_A[7:]]), f"{WHERE}.api_keys[0]: {BAD_HASH}"),
        (one(api_keys=["sha1:" + "0" * 40]), f"{WHERE}.api_keys[0]: {BAD_HASH}"),
        (one(api_keys=[HASH_A[:-1] + "g"]), f"{WHERE}.api_keys[0]: {BAD_HASH}"),
        (one(api_keys=["x" + HASH_A]), f"{WHERE}.api_keys[0]: {BAD_HASH}"),
        (one(api_keys=[HASH_A, "sha256:"]), f"{WHERE}.api_keys[1]: {BAD_HASH}"),
        # RPC names: exact, case included.
        (one(allow=["GetDta"]), f"{WHERE}.allow[0]: unknown RPC 'GetDta' (one of {KNOWN_RPCS})"),
        (
            one(allow=["GetData", "getdata"]),
            f"{WHERE}.allow[1]: unknown RPC 'getdata' (one of {KNOWN_RPCS})",
        ),
        (
            one(allow=["ExecuteQuery:write"]),
            f"{WHERE}.allow[0]: unknown RPC 'ExecuteQuery:write' (one of {KNOWN_RPCS})",
        ),
        (one(allow=["Get*"]), f"{WHERE}.allow[0]: unknown RPC 'Get*' (one of {KNOWN_RPCS})"),
        (one(allow=["**"]), f"{WHERE}.allow[0]: unknown RPC '**' (one of {KNOWN_RPCS})"),
        (
            one(allow=["datamorph.gateway.v1.DataMorphGateway/GetData"]),
            f"{WHERE}.allow[0]: unknown RPC 'datamorph.gateway.v1.DataMorphGateway/GetData' "
            f"(one of {KNOWN_RPCS})",
        ),
        # rate_limit_per_s: a finite number above zero, not a boolean nor text.
        *(
            (one(rate_limit_per_s=rate), f"{WHERE}.rate_limit_per_s: must be a positive number")
            for rate in (
                0,
                0.0,
                -1,
                -0.5,
                True,
                False,
                "50",
                [1],
                float("nan"),
                float("inf"),
                10**400,
            )
        ),
        # The database login.
        (one(database_iam_auth="yes"), f"{WHERE}.database_iam_auth: must be true or false"),
        (one(database_iam_auth=1), f"{WHERE}.database_iam_auth: must be true or false"),
        (one(database_iam_auth=None), f"{WHERE}.database_iam_auth: must be true or false"),
        (one(database_user=5), f"{WHERE}.database_user: must be a string"),
        (one(database_secret=["s"]), f"{WHERE}.database_secret: must be a string"),
        (
            one(database_secret="prod/s"),
            f"{WHERE}: database_secret and database_iam_auth need database_user",
        ),
        (
            one(database_iam_auth=True),
            f"{WHERE}: database_secret and database_iam_auth need database_user",
        ),
        (
            one(database_user="u", database_secret="prod/s", database_iam_auth=True),
            f"{WHERE}: database_secret and database_iam_auth exclude each other",
        ),
        # Subjects that need their section.
        (
            {"principals": [{"name": "a", "jwt_subjects": ["x"]}]},
            f"{WHERE}.jwt_subjects: needs a top-level jwt: section",
        ),
        (
            {"aws_iam": IAM, "principals": [{"name": "a", "jwt_subjects": ["x"]}]},
            f"{WHERE}.jwt_subjects: needs a top-level jwt: section",
        ),
        (
            {"jwt": JWT, "principals": [{"name": "a", "aws_iam_arns": ["arn:*"]}]},
            f"{WHERE}.aws_iam_arns: needs a top-level aws_iam: section",
        ),
        (
            {"jwt": None, "principals": [{"name": "a", "jwt_subjects": ["x"]}]},
            f"{WHERE}.jwt_subjects: needs a top-level jwt: section",
        ),
    ],
)
def test_a_bad_policy_is_refused_with_one_line_naming_the_place(data: Any, message: str) -> None:
    assert refusal(data) == message


DUPLICATES = [
    (
        {"principals": [{"name": "a"}, {"name": "a"}]},
        "AUTH_POLICY_FILE principals[1].name: principal 'a' is named twice",
    ),
    (
        {"principals": [{"name": "a"}, {"name": "b"}, {"name": "a"}]},
        "AUTH_POLICY_FILE principals[2].name: principal 'a' is named twice",
    ),
    (
        {
            "principals": [
                {"name": "a", "api_keys": [HASH_A]},
                {"name": "b", "api_keys": [HASH_B, HASH_A]},
            ]
        },
        "AUTH_POLICY_FILE principals[1].api_keys[1]: this key is already listed for principal 'a'",
    ),
    (
        {"principals": [{"name": "a", "api_keys": [HASH_A, HASH_B, HASH_A]}]},
        "AUTH_POLICY_FILE principals[0].api_keys[2]: this key is already listed",
    ),
    (
        {
            "jwt": JWT,
            "principals": [
                {"name": "a", "jwt_subjects": ["s"]},
                {"name": "b", "jwt_subjects": ["s"]},
            ],
        },
        "AUTH_POLICY_FILE principals[1].jwt_subjects[0]: "
        "this subject is already listed for principal 'a'",
    ),
    (
        {"jwt": JWT, "principals": [{"name": "a", "jwt_subjects": ["s", "t", "s"]}]},
        "AUTH_POLICY_FILE principals[0].jwt_subjects[2]: this subject is already listed",
    ),
    (
        {
            "principals": [
                {"name": "a", "tls_subjects": ["CN=x"]},
                {"name": "b", "tls_subjects": ["CN=x"]},
            ]
        },
        "AUTH_POLICY_FILE principals[1].tls_subjects[0]: "
        "this subject is already listed for principal 'a'",
    ),
    (
        {"principals": [{"name": "a", "tls_subjects": ["CN=x", "CN=x"]}]},
        "AUTH_POLICY_FILE principals[0].tls_subjects[1]: this subject is already listed",
    ),
]


@pytest.mark.parametrize(("data", "message"), DUPLICATES)
def test_a_name_key_or_subject_listed_twice_is_refused(data: Any, message: str) -> None:
    """A key or subject is one caller: listed twice, which principal it is would be a guess."""
    assert refusal(data) == message


def test_the_same_text_may_be_a_key_hash_a_jwt_subject_and_a_tls_subject() -> None:
    """Each kind of credential has its own index: one value in several kinds is no clash."""
    policy = parse_policy(
        {
            "jwt": JWT,
            "principals": [
                {"name": "a", "api_keys": [HASH_A], "jwt_subjects": [HASH_A]},
                {"name": "b", "tls_subjects": [HASH_A], "aws_iam_arns": []},
            ],
        }
    )
    a, b = policy.principals
    assert (
        policy.by_key_hash[HASH_A],
        policy.by_jwt_subject[HASH_A],
        policy.by_tls_subject[HASH_A],
    ) == (a, a, b)


def test_an_iam_glob_listed_twice_is_allowed_and_the_first_principal_wins() -> None:
    policy = parse_policy(
        {
            "aws_iam": IAM,
            "principals": [
                {"name": "a", "aws_iam_arns": ["arn:*", "arn:*"]},
                {"name": "b", "aws_iam_arns": ["arn:*"]},
            ],
        }
    )
    assert policy.for_iam_arn("arn:aws:iam::1:role/r") is policy.principals[0]


def test_a_checked_policy_cannot_be_changed_and_its_parts_are_hashable() -> None:
    """The policy is shared by every call's thread and swapped whole on a reload: nothing may
    change it in place."""
    policy = lookup_policy()
    for part in (policy, policy.principals[0], policy.jwt, policy.aws_iam):
        with pytest.raises(dataclasses.FrozenInstanceError):
            part.name = "changed"  # type: ignore[misc, union-attr]
    assert len({*policy.principals, ANONYMOUS}) == 4
    assert hash(policy.jwt) == hash(JwtConfig(**JWT))
    assert hash(policy.aws_iam) == hash(IamConfig("datamorph-prod"))


def test_the_source_names_where_the_policy_came_from() -> None:
    with pytest.raises(ConfigError) as err:
        parse_policy({"extra": 1})  # by default, the file
    assert str(err.value).startswith("AUTH_POLICY_FILE extra: unknown key")
    assert refusal({"extra": 1}, "AUTH_POLICY").startswith("AUTH_POLICY extra: unknown key")
    assert refusal([], "AUTH_POLICY") == "AUTH_POLICY: must be a mapping"
    assert refusal(DUPLICATES[0][0], "AUTH_POLICY") == DUPLICATES[0][1].replace("_FILE", "")


# -- JWKS URLs and gateway ids: what the verifiers would refuse is refused when read -----------


@pytest.mark.parametrize(
    "url",
    [
        "http://idp.example.test/jwks",
        "http://localhost.attacker.example/jwks",  # starts like localhost, is not
        "http://127.0.0.1.nip.io/jwks",  # starts like 127.x, is a public name
        "http://10.0.0.1/jwks",
        "https:///jwks",  # no host
        "ftp://idp.example.test/jwks",
        "file:///etc/jwks.json",
        "idp.example.test/jwks",
    ],
)
def test_a_jwks_url_the_jwks_client_would_refuse_is_refused_when_read(url: str) -> None:
    """Regression: the check was a prefix test, so ``http://localhost.attacker.example``
    passed it, and the JWKS client's ValueError then stopped the start with a traceback
    (or, on a reload, escaped the authenticator and failed calls)."""
    from datamorph_gateway.auth.jwt import JwtVerifier

    data = {"jwt": {"issuer": "i", "audience": "a", "jwks_url": url}}
    assert refusal(data) == f"AUTH_POLICY_FILE jwt.jwks_url: {JWKS_URL}"
    with pytest.raises(ValueError, match="jwks_url"):
        JwtVerifier(issuer="i", audience="a", jwks_url=url)


def test_a_jwks_url_that_is_no_url_is_refused_when_read() -> None:
    data = {"jwt": {"issuer": "i", "audience": "a", "jwks_url": "https://[::1/jwks"}}
    assert refusal(data) == f"AUTH_POLICY_FILE jwt.jwks_url: {JWKS_URL}"


@pytest.mark.parametrize(
    "gateway_id",
    ["datamorph prod", "gateway\tid", "é", "x" * 257, "a\x7f"],
)
def test_a_gateway_id_the_iam_verifier_would_refuse_is_refused_when_read(gateway_id: str) -> None:
    """Regression: only the ends were checked, so ``datamorph prod`` passed and the IAM
    verifier's ValueError then stopped the start with a traceback."""
    from datamorph_gateway.auth.aws_iam import IamVerifier

    assert refusal({"aws_iam": {"gateway_id": gateway_id}}) == (
        "AUTH_POLICY_FILE aws_iam.gateway_id: "
        "must be 1 to 256 printable ASCII characters, no spaces"
    )
    with pytest.raises(ValueError, match="gateway_id"):
        IamVerifier(gateway_id=gateway_id, sts_endpoint_url="", region="us-east-1", timeout_s=1)


@pytest.mark.parametrize("gateway_id", ["datamorph-prod", "x" * 256, "!~", "a"])
def test_a_gateway_id_of_printable_ascii_is_kept(gateway_id: str) -> None:
    assert parse_policy({"aws_iam": {"gateway_id": gateway_id}}).aws_iam == IamConfig(gateway_id)


# -- reading the file or the JSON --------------------------------------------------------------


def test_a_yaml_file_is_read_as_utf8(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(
        f"principals:\n  - name: lecteur-é\n    api_keys: ['{HASH_A}']\n    allow: [GetData]\n",
        encoding="utf-8",
    )
    policy = load_policy(path=str(path))
    assert policy.principals == (
        Principal("lecteur-é", frozenset({"GetData"}), api_keys=(HASH_A,)),
    )


def test_with_neither_a_file_nor_text_there_is_no_policy_to_read() -> None:
    with pytest.raises(ConfigError) as err:
        load_policy()
    assert str(err.value) == "AUTH_POLICY: not valid JSON (Expecting value at line 1)"


def test_json_text_is_read_when_there_is_no_file() -> None:
    text = json.dumps({"principals": [{"name": "p", "allow": ["*"]}]})
    assert load_policy(text=text).principals == (Principal("p", frozenset({"*"})),)
    assert load_policy(path="", text=text) == load_policy(text=text)


def test_an_empty_file_is_an_empty_policy(tmp_path: Path) -> None:
    (tmp_path / "empty.yaml").write_text("")
    assert load_policy(path=str(tmp_path / "empty.yaml")) == Policy(())


def test_file_errors_name_the_setting_the_file_and_the_line(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    with pytest.raises(ConfigError) as err:
        load_policy(path=str(missing))
    assert (
        str(err.value) == f"AUTH_POLICY_FILE {missing}: cannot be read (No such file or directory)"
    )

    broken = tmp_path / "broken.yaml"
    broken.write_text("principals:\n  - name: a\n    allow: [GetData\n")
    with pytest.raises(ConfigError) as err:
        load_policy(path=str(broken))
    assert str(err.value) == f"AUTH_POLICY_FILE {broken}: not valid YAML at line 4"

    bad = tmp_path / "bad.yaml"
    bad.write_text("principals:\n  - name: a\n    allow: [Nope]\n")
    with pytest.raises(ConfigError) as err:
        load_policy(path=str(bad), text='{"principals": []}')  # the file wins
    assert str(err.value).startswith("AUTH_POLICY_FILE principals[0].allow[0]: unknown RPC 'Nope'")


def test_yaml_errors_without_a_position_still_say_not_valid_yaml(tmp_path: Path) -> None:
    path = tmp_path / "bad-bytes.yaml"
    path.write_bytes(b"principals: [\x00]\n")
    with pytest.raises(ConfigError) as err:
        load_policy(path=str(path))
    assert str(err.value) == f"AUTH_POLICY_FILE {path}: not valid YAML"  # a reader error: no line


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "AUTH_POLICY: not valid JSON (Expecting value at line 1)"),
        ('{"principals": [\n', "AUTH_POLICY: not valid JSON (Expecting value at line 2)"),
        ("principals: []", "AUTH_POLICY: not valid JSON (Expecting value at line 1)"),
        ('{"extra": 1}', "AUTH_POLICY extra: unknown key (known: aws_iam, jwt, principals)"),
        ("[]", "AUTH_POLICY: must be a mapping"),
        (
            '{"principals": [{"name": "a", "rate_limit_per_s": 1e400}]}',
            "AUTH_POLICY principals[0].rate_limit_per_s: must be a positive number",
        ),
    ],
)
def test_json_errors_name_auth_policy(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_policy(text=text)
    assert str(err.value) == message


# -- API keys and what verifiers return --------------------------------------------------------


def test_a_key_is_stored_as_the_sha256_of_its_utf8_bytes() -> None:
    assert (
        key_hash("test")
        == "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    )
    assert key_hash("clé") == "sha256:" + hashlib.sha256("clé".encode()).hexdigest()
    assert key_hash("clé") != "sha256:" + hashlib.sha256("clé".encode("latin-1")).hexdigest()
    assert HASH_PATTERN.match(key_hash(""))
    assert HASH_PATTERN.match(key_hash("x" * 10_000))


def test_new_keys_are_256_random_bits_with_a_recognisable_prefix() -> None:
    keys = {new_key() for _ in range(50)}
    assert len(keys) == 50
    assert KEY_PREFIX == "dmgw_"
    for key in keys:
        assert re.fullmatch(r"dmgw_[A-Za-z0-9_-]{43}", key)  # 32 bytes in unpadded base64url
        assert HASH_PATTERN.match(key_hash(key))
        assert not HASH_PATTERN.match(key)


def test_what_a_verifier_returns_and_raises() -> None:
    assert Verified("jwt", "svc-etl") == Verified(kind="jwt", subject="svc-etl", expires_at=None)
    verified = Verified("aws_iam", "arn:aws:iam::1:role/r", expires_at=1e9)
    with pytest.raises(dataclasses.FrozenInstanceError):
        verified.subject = "arn:aws:iam::1:role/admin"  # type: ignore[misc]
    assert {verified, Verified("aws_iam", "arn:aws:iam::1:role/r", 1e9)} == {verified}  # cacheable
    error = AuthError("expired", "the token has expired")
    assert (error.reason, error.message, str(error)) == (
        "expired",
        "the token has expired",
        "the token has expired",
    )
    assert error.args == ("the token has expired",)
