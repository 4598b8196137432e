"""AWS IAM authentication: tokens made by the client, verified by the gateway through moto.

moto runs as a real HTTP server (tests/fixtures/aws.py) and plays STS: it issues the
role's and the user's credentials and answers GetCallerIdentity with their ARNs. It cannot
answer a *presigned* GetCallerIdentity on its own: it never checks SigV4 signatures, its
multi-service server routes a request without an ``Authorization`` header to S3, and it
reads the caller's access key only from that header. So ``StsRelay``, in front of moto,
stands in for the part of STS that moto lacks, and says so:

- it checks the signature as STS does, with botocore's own SigV4 code and the secret key
  the test was given, against the ``Host`` and ``x-datamorph-gateway-id`` the gateway
  actually sent, and answers a mismatch with STS's 403 ``SignatureDoesNotMatch``;
- it then passes the request to moto with an ``Authorization`` header naming the access
  key, so that moto names the caller, and records what the gateway sent;
- a test may script its answer instead (errors, redirects, odd bodies, delays) or stop it.

What this proves is the gateway's side: the checks it makes before any request, that it
only ever talks to its configured endpoint, that the signed ``host`` and *its own* gateway
id are what it sends (so a token made for another gateway fails the signature check), how
it reads STS's answers, and its cache. That real STS computes signatures as botocore does
is AWS's to prove, not ours.
"""

from __future__ import annotations

import base64
import calendar
import hmac
import json
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import SplitResult, parse_qsl, quote, urlencode, urlsplit

import boto3
import pytest
from botocore.auth import SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from datamorph_client.aws_iam import (
    AWS_IAM_HEADER,
    GATEWAY_ID_HEADER,
    TOKEN_PREFIX,
    IamTokenSource,
    iam_token,
)
from datamorph_gateway.auth.aws_iam import IamVerifier, subject_for
from datamorph_gateway.auth.credentials import AuthError, Verified

from ..fixtures.aws import REGION

GATEWAY = "gw-test-1"
ACCOUNT = "123456789012"
_MAX_EXPIRES_S = 900


# ---------------------------------------------------------------------------- the relay


@dataclass
class Seen:
    """One request the relay received from the gateway, as the gateway sent it."""

    host: str
    gateway_id: str | None
    authorization: str | None
    query: list[tuple[str, str]]


@dataclass
class Scripted:
    """An answer the relay gives instead of checking and asking moto."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


@dataclass
class StsRelay:
    """STS's signature check in front of moto's GetCallerIdentity (see the module docstring)."""

    url: str
    moto_url: str
    secrets: dict[str, str] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    script: Scripted | None = None
    release: threading.Event = field(default_factory=threading.Event)

    def answer(self, handler: BaseHTTPRequestHandler) -> tuple[int, bytes, dict[str, str]]:
        split = urlsplit(handler.path)
        pairs = parse_qsl(split.query, keep_blank_values=True)
        self.seen.append(
            Seen(
                handler.headers.get("Host", ""),
                handler.headers.get(GATEWAY_ID_HEADER),
                handler.headers.get("Authorization"),
                pairs,
            )
        )
        if self.script is not None:
            self.release.wait(self.script.delay_s)
            return self.script.status, self.script.body, self.script.headers
        params = dict(pairs)
        key, _, region, service, _ = params["X-Amz-Credential"].split("/")
        secret = self.secrets.get(key)
        if secret is None:
            return 403, _sts_error("InvalidClientTokenId"), {}
        if not self._signature_matches(handler, split.path, pairs, key, secret, region, service):
            return 403, _sts_error("SignatureDoesNotMatch"), {}
        authorization = (
            f"AWS4-HMAC-SHA256 Credential={params['X-Amz-Credential']}, "
            f"SignedHeaders={params['X-Amz-SignedHeaders']}, "
            f"Signature={params['X-Amz-Signature']}"
        )
        forward = urllib.request.Request(  # noqa: S310 - moto's own URL
            f"{self.moto_url}/?{split.query}", headers={"Authorization": authorization}
        )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(forward, timeout=10) as reply:
                return reply.status, reply.read(), {}
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, exc.read(), {}

    @staticmethod
    def _signature_matches(
        handler: BaseHTTPRequestHandler,
        path: str,
        pairs: list[tuple[str, str]],
        key: str,
        secret: str,
        region: str,
        service: str,
    ) -> bool:
        params = dict(pairs)
        headers: dict[str, str] = {}
        for name in params["X-Amz-SignedHeaders"].split(";"):
            value = handler.headers.get(name)
            if value is None:
                return False
            headers[name] = value
        unsigned = urlencode([p for p in pairs if p[0] != "X-Amz-Signature"], quote_via=quote)
        request = AWSRequest(
            method="GET", url=f"https://{headers.get('host', '')}{path}?{unsigned}", headers=headers
        )
        request.context["timestamp"] = params["X-Amz-Date"]
        signer = SigV4QueryAuth(Credentials(key, secret), service, region)
        expected = signer.signature(
            signer.string_to_sign(request, signer.canonical_request(request)), request
        )
        return hmac.compare_digest(expected, params["X-Amz-Signature"])


def _sts_error(code: str) -> bytes:
    return (
        '<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error>'
        f"<Type>Sender</Type><Code>{code}</Code><Message>refused</Message>"
        "</Error></ErrorResponse>"
    ).encode()


def _relay_handler(relay: StsRelay) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = 5

        def do_GET(self) -> None:
            status, body, headers = relay.answer(self)
            try:
                self.send_response(status)
                self.send_header("Content-Type", "text/xml")
                self.send_header("Content-Length", str(len(body)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the gateway gave up waiting

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def relay(moto_url: str) -> Iterator[StsRelay]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    relay = StsRelay(url=f"http://127.0.0.1:{server.server_address[1]}", moto_url=moto_url)
    server.RequestHandlerClass = _relay_handler(relay)
    server.daemon_threads = False
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="sts-relay"
    )
    thread.start()
    try:
        yield relay
    finally:
        relay.release.set()
        server.shutdown()
        server.server_close()
        thread.join(10)


# ------------------------------------------------------------------ callers and helpers


@dataclass
class Caller:
    """Credentials moto issued, and the ARN policies will name them by."""

    session: boto3.session.Session
    subject: str


def _caller_session(relay: StsRelay, key: str, secret: str, token: str | None = None) -> Any:
    relay.secrets[key] = secret
    return boto3.session.Session(
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        aws_session_token=token,
        region_name=REGION,
    )


@pytest.fixture
def role_caller(moto_url: str, aws_session: boto3.session.Session, relay: StsRelay) -> Caller:
    """A role with a path, assumed as a Lambda's execution role is."""
    name = f"dmgw-orchestrator-{uuid.uuid4().hex[:8]}"
    iam = aws_session.client("iam", endpoint_url=moto_url)
    sts = aws_session.client("sts", endpoint_url=moto_url)
    try:
        arn = iam.create_role(RoleName=name, Path="/lambda/", AssumeRolePolicyDocument="{}")
        creds = sts.assume_role(RoleArn=arn["Role"]["Arn"], RoleSessionName="fn-1")["Credentials"]
    finally:
        iam.close()
        sts.close()
    session = _caller_session(
        relay, creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"]
    )
    return Caller(session, f"arn:aws:iam::{ACCOUNT}:role/{name}")


@pytest.fixture
def user_caller(moto_url: str, aws_session: boto3.session.Session, relay: StsRelay) -> Caller:
    name = f"dmgw-script-{uuid.uuid4().hex[:8]}"
    iam = aws_session.client("iam", endpoint_url=moto_url)
    try:
        iam.create_user(UserName=name, Path="/team/")
        key = iam.create_access_key(UserName=name)["AccessKey"]
    finally:
        iam.close()
    session = _caller_session(relay, key["AccessKeyId"], key["SecretAccessKey"])
    return Caller(session, f"arn:aws:iam::{ACCOUNT}:user/team/{name}")


@pytest.fixture
def verifier(relay: StsRelay) -> IamVerifier:
    return IamVerifier(gateway_id=GATEWAY, sts_endpoint_url=relay.url, timeout_s=5.0)


class Clock:
    def __init__(self, offset_s: float = 0.0) -> None:
        self.now = time.time() + offset_s

    def __call__(self) -> float:
        return self.now


def _decode(token: str) -> dict[str, Any]:
    encoded = token.removeprefix(TOKEN_PREFIX)
    body: dict[str, Any] = json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
    return body


def _encode(body: Any) -> str:
    raw = json.dumps(body).encode() if not isinstance(body, bytes) else body
    return TOKEN_PREFIX + base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _with_url(token: str, edit: Callable[[SplitResult], SplitResult]) -> str:
    body = _decode(token)
    body["url"] = edit(urlsplit(body["url"])).geturl()
    return _encode(body)


def _with_param(token: str, name: str, value: str | None) -> str:
    def edit(url: SplitResult) -> SplitResult:
        pairs = [(k, v) for k, v in parse_qsl(url.query) if k != name]
        if value is not None:
            pairs.append((name, value))
        return url._replace(query=urlencode(pairs, quote_via=quote))

    return _with_url(token, edit)


def _params(token: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(_decode(token)["url"]).query))


def _refused(verifier: IamVerifier, token: str, reason: str) -> AuthError:
    with pytest.raises(AuthError) as caught:
        verifier.verify(token)
    assert caught.value.reason == reason, caught.value.message
    assert len(token) < 16 or token not in caught.value.message  # short: the prefix
    return caught.value


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A port that must never see a connection from the gateway."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.setblocking(False)
    try:
        yield sock
    finally:
        sock.close()


def _never_connected(sock: socket.socket) -> bool:
    try:
        conn, _ = sock.accept()
    except BlockingIOError:
        return True
    conn.close()
    return False


# ------------------------------------------------------------------------ who is calling


def test_an_assumed_role_is_named_by_its_role(
    verifier: IamVerifier, role_caller: Caller, relay: StsRelay
) -> None:
    token = iam_token(GATEWAY, session=role_caller.session, sts_endpoint_url=relay.url)

    verified = verifier.verify(token)

    params = _params(token)
    signed_at = calendar.timegm(time.strptime(params["X-Amz-Date"], "%Y%m%dT%H%M%SZ"))
    assert verified == Verified("aws_iam", role_caller.subject, signed_at + _MAX_EXPIRES_S)
    [seen] = relay.seen
    assert seen.host == urlsplit(relay.url).netloc
    assert seen.gateway_id == GATEWAY
    assert seen.authorization is None  # the caller's signature travels only in the query
    assert dict(seen.query) == params


def test_an_iam_user_keeps_its_user_arn(
    verifier: IamVerifier, user_caller: Caller, relay: StsRelay
) -> None:
    token = iam_token(GATEWAY, session=user_caller.session, sts_endpoint_url=relay.url)

    assert verifier.verify(token).subject == user_caller.subject


@pytest.mark.parametrize(
    ("arn", "subject"),
    [
        (
            "arn:aws:sts::123456789012:assumed-role/orchestrator/fn-1",
            "arn:aws:iam::123456789012:role/orchestrator",
        ),
        (
            "arn:aws-cn:sts::123456789012:assumed-role/reader/i-0abc@x.example",
            "arn:aws-cn:iam::123456789012:role/reader",
        ),
        (
            "arn:aws-us-gov:sts::123456789012:assumed-role/AWSReservedSSO_Dev_1a2b/jane",
            "arn:aws-us-gov:iam::123456789012:role/AWSReservedSSO_Dev_1a2b",
        ),
        ("arn:aws:iam::123456789012:user/team/ci", "arn:aws:iam::123456789012:user/team/ci"),
        ("arn:aws:iam::123456789012:root", "arn:aws:iam::123456789012:root"),
        (
            "arn:aws:sts::123456789012:federated-user/bob",
            "arn:aws:sts::123456789012:federated-user/bob",
        ),
    ],
)
def test_policy_subjects_from_caller_arns(arn: str, subject: str) -> None:
    assert subject_for(arn) == subject


# ------------------------------------------------------- binding to this gateway and STS


def test_a_token_for_another_gateway_is_refused_before_sts(
    verifier: IamVerifier, role_caller: Caller, relay: StsRelay
) -> None:
    token = iam_token("gw-other", session=role_caller.session, sts_endpoint_url=relay.url)

    _refused(verifier, token, "wrong_gateway")
    assert relay.seen == []


def test_a_token_relabelled_for_this_gateway_fails_the_signature(
    verifier: IamVerifier, role_caller: Caller, relay: StsRelay
) -> None:
    """The JSON's id is a courtesy: what STS checks is the header we add, with our id."""
    other = iam_token("gw-other", session=role_caller.session, sts_endpoint_url=relay.url)
    relabelled = _encode({**_decode(other), "gateway_id": GATEWAY})

    error = _refused(verifier, relabelled, "rejected")

    assert "SignatureDoesNotMatch" in error.message
    assert [seen.gateway_id for seen in relay.seen] == [GATEWAY]


def test_the_gateway_id_must_be_signed(
    verifier: IamVerifier, role_caller: Caller, relay: StsRelay
) -> None:
    sts = role_caller.session.client("sts", endpoint_url=relay.url)
    try:
        url = sts.generate_presigned_url(
            "get_caller_identity", Params={}, ExpiresIn=900, HttpMethod="GET"
        )
    finally:
        sts.close()
    assert dict(parse_qsl(urlsplit(url).query))["X-Amz-SignedHeaders"] == "host"

    _refused(verifier, _encode({"url": url, "gateway_id": GATEWAY}), "malformed")
    assert relay.seen == []


@pytest.mark.parametrize(
    "netloc",
    ["LISTENER", "sts.amazonaws.com.evil.example", "sts.eu-west-1.amazonaws.com", "evil.example"],
)
def test_a_token_for_another_host_is_refused_and_that_host_never_called(
    verifier: IamVerifier,
    role_caller: Caller,
    relay: StsRelay,
    listener: socket.socket,
    netloc: str,
) -> None:
    if netloc == "LISTENER":
        netloc = f"127.0.0.1:{listener.getsockname()[1]}"
    token = iam_token(GATEWAY, session=role_caller.session, sts_endpoint_url=relay.url)

    _refused(verifier, _with_url(token, lambda url: url._replace(netloc=netloc)), "wrong_endpoint")
    assert relay.seen == []
    assert _never_connected(listener)


@pytest.mark.parametrize(
    "sts_url", ["https://sts.amazonaws.com", "https://sts.us-east-1.amazonaws.com"]
)
def test_tokens_signed_for_aws_sts_hosts_go_to_our_endpoint_with_their_host(
    verifier: IamVerifier, role_caller: Caller, relay: StsRelay, sts_url: str
) -> None:
    token = iam_token(GATEWAY, session=role_caller.session, sts_endpoint_url=sts_url)

    assert verifier.verify(token).subject == role_caller.subject
    [seen] = relay.seen
    assert seen.host == urlsplit(sts_url).netloc  # the signed host, sent to our endpoint


def test_the_signed_host_must_match_the_host_header(
    verifier: IamVerifier, role_caller: Caller, relay: StsRelay
) -> None:
    """Swapping one allowed host for another breaks the signature: the host is signed."""
    token = iam_token(GATEWAY, session=role_caller.session, sts_endpoint_url=relay.url)
    swapped = _with_url(token, lambda url: url._replace(scheme="https", netloc="sts.amazonaws.com"))

    assert "SignatureDoesNotMatch" in _refused(verifier, swapped, "rejected").message


def test_the_credential_scope_must_name_the_hosts_region(
    verifier: IamVerifier, role_caller: Caller, relay: StsRelay
) -> None:
    token = iam_token(
        GATEWAY,
        session=role_caller.session,
        region="eu-west-1",
        sts_endpoint_url="https://sts.amazonaws.com",
    )

    _refused(verifier, token, "wrong_endpoint")
    assert relay.seen == []


def test_a_gateway_in_another_region_takes_that_regions_tokens(
    role_caller: Caller, relay: StsRelay
) -> None:
    verifier = IamVerifier(gateway_id=GATEWAY, sts_endpoint_url=relay.url, region="eu-west-1")
    regional = iam_token(
        GATEWAY, session=role_caller.session, region="eu-west-1", sts_endpoint_url=relay.url
    )
    global_ = iam_token(
        GATEWAY, session=role_caller.session, sts_endpoint_url="https://sts.amazonaws.com"
    )

    assert verifier.verify(regional).subject == role_caller.subject
    _refused(verifier, global_, "wrong_endpoint")  # signed for us-east-1
    assert len(relay.seen) == 1


def test_https_is_required_unless_our_endpoint_is_http(
    role_caller: Caller, listener: socket.socket
) -> None:
    endpoint = f"https://127.0.0.1:{listener.getsockname()[1]}"
    verifier = IamVerifier(gateway_id=GATEWAY, sts_endpoint_url=endpoint)
    plain = "http://sts.us-east-1.amazonaws.com"  # an allowed host, over http

    _refused(
        verifier,
        iam_token(GATEWAY, session=role_caller.session, sts_endpoint_url=plain),
        "wrong_endpoint",
    )
    assert _never_connected(listener)


# ------------------------------------------------------------------- the request itself


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("Action", "AssumeRole"),
        ("Version", "2011-06-16"),
        ("X-Amz-Algorithm", "AWS4-ECDSA-P256-SHA256"),
        ("X-Amz-SignedHeaders", "host;x-datamorph-gateway-id;x-extra"),
        ("X-Amz-Signature", "not-hex"),
        ("X-Amz-Signature", None),
        ("X-Amz-Credential", "AKIDEXAMPLE/20200101/us-east-1/iam/aws4_request"),
        ("X-Amz-Expires", "901"),
        ("X-Amz-Expires", "0"),
        ("X-Amz-Date", "2020-01-01T00:00:00Z"),
        ("RoleArn", "arn:aws:iam::123456789012:role/admin"),
    ],
)
def test_only_a_presigned_get_caller_identity_passes(
    verifier: IamVerifier, role_caller: Caller, relay: StsRelay, name: str, value: str | None
) -> None:
    token = iam_token(GATEWAY, session=role_caller.session, sts_endpoint_url=relay.url)

    _refused(verifier, _with_param(token, name, value), "malformed")
    assert relay.seen == []


def test_a_parameter_given_twice_is_refused(
    verifier: IamVerifier, role_caller: Caller, relay: StsRelay
) -> None:
    token = iam_token(GATEWAY, session=role_caller.session, sts_endpoint_url=relay.url)
    twice = _with_url(token, lambda url: url._replace(query=url.query + "&Action=AssumeRole"))

    _refused(verifier, twice, "malformed")
    assert relay.seen == []


@pytest.mark.parametrize(
    "edit",
    [
        lambda url: url._replace(path="/admin"),
        lambda url: url._replace(fragment="x"),
        lambda url: url._replace(netloc="user@" + url.netloc),
    ],
    ids=["path", "fragment", "userinfo"],
)
def test_the_url_must_be_sts_root(
    verifier: IamVerifier,
    role_caller: Caller,
    relay: StsRelay,
    edit: Callable[[SplitResult], SplitResult],
) -> None:
    token = iam_token(GATEWAY, session=role_caller.session, sts_endpoint_url=relay.url)

    _refused(verifier, _with_url(token, edit), "malformed")
    assert relay.seen == []


def test_an_expired_token_is_refused_without_asking_sts(
    role_caller: Caller, relay: StsRelay
) -> None:
    token = iam_token(
        GATEWAY, session=role_caller.session, sts_endpoint_url=relay.url, expires_s=60
    )
    later = IamVerifier(gateway_id=GATEWAY, sts_endpoint_url=relay.url, clock=Clock(61))

    _refused(later, token, "expired")
    assert relay.seen == []


def test_a_token_signed_in_the_future_is_refused(role_caller: Caller, relay: StsRelay) -> None:
    token = iam_token(GATEWAY, session=role_caller.session, sts_endpoint_url=relay.url)
    earlier = IamVerifier(gateway_id=GATEWAY, sts_endpoint_url=relay.url, clock=Clock(-400))

    assert "future" in _refused(earlier, token, "malformed").message
    assert relay.seen == []


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@pytest.mark.parametrize(
    "token",
    [
        "",
        " ",
        "\t\r\n",
        "garbage",
        "Bearer abc.def.ghi",
        TOKEN_PREFIX,
        TOKEN_PREFIX + "!!!!",
        TOKEN_PREFIX + "a",
        TOKEN_PREFIX + "é",
        "k8s-aws-v1.aHR0cHM6Ly9zdHMuYW1hem9uYXdzLmNvbS8",
        _encode(b"not json"),
        _encode(b"\xff\xfe"),
        _encode([]),
        _encode({"url": 1, "gateway_id": GATEWAY}),
        _encode({"url": "https://sts.amazonaws.com/", "gateway_id": GATEWAY, "x": 1}),
        _encode({"gateway_id": GATEWAY}),
        _encode(_nested(3000)),
        _encode({"url": "https://[::1/", "gateway_id": GATEWAY}),
        _encode({"url": "https://sts.amazonaws.com:99999/", "gateway_id": GATEWAY}),
    ],
)
def test_garbage_is_malformed(verifier: IamVerifier, relay: StsRelay, token: str) -> None:
    _refused(verifier, token, "malformed")
    assert relay.seen == []


def test_surrounding_whitespace_is_not_trimmed(
    verifier: IamVerifier, role_caller: Caller, relay: StsRelay
) -> None:
    token = iam_token(GATEWAY, session=role_caller.session, sts_endpoint_url=relay.url)

    _refused(verifier, f" {token} ", "malformed")


def test_an_oversized_token_is_refused_before_it_is_read(
    verifier: IamVerifier, relay: StsRelay
) -> None:
    _refused(verifier, TOKEN_PREFIX + "A" * 64 * 1024, "too_large")
    _refused(verifier, TOKEN_PREFIX + "é" * 5000, "too_large")  # 5012 characters, 10012 bytes
    assert relay.seen == []


# -------------------------------------------------------------------------------- cache


def test_a_verified_token_is_remembered_until_its_signature_expires(
    role_caller: Caller, relay: StsRelay
) -> None:
    clock = Clock()
    verifier = IamVerifier(gateway_id=GATEWAY, sts_endpoint_url=relay.url, clock=clock)
    token = iam_token(GATEWAY, session=role_caller.session, sts_endpoint_url=relay.url)
    first = verifier.verify(token)
    assert first.expires_at is not None

    relay.script = Scripted(503)  # STS is down: only the cache can answer now
    clock.now = first.expires_at - 1
    assert verifier.verify(token) == first
    assert len(relay.seen) == 1

    clock.now = first.expires_at
    _refused(verifier, token, "expired")
    assert len(relay.seen) == 1


def test_the_cache_is_bounded(role_caller: Caller, relay: StsRelay) -> None:
    verifier = IamVerifier(gateway_id=GATEWAY, sts_endpoint_url=relay.url, cache_size=1)
    one, two = (
        iam_token(GATEWAY, session=role_caller.session, sts_endpoint_url=relay.url, expires_s=s)
        for s in (900, 899)
    )

    for token in (one, one, two, one):
        verifier.verify(token)

    assert len(relay.seen) == 3


def test_a_refusal_is_not_remembered(
    verifier: IamVerifier, role_caller: Caller, relay: StsRelay
) -> None:
    token = iam_token(GATEWAY, session=role_caller.session, sts_endpoint_url=relay.url)
    relay.script = Scripted(503)
    _refused(verifier, token, "sts_unavailable")

    relay.script = None
    assert verifier.verify(token).subject == role_caller.subject


# --------------------------------------------------------------------------- STS answers


def test_sts_unreachable_is_not_the_callers_fault(role_caller: Caller) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    verifier = IamVerifier(gateway_id=GATEWAY, sts_endpoint_url=dead, timeout_s=2.0)

    _refused(
        verifier,
        iam_token(GATEWAY, session=role_caller.session, sts_endpoint_url=dead),
        "sts_unavailable",
    )


def test_a_slow_sts_times_out(role_caller: Caller, relay: StsRelay) -> None:
    verifier = IamVerifier(gateway_id=GATEWAY, sts_endpoint_url=relay.url, timeout_s=0.3)
    relay.script = Scripted(200, b"", delay_s=5.0)

    token = iam_token(GATEWAY, session=role_caller.session, sts_endpoint_url=relay.url)
    _refused(verifier, token, "sts_unavailable")


def test_a_redirect_is_not_followed(
    verifier: IamVerifier, role_caller: Caller, relay: StsRelay, listener: socket.socket
) -> None:
    elsewhere = f"http://127.0.0.1:{listener.getsockname()[1]}/"
    relay.script = Scripted(307, headers={"Location": elsewhere})

    token = iam_token(GATEWAY, session=role_caller.session, sts_endpoint_url=relay.url)
    _refused(verifier, token, "sts_unavailable")
    assert _never_connected(listener)


_LAUGHS = (
    b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
    b'<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>'
    b'<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
    b"<GetCallerIdentityResult><Arn>&lol3;</Arn></GetCallerIdentityResult>"
    b"</GetCallerIdentityResponse>"
)


def _identity(*arns: str, root: str = "GetCallerIdentityResponse") -> bytes:
    inner = "".join(f"<Arn>{arn}</Arn>" for arn in arns)
    return (
        f'<{root} xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
        f"<GetCallerIdentityResult>{inner}</GetCallerIdentityResult></{root}>"
    ).encode()


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (Scripted(500, _sts_error("InternalFailure")), "sts_unavailable"),
        (Scripted(429, _sts_error("Throttling")), "sts_unavailable"),
        (Scripted(404, b"not here"), "sts_unavailable"),
        (Scripted(403, _sts_error("ExpiredToken")), "rejected"),
        (Scripted(400, _sts_error("InvalidClientTokenId")), "rejected"),
        (Scripted(200, b"not xml"), "sts_unavailable"),
        (Scripted(200, _LAUGHS), "sts_unavailable"),
        (
            Scripted(200, _identity("arn:aws:iam::123456789012:root") + b" " * 65536),
            "sts_unavailable",
        ),
        (Scripted(200, _identity()), "sts_unavailable"),
        (Scripted(200, _identity("arn:aws:iam::1:root", "arn:aws:iam::2:root")), "sts_unavailable"),
        (Scripted(200, _identity("arn:aws:s3:::bucket")), "sts_unavailable"),
        (
            Scripted(200, _identity("arn:aws:iam::123456789012:root", root="AssumeRoleResponse")),
            "sts_unavailable",
        ),
        (Scripted(200, _identity("arn:aws:iam::123456789012:root")), ""),
    ],
)
def test_how_sts_answers_are_read(
    verifier: IamVerifier, role_caller: Caller, relay: StsRelay, answer: Scripted, reason: str
) -> None:
    relay.script = answer
    token = iam_token(GATEWAY, session=role_caller.session, sts_endpoint_url=relay.url)

    if reason:
        _refused(verifier, token, reason)
    else:
        assert verifier.verify(token).subject == "arn:aws:iam::123456789012:root"


def test_an_answer_that_is_not_sts_s_is_not_believed(moto_url: str, role_caller: Caller) -> None:
    """moto sends a presigned GET with no Authorization header to S3: it must not pass."""
    verifier = IamVerifier(gateway_id=GATEWAY, sts_endpoint_url=moto_url)

    token = iam_token(GATEWAY, session=role_caller.session, sts_endpoint_url=moto_url)
    _refused(verifier, token, "sts_unavailable")


# -------------------------------------------------------------------------------- setup


@pytest.mark.parametrize(
    "settings",
    [
        {"gateway_id": ""},
        {"gateway_id": "has space"},
        {"gateway_id": GATEWAY, "region": "Not a region"},
        {"gateway_id": GATEWAY, "sts_endpoint_url": "ftp://sts.amazonaws.com"},
        {"gateway_id": GATEWAY, "sts_endpoint_url": "https://sts.amazonaws.com/prefix"},
        {"gateway_id": GATEWAY, "sts_endpoint_url": "https://user@sts.amazonaws.com"},
        {"gateway_id": GATEWAY, "timeout_s": 0},
        {"gateway_id": GATEWAY, "cache_size": -1},
    ],
)
def test_a_misconfigured_verifier_does_not_start(settings: dict[str, Any]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - every message differs
        IamVerifier(**settings)


# ------------------------------------------------------------------------------ client


def test_the_token_is_the_documented_format(role_caller: Caller) -> None:
    token = iam_token(GATEWAY, session=role_caller.session, expires_s=300)

    body = _decode(token)
    url = urlsplit(body["url"])
    params = dict(parse_qsl(url.query))
    assert AWS_IAM_HEADER == "x-datamorph-aws-iam"
    assert token.startswith("dmgw-aws-v1.")
    assert "=" not in token
    assert body["gateway_id"] == GATEWAY
    assert (url.scheme, url.path) == ("https", "/")
    assert url.netloc in ("sts.us-east-1.amazonaws.com", "sts.amazonaws.com")
    assert params["Action"] == "GetCallerIdentity"
    assert params["X-Amz-SignedHeaders"] == "host;x-datamorph-gateway-id"
    assert params["X-Amz-Expires"] == "300"
    assert "X-Amz-Security-Token" in params


@pytest.fixture
def counted(role_caller: Caller) -> tuple[Caller, list[str]]:
    """The caller, and a list that grows by one each time a token is signed."""
    signed: list[str] = []
    role_caller.session.events.register(
        "before-sign.sts.GetCallerIdentity", lambda **kwargs: signed.append("signed")
    )
    return role_caller, signed


def test_a_token_source_reuses_its_token_until_a_minute_before_expiry(
    counted: tuple[Caller, list[str]],
) -> None:
    caller, signed = counted
    clock = Clock()
    start = clock.now
    source = IamTokenSource(GATEWAY, session=caller.session, clock=clock)

    token = source()
    clock.now = start + 839
    assert source() == token
    assert source.metadata() == [(AWS_IAM_HEADER, token)]
    assert len(signed) == 1

    clock.now = start + 840
    source()
    assert len(signed) == 2
    clock.now = start + 1000
    source()
    assert len(signed) == 2


def test_a_token_source_signs_once_for_many_threads(counted: tuple[Caller, list[str]]) -> None:
    caller, signed = counted
    source = IamTokenSource(GATEWAY, session=caller.session)
    barrier = threading.Barrier(8)
    tokens: list[str] = []

    def call() -> None:
        barrier.wait()
        tokens.append(source())

    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)

    assert len(set(tokens)) == 1
    assert len(tokens) == 8
    assert len(signed) == 1


@pytest.mark.parametrize(
    "settings",
    [
        {"gateway_id": "two words"},
        {"gateway_id": GATEWAY, "expires_s": 901},
        {"gateway_id": GATEWAY, "expires_s": 0},
        {"gateway_id": GATEWAY, "expires_s": 60, "renew_before_s": 60},
    ],
)
def test_a_token_source_refuses_bad_settings(role_caller: Caller, settings: dict[str, Any]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - every message differs
        IamTokenSource(session=role_caller.session, **settings)


def test_without_boto3_the_client_says_which_extra_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)

    with pytest.raises(ImportError, match=r"datamorph-gateway-client\[aws\]"):
        iam_token(GATEWAY)


# ------------------------------------------------------------------ through the gateway


def test_a_lambda_role_calls_the_gateway_with_no_shared_secret(
    relay: StsRelay, role_caller: Caller, make_gateway: Any, tmp_path: Any
) -> None:
    import grpc
    import yaml

    from datamorph_client import GatewayClient, GatewayError

    policy = {
        "aws_iam": {"gateway_id": GATEWAY},
        "principals": [
            {
                "name": "orchestrator",
                "aws_iam_arns": [f"arn:aws:iam::{ACCOUNT}:role/dmgw-orchestrator-*"],
                "allow": ["ExecuteQuery:read", "GetSchemas"],
            }
        ],
    }
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(policy))
    gateway = make_gateway(auth_policy_file=str(path), sts_endpoint_url=relay.url)
    with GatewayClient(
        gateway.address,
        timeout_s=15,
        aws_iam=True,
        gateway_id=GATEWAY,
        aws_session=role_caller.session,
        sts_endpoint_url=relay.url,
    ) as client:
        assert client.execute_query("SELECT 1 AS one").rows == [{"one": 1}]
        assert client.execute_query("SELECT 2 AS two").rows == [{"two": 2}]  # from the cache
        with pytest.raises(GatewayError) as err:
            client.get_data(["customers"])
        assert err.value.code == grpc.StatusCode.PERMISSION_DENIED
    # A token signed for another gateway is refused, and the gateway stays healthy.
    with GatewayClient(
        gateway.address,
        timeout_s=15,
        aws_iam=True,
        gateway_id="another-gateway",
        aws_session=role_caller.session,
        sts_endpoint_url=relay.url,
    ) as client:
        with pytest.raises(GatewayError) as err:
            client.execute_query("SELECT 1")
        assert err.value.code == grpc.StatusCode.UNAUTHENTICATED
        assert err.value.metadata.get("cause") == "wrong_gateway"
        assert client.health().status == "healthy"
