"""AWS IAM credentials for the gateway, with no shared secret (the Lambda's own role).

The caller proves who it is the way ``aws-iam-authenticator`` (EKS) and Vault's ``iam``
auth method do: it *presigns*, and never sends, an STS ``GetCallerIdentity`` request. The
gateway sends that request to STS itself; STS checks the signature and answers with the
ARN of whoever signed it. The caller's secret key never leaves the Lambda.

Token, sent in the ``x-datamorph-aws-iam`` header (gRPC metadata or REST header)::

    "dmgw-aws-v1." + base64url_nopad(json({"url": <presigned URL>, "gateway_id": <id>}))

The URL is a SigV4 query-string presigned ``GET /?Action=GetCallerIdentity&Version=2011-06-15``
(at most 900 s) whose ``X-Amz-SignedHeaders`` are exactly ``host;x-datamorph-gateway-id``.
The gateway id is signed but not in the URL: the gateway adds the header with *its own*
id when it forwards the request, so STS accepts the signature only at the gateway the
token was made for. A token captured in one gateway's logs is useless against another
gateway, and, being a GetCallerIdentity call, useless against any other AWS API.

boto3 is an optional extra (``pip install 'datamorph-gateway-client[aws]'``); Lambdas
have it already. It is imported only when a token is made.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import boto3
    from botocore.awsrequest import AWSRequest

__all__ = [
    "AWS_IAM_HEADER",
    "GATEWAY_ID_HEADER",
    "MAX_EXPIRES_S",
    "TOKEN_PREFIX",
    "IamTokenSource",
    "iam_token",
]

AWS_IAM_HEADER = "x-datamorph-aws-iam"
GATEWAY_ID_HEADER = "x-datamorph-gateway-id"
TOKEN_PREFIX = "dmgw-aws-v1."  # noqa: S105 - the format's tag, not a secret
MAX_EXPIRES_S = 900  # SigV4 allows a week; the gateway allows 15 minutes, as EKS does

_GATEWAY_ID = re.compile(r"[\x21-\x7e]{1,256}")  # one printable header token


def _check_gateway_id(gateway_id: str) -> None:
    if not _GATEWAY_ID.fullmatch(gateway_id):
        raise ValueError("gateway_id must be 1 to 256 printable ASCII characters, no spaces")


def _boto3() -> Any:
    try:
        import boto3
    except ImportError as exc:
        raise ImportError(
            "AWS IAM authentication needs boto3: pip install 'datamorph-gateway-client[aws]'"
        ) from exc
    return boto3


class _Presigner:
    """An STS client that signs GetCallerIdentity with our gateway id header."""

    def __init__(
        self,
        gateway_id: str,
        session: boto3.Session | None,
        region: str | None,
        sts_endpoint_url: str | None,
    ) -> None:
        _check_gateway_id(gateway_id)
        session = session or _boto3().Session()
        self._gateway_id = gateway_id
        self._client = session.client(
            "sts",
            region_name=region or session.region_name or "us-east-1",
            endpoint_url=sts_endpoint_url,
        )
        self._client.meta.events.register("before-sign.sts.GetCallerIdentity", self._add_gateway_id)

    def _add_gateway_id(self, request: AWSRequest, **_: Any) -> None:
        request.headers[GATEWAY_ID_HEADER] = self._gateway_id

    def token(self, expires_s: int) -> str:
        if not 1 <= expires_s <= MAX_EXPIRES_S:
            raise ValueError(f"expires_s must be between 1 and {MAX_EXPIRES_S}")
        url = self._client.generate_presigned_url(
            "get_caller_identity", Params={}, ExpiresIn=expires_s, HttpMethod="GET"
        )
        body = json.dumps({"url": url, "gateway_id": self._gateway_id}, separators=(",", ":"))
        return TOKEN_PREFIX + base64.urlsafe_b64encode(body.encode()).rstrip(b"=").decode()

    def close(self) -> None:
        self._client.close()


def iam_token(
    gateway_id: str,
    *,
    session: boto3.Session | None = None,
    region: str | None = None,
    sts_endpoint_url: str | None = None,
    expires_s: int = MAX_EXPIRES_S,
) -> str:
    """A token for the ``x-datamorph-aws-iam`` header, signed with ``session``'s credentials.

    ``gateway_id`` is the gateway's ``aws_iam.gateway_id``. ``session`` defaults to
    ``boto3.Session()`` (a Lambda's own role); ``region`` to the session's. Sign for the
    STS endpoint the gateway verifies with: same region, or ``sts_endpoint_url`` when the
    gateway is configured with one. Making a token sends nothing over the network.
    """
    presigner = _Presigner(gateway_id, session, region, sts_endpoint_url)
    try:
        return presigner.token(expires_s)
    finally:
        presigner.close()


class IamTokenSource:
    """Makes a token once and hands it out until ``renew_before_s`` before it expires.

    Create one per Lambda container, outside the handler; calling it is thread-safe.
    ``metadata`` fits ``GatewayClient(metadata_hook=...)``.
    """

    def __init__(
        self,
        gateway_id: str,
        *,
        session: boto3.Session | None = None,
        region: str | None = None,
        sts_endpoint_url: str | None = None,
        expires_s: int = MAX_EXPIRES_S,
        renew_before_s: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not 1 <= expires_s <= MAX_EXPIRES_S:
            raise ValueError(f"expires_s must be between 1 and {MAX_EXPIRES_S}")
        if not 0 <= renew_before_s < expires_s:
            raise ValueError("renew_before_s must be at least 0 and less than expires_s")
        self._presigner = _Presigner(gateway_id, session, region, sts_endpoint_url)
        self._expires_s = expires_s
        self._lifetime_s = expires_s - renew_before_s
        self._clock = clock
        self._lock = threading.Lock()
        self._token = ""
        self._renew_at = 0.0

    def __call__(self) -> str:
        with self._lock:
            now = self._clock()
            if not self._token or now >= self._renew_at:
                self._token = self._presigner.token(self._expires_s)
                self._renew_at = now + self._lifetime_s
            return self._token

    def metadata(self) -> list[tuple[str, str]]:
        return [(AWS_IAM_HEADER, self())]
