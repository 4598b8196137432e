"""AWS IAM credentials: a presigned ``sts:GetCallerIdentity`` that the gateway sends to STS.

The scheme is that of ``aws-iam-authenticator`` (EKS) and Vault's ``iam`` auth method. A
Lambda presigns, with its own role's credentials, a request it never sends; the gateway
sends it to STS, and STS, having checked the signature, answers with the signer's ARN.
No secret is shared and the caller's key never leaves the Lambda. The token, made by
``datamorph_client.aws_iam`` and sent in the ``x-datamorph-aws-iam`` header, is::

    "dmgw-aws-v1." + base64url_nopad(json({"url": <presigned URL>, "gateway_id": <id>}))

where the URL is ``GET /?Action=GetCallerIdentity&Version=2011-06-15`` presigned with SigV4
in the query string, for at most 900 s, with ``X-Amz-SignedHeaders=host;x-datamorph-gateway-id``.

Binding to this gateway. The gateway id is signed but not carried in the URL: we add the
``x-datamorph-gateway-id`` header with *our* id when we forward the request, so STS accepts
the signature only if the caller signed our id. The ``gateway_id`` in the JSON only gives a
token meant for another gateway a clear early answer (``wrong_gateway``); the proof is STS's.

Where the request goes (no SSRF). We never connect to a host named in the token. We send
only the query string, rebuilt from the parameters we checked (so STS sees exactly what we
validated), to the configured endpoint (``sts_endpoint_url``, else ``sts.<region>``). SigV4
signs the ``host`` header, so we send the host the caller signed, which must be one of a
fixed list: the configured endpoint's, ``sts.<region>.amazonaws.com`` (``.com.cn`` in China)
and, when our endpoint's region is us-east-1, the global ``sts.amazonaws.com``. Anything
else is ``wrong_endpoint``, and so is a credential scope naming another region than our
endpoint's (us-east-1 for the global one): that endpoint could not check the signature.
Redirects are not followed; proxies come from the environment, as boto3's do.

What we check before that, each with its reason: size first (``too_large``); prefix,
base64url and JSON (``malformed``); gateway id (``wrong_gateway``); scheme https, or http
when our own endpoint is http, as moto's is, and host (``wrong_endpoint``); path ``/``, the
parameters of a presigned GetCallerIdentity and no others, each once, SigV4 with exactly our
two signed headers, ``X-Amz-Expires`` at most 900, and a signing time not in the future
beyond SigV4's 5-minute skew (``malformed``); an expiry still ahead (``expired``).

STS's answer. 200: the body (at most 64 KiB, with no DTD, so no entity expansion reaches
the parser) must be a ``GetCallerIdentityResponse`` with exactly one ``Arn``. 400, 401 and
403 are the caller's fault (``rejected``: a bad or expired signature, another gateway's id,
revoked credentials). A network error, a timeout, any other status or an answer that is not
STS's is ``sts_unavailable``: ours, not the caller's.

The subject a policy matches is the caller's ARN, with an assumed role's session ARN
``arn:<partition>:sts::<account>:assumed-role/<role>/<session>`` turned into the role's
``arn:<partition>:iam::<account>:role/<role>``. The role's *path* is not in what STS
returns, so a policy's ``aws_iam_arns`` must name the role without its path (or use a glob).
IAM users' ARNs (paths included) and every other ARN are kept as STS gave them.

Each identity is remembered under the token's SHA-256 until the signature expires (a
bounded LRU), so a Lambda reusing its token for 14 minutes costs one STS call. The price:
credentials revoked after a token was first seen keep passing for that token's remaining
life, at most 15 minutes, like any bearer token of that life.
"""

from __future__ import annotations

import base64
import binascii
import http.client
import json
import re
import threading
import time
import urllib.error
import urllib.request
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NoReturn
from urllib.parse import SplitResult, parse_qsl, quote, urlencode, urlsplit
from xml.etree import ElementTree

from datamorph_client.aws_iam import GATEWAY_ID_HEADER, MAX_EXPIRES_S, TOKEN_PREFIX
from datamorph_gateway.auth.credentials import AuthError, Verified
from datamorph_gateway.auth.keys import sha256

__all__ = ["IamVerifier", "subject_for"]

MAX_SKEW_S = 300.0
MAX_ANSWER_BYTES = 64 * 1024
_STS = "{https://sts.amazonaws.com/doc/2011-06-15/}"
_SIGNED_HEADERS = f"host;{GATEWAY_ID_HEADER}"
_REQUIRED = frozenset(
    {
        "Action",
        "Version",
        "X-Amz-Algorithm",
        "X-Amz-Credential",
        "X-Amz-Date",
        "X-Amz-Expires",
        "X-Amz-SignedHeaders",
        "X-Amz-Signature",
    }
)
_ALLOWED = _REQUIRED | {"X-Amz-Security-Token"}
_DEFAULT_PORTS = {"http": 80, "https": 443}
_GLOBAL_HOST = "sts.amazonaws.com"

_GATEWAY_ID = re.compile(r"[\x21-\x7e]{1,256}")
_REGION = re.compile(r"[a-z]{2}(?:-[a-z0-9]+)+")
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")
_AMZ_DATE = re.compile(r"[0-9]{8}T[0-9]{6}Z")
_EXPIRES = re.compile(r"[1-9][0-9]{0,5}")
_SIGNATURE = re.compile(r"[0-9a-f]{64}")
_ARN = re.compile(r"arn:aws[a-z-]*:(?:iam|sts)::[0-9]{12}:[\x21-\x7e]{1,2048}")
_ASSUMED_ROLE = re.compile(
    r"arn:(aws[a-z-]*):sts::([0-9]{12}):assumed-role/([A-Za-z0-9_+=,.@-]+)/[^/]+"
)
_ERROR_CODE = re.compile(rb"<Code>([A-Za-z][A-Za-z0-9.]{0,63})</Code>")


def subject_for(arn: str) -> str:
    """The policy subject for a caller's ARN: an assumed role's session becomes the role."""
    match = _ASSUMED_ROLE.fullmatch(arn)
    if match is None:
        return arn
    partition, account, role = match.groups()
    return f"arn:{partition}:iam::{account}:role/{role}"


def _regional_host(region: str) -> str:
    return f"sts.{region}.amazonaws.com" + (".cn" if region.startswith("cn-") else "")


def _signed_host(url: SplitResult) -> str:
    """The ``host`` header as SigV4 signs it: lower case, a port only when not the default."""
    host = url.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = url.port
    if port is not None and port != _DEFAULT_PORTS.get(url.scheme):
        host = f"{host}:{port}"
    return host


def _refuse(reason: str, message: str) -> NoReturn:
    raise AuthError(reason, message)


@dataclass(frozen=True)
class _Signed:
    """A presigned request that passed every check we can make without STS."""

    host: str
    query: str
    expires_at: float


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class IamVerifier:
    """Verifies ``x-datamorph-aws-iam`` tokens with STS (see the module's docstring)."""

    def __init__(
        self,
        *,
        gateway_id: str,
        sts_endpoint_url: str = "",
        region: str = "us-east-1",
        timeout_s: float = 5.0,
        max_token_bytes: int = 8192,
        cache_size: int = 10000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not _GATEWAY_ID.fullmatch(gateway_id):
            raise ValueError("gateway_id must be 1 to 256 printable ASCII characters, no spaces")
        if not _REGION.fullmatch(region):
            raise ValueError(f"not an AWS region: {region!r}")
        if timeout_s <= 0 or max_token_bytes <= 0 or cache_size < 0:
            raise ValueError("timeout_s and max_token_bytes must be positive, cache_size >= 0")
        endpoint = urlsplit(sts_endpoint_url or f"https://{_regional_host(region)}")
        if (
            endpoint.scheme not in _DEFAULT_PORTS
            or not endpoint.hostname
            or "@" in endpoint.netloc
            or endpoint.path not in ("", "/")
            or endpoint.query
            or endpoint.fragment
        ):
            raise ValueError("sts_endpoint_url must be http(s)://host[:port], nothing more")
        self._gateway_id = gateway_id
        self._endpoint = f"{endpoint.scheme}://{endpoint.netloc}/"
        self._schemes = {"https", endpoint.scheme}
        configured = _signed_host(endpoint)
        self._scope_region = "us-east-1" if configured == _GLOBAL_HOST else region
        self._hosts = {configured, _regional_host(region)}
        if self._scope_region == "us-east-1":
            self._hosts.add(_GLOBAL_HOST)
        self._timeout_s = timeout_s
        self._max_token_bytes = max_token_bytes
        self._cache_size = cache_size
        self._clock = clock
        self._opener = urllib.request.build_opener(_NoRedirects())
        self._cache: OrderedDict[bytes, Verified] = OrderedDict()
        self._lock = threading.Lock()

    def verify(self, token: str) -> Verified:
        """The caller's identity, from STS or remembered; ``AuthError`` if it does not check out."""
        if len(token) > self._max_token_bytes:
            _refuse("too_large", f"the AWS IAM token is over {self._max_token_bytes} bytes")
        raw = token.encode("utf-8", "surrogatepass")
        if len(raw) > self._max_token_bytes:
            _refuse("too_large", f"the AWS IAM token is over {self._max_token_bytes} bytes")
        key = sha256(raw).digest()
        now = self._clock()
        remembered = self._remembered(key, now)
        if remembered is not None:
            return remembered
        signed = self._check(token, now)
        arn = self._ask_sts(signed)
        verified = Verified(kind="aws_iam", subject=subject_for(arn), expires_at=signed.expires_at)
        self._remember(key, verified)
        return verified

    def _remembered(self, key: bytes, now: float) -> Verified | None:
        with self._lock:
            verified = self._cache.get(key)
            if verified is None:
                return None
            if verified.expires_at is not None and now < verified.expires_at:
                self._cache.move_to_end(key)
                return verified
            del self._cache[key]
            return None

    def _remember(self, key: bytes, verified: Verified) -> None:
        if not self._cache_size:
            return
        with self._lock:
            self._cache[key] = verified
            self._cache.move_to_end(key)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)

    def _check(self, token: str, now: float) -> _Signed:
        url, gateway_id = self._decode(token)
        if gateway_id != self._gateway_id:
            _refuse("wrong_gateway", "the AWS IAM token was made for another gateway")
        try:
            parts = urlsplit(url)
            host = _signed_host(parts)
        except ValueError:
            _refuse("malformed", "the AWS IAM token's URL is not a URL")
        if parts.scheme not in self._schemes or host not in self._hosts:
            _refuse("wrong_endpoint", "the AWS IAM token is not signed for this gateway's STS")
        if "@" in parts.netloc or parts.path != "/" or parts.fragment:
            _refuse("malformed", "the AWS IAM token's URL is not an STS request")
        try:
            pairs = parse_qsl(
                parts.query,
                keep_blank_values=True,
                strict_parsing=True,
                max_num_fields=len(_ALLOWED),
            )
        except ValueError:
            _refuse("malformed", "the AWS IAM token's URL has a malformed query")
        params = dict(pairs)
        if len(params) != len(pairs) or not _REQUIRED <= params.keys() <= _ALLOWED:
            _refuse("malformed", "the AWS IAM token is not a presigned GetCallerIdentity")
        if (
            params["Action"] != "GetCallerIdentity"
            or params["Version"] != "2011-06-15"
            or params["X-Amz-Algorithm"] != "AWS4-HMAC-SHA256"
            or not _SIGNATURE.fullmatch(params["X-Amz-Signature"])
        ):
            _refuse("malformed", "the AWS IAM token is not a SigV4 presigned GetCallerIdentity")
        if params["X-Amz-SignedHeaders"] != _SIGNED_HEADERS:
            _refuse("malformed", f"the AWS IAM token must sign exactly {_SIGNED_HEADERS}")
        self._check_scope(params["X-Amz-Credential"], params["X-Amz-Date"], self._scope_region)
        expires_at = self._expiry(params["X-Amz-Date"], params["X-Amz-Expires"], now)
        return _Signed(host, urlencode(pairs, quote_via=quote), expires_at)

    def _decode(self, token: str) -> tuple[str, str]:
        encoded = token.removeprefix(TOKEN_PREFIX)
        if encoded == token or not _BASE64URL.fullmatch(encoded):
            _refuse("malformed", f"not an AWS IAM token (expected {TOKEN_PREFIX}<base64url>)")
        try:
            body = json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
        except (ValueError, binascii.Error, RecursionError):
            _refuse("malformed", "the AWS IAM token does not decode to JSON")
        if (
            not isinstance(body, dict)
            or body.keys() != {"url", "gateway_id"}
            or not isinstance(body["url"], str)
            or not isinstance(body["gateway_id"], str)
        ):
            _refuse("malformed", 'the AWS IAM token must hold {"url", "gateway_id"} strings')
        return body["url"], body["gateway_id"]

    @staticmethod
    def _check_scope(credential: str, amz_date: str, region: str) -> None:
        scope = credential.split("/")
        if (
            len(scope) != 5
            or not scope[0]
            or scope[1] != amz_date[:8]
            or scope[3:] != ["sts", "aws4_request"]
        ):
            _refuse("malformed", "the AWS IAM token's credential scope is not STS's")
        if scope[2] != region:
            _refuse(
                "wrong_endpoint",
                f"the AWS IAM token is signed for region {scope[2]!r}, STS here is {region!r}",
            )

    @staticmethod
    def _expiry(amz_date: str, amz_expires: str, now: float) -> float:
        if not _AMZ_DATE.fullmatch(amz_date) or not _EXPIRES.fullmatch(amz_expires):
            _refuse("malformed", "the AWS IAM token's X-Amz-Date or X-Amz-Expires is malformed")
        try:
            signed_at = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        except ValueError:
            _refuse("malformed", "the AWS IAM token's X-Amz-Date is not a time")
        if int(amz_expires) > MAX_EXPIRES_S:
            _refuse("malformed", f"the AWS IAM token may last at most {MAX_EXPIRES_S} s")
        if signed_at.timestamp() > now + MAX_SKEW_S:
            _refuse("malformed", "the AWS IAM token is signed in the future (check the clock)")
        expires_at = signed_at.timestamp() + int(amz_expires)
        if expires_at <= now:
            _refuse("expired", "the AWS IAM token has expired; make a new one")
        return expires_at

    def _ask_sts(self, signed: _Signed) -> str:
        request = urllib.request.Request(  # noqa: S310 - our own endpoint, http(s) checked
            f"{self._endpoint}?{signed.query}",
            headers={"Host": signed.host, GATEWAY_ID_HEADER: self._gateway_id},
            method="GET",
        )
        try:
            status, body = self._fetch(request)
        except (OSError, http.client.HTTPException) as exc:
            raise AuthError("sts_unavailable", "STS could not be reached; try again") from exc
        if len(body) > MAX_ANSWER_BYTES:
            _refuse("sts_unavailable", "STS's answer was too large")
        if status == 200:
            return self._arn(body)
        if status in (400, 401, 403):
            code = _ERROR_CODE.search(body)
            why = f" ({code.group(1).decode()})" if code else ""
            _refuse("rejected", f"STS refused the AWS IAM token's signature{why}")
        _refuse("sts_unavailable", f"STS answered HTTP {status}; try again")

    def _fetch(self, request: urllib.request.Request) -> tuple[int, bytes]:
        try:
            answer = self._opener.open(request, timeout=self._timeout_s)
        except urllib.error.HTTPError as exc:
            answer = exc  # any status but 2xx, redirects included: it carries the body
        with answer:
            return int(answer.getcode()), answer.read(MAX_ANSWER_BYTES + 1)

    @staticmethod
    def _arn(body: bytes) -> str:
        if b"<!" in body:
            _refuse("sts_unavailable", "STS's answer carries a DTD; STS's never do")
        try:
            root = ElementTree.fromstring(body)  # noqa: S314 - capped, and no DTD (above)
        except ElementTree.ParseError:
            _refuse("sts_unavailable", "STS's answer is not XML")
        results = root.findall(f"{_STS}GetCallerIdentityResult")
        arns = root.findall(f"{_STS}GetCallerIdentityResult/{_STS}Arn")
        arn = (arns[0].text or "").strip() if len(arns) == 1 else ""
        if root.tag != f"{_STS}GetCallerIdentityResponse" or len(results) != 1 or not arn:
            _refuse("sts_unavailable", "STS's answer is not a GetCallerIdentityResponse")
        if not _ARN.fullmatch(arn):
            _refuse("sts_unavailable", "STS's answer does not hold an IAM ARN")
        return arn
