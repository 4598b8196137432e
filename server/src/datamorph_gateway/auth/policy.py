"""The auth policy: who the principals are, how each proves it, and what each may call.

Read from ``AUTH_POLICY_FILE`` (YAML) or ``AUTH_POLICY`` (the same keys as JSON, e.g. in
the config secret). Everything is checked when it is read: an unknown key, a malformed
key hash, an unknown RPC name, a duplicate principal or a key listed twice stops the
start (or, on a reload, keeps the old policy) with one line naming the place, such as
``AUTH_POLICY_FILE principals[2].allow[0]: unknown RPC 'GetDta'``.

The shape (docs/security.md has the whole story)::

    jwt:        {issuer, audience, jwks_file | jwks_url}        # optional
    aws_iam:    {gateway_id}                                    # optional
    principals:
      - name: etl-reader
        api_keys: ["sha256:<hex>"]
        jwt_subjects: ["svc-etl"]
        aws_iam_arns: ["arn:aws:iam::123456789012:role/datamorph-etl-*"]
        tls_subjects: ["spiffe://datamorph/etl", "CN=etl,O=DataMorph"]
        allow: [GetSchemas, GetData, "ExecuteQuery:read", StreamQuery, GetLogs, WatchLogs]
        database_user: etl_reader
        database_secret: prod/datamorph/etl_reader      # or database_iam_auth: true
        rate_limit_per_s: 50
"""

from __future__ import annotations

import fnmatch
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from datamorph.gateway.v1 import gateway_pb2 as pb
from datamorph_gateway.auth.keys import HASH_PATTERN
from datamorph_gateway.config_checks import is_loopback
from datamorph_gateway.errors import ConfigError

__all__ = [
    "ANONYMOUS",
    "RPC_NAMES",
    "IamConfig",
    "JwtConfig",
    "Policy",
    "Principal",
    "load_policy",
    "parse_policy",
]

# Every RPC of DataMorphGateway, from the service's own descriptor.
RPC_NAMES: frozenset[str] = frozenset(
    pb.DESCRIPTOR.services_by_name["DataMorphGateway"].methods_by_name
)
READ_QUERY = "ExecuteQuery:read"
OPEN_RPCS = frozenset({"Health"})

# What the IAM verifier takes as its id (auth/aws_iam.py): it is signed into callers' tokens.
_GATEWAY_ID = re.compile(r"[\x21-\x7e]{1,256}")

_TOP_KEYS = {"jwt", "aws_iam", "principals"}
_JWT_KEYS = {"issuer", "audience", "jwks_file", "jwks_url"}
_IAM_KEYS = {"gateway_id"}
_PRINCIPAL_KEYS = {
    "name",
    "api_keys",
    "jwt_subjects",
    "aws_iam_arns",
    "tls_subjects",
    "allow",
    "database_user",
    "database_secret",
    "database_iam_auth",
    "rate_limit_per_s",
}


@dataclass(frozen=True)
class JwtConfig:
    issuer: str
    audience: str
    jwks_file: str = ""
    jwks_url: str = ""


@dataclass(frozen=True)
class IamConfig:
    gateway_id: str


@dataclass(frozen=True)
class Principal:
    """A caller the policy names, and what it may do."""

    name: str
    allow: frozenset[str] = frozenset()
    # ExecuteQuery only as a read-only query ("ExecuteQuery:read" without "ExecuteQuery").
    read_only_queries: bool = False
    api_keys: tuple[str, ...] = ()
    jwt_subjects: tuple[str, ...] = ()
    aws_iam_arns: tuple[str, ...] = ()
    tls_subjects: tuple[str, ...] = ()
    database_user: str = ""
    database_secret: str = ""
    database_iam_auth: bool = False
    rate_limit_per_s: float | None = None

    def allows(self, rpc: str) -> bool:
        return "*" in self.allow or rpc in self.allow or rpc in OPEN_RPCS

    @property
    def anonymous(self) -> bool:
        return self is ANONYMOUS


# Who calls when no policy is configured (loopback only, see Authenticator).
ANONYMOUS = Principal("anonymous", allow=frozenset({"*"}))


@dataclass(frozen=True)
class Policy:
    """A checked policy, indexed for the lookups every call makes."""

    principals: tuple[Principal, ...]
    jwt: JwtConfig | None = None
    aws_iam: IamConfig | None = None
    by_key_hash: Mapping[str, Principal] = field(default_factory=dict)
    by_jwt_subject: Mapping[str, Principal] = field(default_factory=dict)
    by_tls_subject: Mapping[str, Principal] = field(default_factory=dict)

    def for_iam_arn(self, arn: str) -> Principal | None:
        """The first principal (in policy order) one of whose ARN globs matches."""
        for principal in self.principals:
            if any(fnmatch.fnmatchcase(arn, glob) for glob in principal.aws_iam_arns):
                return principal
        return None


def load_policy(*, path: str = "", text: str = "") -> Policy:
    """The policy in the YAML file at ``path``, or in ``text`` (JSON, from AUTH_POLICY)."""
    if path:
        source = "AUTH_POLICY_FILE"
        try:
            raw = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{source} {path}: cannot be read ({exc.strerror})") from None
        try:
            data = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"{source} {path}: not valid YAML{where}") from None
    else:
        source = "AUTH_POLICY"
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"{source}: not valid JSON ({exc.msg} at line {exc.lineno})"
            ) from None
    return parse_policy(data, source)


def parse_policy(data: Any, source: str = "AUTH_POLICY_FILE") -> Policy:
    """Check ``data`` (the parsed YAML/JSON) and build the policy; ConfigError names the place."""
    place = _Place(source)
    top = place.mapping(data, _TOP_KEYS)
    jwt = None
    if top.get("jwt") is not None:
        jwt = _jwt(place.at("jwt"), top["jwt"])
    iam = None
    if top.get("aws_iam") is not None:
        values = place.at("aws_iam").mapping(top["aws_iam"], _IAM_KEYS)
        at = place.at("aws_iam.gateway_id")
        iam = IamConfig(at.text(values.get("gateway_id"), required=True))
        if not _GATEWAY_ID.fullmatch(iam.gateway_id):
            raise at.error("must be 1 to 256 printable ASCII characters, no spaces")
    principals: list[Principal] = []
    names: set[str] = set()
    by_key: dict[str, Principal] = {}
    by_sub: dict[str, Principal] = {}
    by_tls: dict[str, Principal] = {}
    for index, item in enumerate(place.at("principals").sequence(top.get("principals", []))):
        at = place.at(f"principals[{index}]")
        principal = _principal(at, item)
        if principal.name in names:
            raise at.at("name").error(f"principal {principal.name!r} is named twice")
        names.add(principal.name)
        for kind, listed, index_by in (
            ("api_keys", principal.api_keys, by_key),
            ("jwt_subjects", principal.jwt_subjects, by_sub),
            ("tls_subjects", principal.tls_subjects, by_tls),
        ):
            for number, value in enumerate(listed):
                if value in index_by:
                    other = index_by[value].name
                    what = "key" if kind == "api_keys" else "subject"
                    raise at.at(f"{kind}[{number}]").error(
                        f"this {what} is already listed"
                        + (f" for principal {other!r}" if other != principal.name else "")
                    )
                index_by[value] = principal
        if principal.jwt_subjects and jwt is None:
            raise at.at("jwt_subjects").error("needs a top-level jwt: section")
        if principal.aws_iam_arns and iam is None:
            raise at.at("aws_iam_arns").error("needs a top-level aws_iam: section")
        principals.append(principal)
    return Policy(tuple(principals), jwt, iam, by_key, by_sub, by_tls)


def _jwt(place: _Place, data: Any) -> JwtConfig:
    values = place.mapping(data, _JWT_KEYS)
    config = JwtConfig(
        issuer=place.at("issuer").text(values.get("issuer"), required=True),
        audience=place.at("audience").text(values.get("audience"), required=True),
        jwks_file=place.at("jwks_file").text(values.get("jwks_file")),
        jwks_url=place.at("jwks_url").text(values.get("jwks_url")),
    )
    if bool(config.jwks_file) == bool(config.jwks_url):
        raise place.error("needs exactly one of jwks_file and jwks_url")
    if config.jwks_url and not _fetchable(config.jwks_url):
        raise place.at("jwks_url").error(
            "must be https:// with a host (http:// only on a loopback address)"
        )
    return config


def _fetchable(url: str) -> bool:
    """The JWKS client's own rule (auth/jwks.py), so that a policy that passes here also
    starts: a prefix test let ``http://localhost.example.com`` through, which the client then
    refused with a ValueError (a traceback at start, failed calls after a reload)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError:  # not a URL (an unclosed [ipv6])
        return False
    return (parts.scheme == "https" and host != "") or (
        parts.scheme == "http" and is_loopback(host)
    )


def _principal(place: _Place, data: Any) -> Principal:
    values = place.mapping(data, _PRINCIPAL_KEYS)
    name = place.at("name").text(values.get("name"), required=True)
    api_keys = place.at("api_keys").texts(values.get("api_keys"))
    for number, value in enumerate(api_keys):
        if not HASH_PATTERN.match(value):
            raise place.at(f"api_keys[{number}]").error(
                "must be sha256:<64 lower-case hex digits> (the hash, never the key: "
                "python -m datamorph_gateway.auth new-key NAME)"
            )
    allow: set[str] = set()
    for number, value in enumerate(place.at("allow").texts(values.get("allow"))):
        if value != "*" and value != READ_QUERY and value not in RPC_NAMES:
            known = ", ".join(sorted(RPC_NAMES | {READ_QUERY, "*"}))
            raise place.at(f"allow[{number}]").error(f"unknown RPC {value!r} (one of {known})")
        allow.add(value)
    read_only = READ_QUERY in allow and "ExecuteQuery" not in allow and "*" not in allow
    if read_only:
        allow.add("ExecuteQuery")
    allow.discard(READ_QUERY)
    rate = values.get("rate_limit_per_s")
    if rate is not None:
        rate = _positive(rate)
        if rate is None:
            raise place.at("rate_limit_per_s").error("must be a positive number")
    iam_auth = values.get("database_iam_auth", False)
    if not isinstance(iam_auth, bool):
        raise place.at("database_iam_auth").error("must be true or false")
    database_user = place.at("database_user").text(values.get("database_user"))
    database_secret = place.at("database_secret").text(values.get("database_secret"))
    if (database_secret or iam_auth) and not database_user:
        raise place.error("database_secret and database_iam_auth need database_user")
    if database_secret and iam_auth:
        raise place.error("database_secret and database_iam_auth exclude each other")
    return Principal(
        name=name,
        allow=frozenset(allow),
        read_only_queries=read_only,
        api_keys=tuple(api_keys),
        jwt_subjects=tuple(place.at("jwt_subjects").texts(values.get("jwt_subjects"))),
        aws_iam_arns=tuple(place.at("aws_iam_arns").texts(values.get("aws_iam_arns"))),
        tls_subjects=tuple(place.at("tls_subjects").texts(values.get("tls_subjects"))),
        database_user=database_user,
        database_secret=database_secret,
        database_iam_auth=iam_auth,
        rate_limit_per_s=rate,
    )


def _positive(value: Any) -> float | None:
    """``value`` as a finite number above zero, or None: not a boolean, not text, and not an
    int too large for a float (whose OverflowError would escape as no ConfigError)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if 0 < number < math.inf else None  # NaN is neither


class _Place:
    """Where a value is, for error messages: ``AUTH_POLICY_FILE principals[0].allow``."""

    def __init__(self, source: str, path: str = "") -> None:
        self.source = source
        self.path = path

    def at(self, child: str) -> _Place:
        joined = (
            child
            if not self.path
            else (f"{self.path}{child}" if child.startswith("[") else f"{self.path}.{child}")
        )
        return _Place(self.source, joined)

    def error(self, message: str) -> ConfigError:
        where = f"{self.source} {self.path}" if self.path else self.source
        return ConfigError(f"{where}: {message}")

    def mapping(self, data: Any, keys: set[str]) -> Mapping[str, Any]:
        if data is None:
            return {}
        if not isinstance(data, Mapping):
            raise self.error("must be a mapping")
        for key in data:
            if key not in keys:
                raise self.at(str(key)).error(f"unknown key (known: {', '.join(sorted(keys))})")
        return data

    def sequence(self, data: Any) -> Sequence[Any]:
        if data is None:
            return []
        if isinstance(data, (str, bytes)) or not isinstance(data, Sequence):
            raise self.error("must be a list")
        return data

    def text(self, data: Any, *, required: bool = False) -> str:
        if data is None or data == "":
            if required:
                raise self.error("is required")
            return ""
        if not isinstance(data, str):
            raise self.error("must be a string")
        if data != data.strip():
            raise self.error("must not start or end with white space")
        return data

    def texts(self, data: Any) -> list[str]:
        return [self.at(f"[{n}]").text(v, required=True) for n, v in enumerate(self.sequence(data))]
