"""Authentication and authorization (issue 11): the policy, API keys, allow lists, limits.

Real gateways and a real Envoy: what holds on the gRPC port holds through REST, since
Envoy passes the headers through as metadata and the gateway checks every call itself.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from google.rpc import error_details_pb2, status_pb2

from datamorph.gateway.v1 import gateway_pb2 as pb
from datamorph.gateway.v1 import gateway_pb2_grpc as pb_grpc
from datamorph_client import GatewayClient, GatewayError
from datamorph_gateway.app import Gateway
from datamorph_gateway.auth.authenticator import Authenticator
from datamorph_gateway.auth.keys import key_hash, new_key
from datamorph_gateway.auth.policy import load_policy, parse_policy
from datamorph_gateway.config import AuthSettings, AwsSettings
from datamorph_gateway.errors import ConfigError
from datamorph_gateway.identity import ClientIdentities

from ..fixtures.certs import CLIENT_URI, make_pki
from ..fixtures.envoy import EnvoyFactory
from ..fixtures.gateway import GatewayFactory, gateway_settings

ADMIN_KEY = new_key()
READER_KEY = new_key()
LIMITED_KEY = new_key()
OTHER_KEY = new_key()


def policy(**extra: Any) -> dict[str, Any]:
    return {
        "principals": [
            {"name": "admin", "api_keys": [key_hash(ADMIN_KEY)], "allow": ["*"]},
            {
                "name": "etl-reader",
                "api_keys": [key_hash(READER_KEY)],
                "allow": ["GetSchemas", "GetData", "ExecuteQuery:read", "StreamQuery"],
            },
            {
                "name": "limited",
                "api_keys": [key_hash(LIMITED_KEY)],
                "allow": ["GetData"],
                "rate_limit_per_s": 1,
            },
        ],
        **extra,
    }


def write_policy(path: Path, data: dict[str, Any]) -> Path:
    staging = path.with_suffix(".tmp")
    staging.write_text(yaml.safe_dump(data), encoding="utf-8")
    os.replace(staging, path)
    return path


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    return write_policy(tmp_path / "policy.yaml", policy())


@pytest.fixture
def secured(make_gateway: GatewayFactory, policy_file: Path) -> Gateway:
    return make_gateway(auth_policy_file=str(policy_file))


def call(gateway: Gateway, key: str | None, sql: str = "SELECT 1 AS one", **kw: Any) -> Any:
    with GatewayClient(gateway.address, timeout_s=10, api_key=key) as c:
        return c.execute_query(sql, **kw)


def denied(
    gateway: Gateway, key: str | None, sql: str = "SELECT 1 AS one", **kw: Any
) -> GatewayError:
    with pytest.raises(GatewayError) as err:
        call(gateway, key, sql, **kw)
    return err.value


# -- the policy file -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"principals": [{"name": "a", "colour": "red"}]}, "principals[0].colour: unknown key"),
        (
            {"principals": [{"name": "a", "api_keys": ["abc"]}]},
            "principals[0].api_keys[0]: must be sha256:",
        ),
        (
            {"principals": [{"name": "a", "api_keys": [key_hash("k").upper()]}]},
            "principals[0].api_keys[0]: must be sha256:",
        ),
        (
            {"principals": [{"name": "a", "allow": ["GetDta"]}]},
            "principals[0].allow[0]: unknown RPC 'GetDta'",
        ),
        (
            {"principals": [{"name": "a"}, {"name": "a"}]},
            "principals[1].name: principal 'a' is named twice",
        ),
        (
            {
                "principals": [
                    {"name": "a", "api_keys": [key_hash("k")]},
                    {"name": "b", "api_keys": [key_hash("k")]},
                ]
            },
            "principals[1].api_keys[0]: this key is already listed for principal 'a'",
        ),
        (
            {"principals": [{"name": "a", "api_keys": [key_hash("k"), key_hash("k")]}]},
            "principals[0].api_keys[1]: this key is already listed",
        ),
        ({"principals": [{"allow": ["*"]}]}, "principals[0].name: is required"),
        ({"principals": {"name": "a"}}, "principals: must be a list"),
        ({"extra": 1}, "AUTH_POLICY_FILE extra: unknown key"),
        (
            {"principals": [{"name": "a", "jwt_subjects": ["x"]}]},
            "principals[0].jwt_subjects: needs a top-level jwt: section",
        ),
        (
            {"jwt": {"issuer": "i", "audience": "a"}},
            "jwt: needs exactly one of jwks_file and jwks_url",
        ),
        (
            {"principals": [{"name": "a", "rate_limit_per_s": 0}]},
            "principals[0].rate_limit_per_s: must be a positive number",
        ),
        (
            {"principals": [{"name": " a"}]},
            "principals[0].name: must not start or end with white space",
        ),
    ],
)
def test_a_malformed_policy_is_refused_naming_the_place(
    change: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as err:
        parse_policy(change)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_a_malformed_policy_file_stops_the_start(tmp_path: Path, seeded_database: str) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("principals:\n  - name: a\n    allow: [Nope]\n")
    with pytest.raises(ConfigError, match=r"AUTH_POLICY_FILE principals\[0\].allow\[0\]"):
        Gateway(gateway_settings(seeded_database, auth_policy_file=str(bad)))
    (tmp_path / "broken.yaml").write_text("principals: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_policy(path=str(tmp_path / "broken.yaml"))


def test_a_setting_the_verifiers_refuse_is_a_configuration_error(tmp_path: Path) -> None:
    """Regression: the IAM verifier's ValueError for a malformed AWS_REGION escaped as a
    traceback at start, and out of a reload (which keeps the old policy only on a
    ConfigError) into the call that noticed the new file."""
    with_iam = policy(aws_iam={"gateway_id": "gw"})
    path = write_policy(tmp_path / "policy.yaml", with_iam)
    settings = AuthSettings(auth_policy_file=str(path))
    bad_region = AwsSettings(aws_region="EU-WEST-1")
    with pytest.raises(ConfigError) as err:
        Authenticator(settings, bad_region, ClientIdentities(None))
    assert str(err.value) == "auth policy: not an AWS region: 'EU-WEST-1'"

    write_policy(path, policy())  # no aws_iam: section, so no IAM verifier to refuse it
    auth = Authenticator(settings, bad_region, ClientIdentities(None))
    first = auth.policy
    write_policy(path, with_iam)
    assert auth.reload() is False
    assert auth.policy is first


def test_the_policy_can_come_as_json_from_the_config_secret() -> None:
    import json

    from datamorph_gateway.config import load_settings

    settings = load_settings({"AUTH_POLICY": json.dumps(policy())})
    parsed = load_policy(text=settings.auth.auth_policy)
    assert [p.name for p in parsed.principals] == ["admin", "etl-reader", "limited"]


def test_new_key_prints_the_key_once_and_its_policy_line() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "datamorph_gateway.auth", "new-key", "etl-lambda"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    key = next(line.strip() for line in out.splitlines() if line.strip().startswith("dmgw_"))
    assert len(key) >= len("dmgw_") + 43  # 256 bits, base64url
    assert f'api_keys: ["{key_hash(key)}"]' in out
    assert "- name: etl-lambda" in out
    assert out.count(key) == 1


# -- calls -----------------------------------------------------------------------------------


def test_anonymous_and_unknown_keys_are_unauthenticated_alike(secured: Gateway) -> None:
    answers = [
        denied(secured, key) for key in (None, OTHER_KEY, "", f" {ADMIN_KEY}", f"{ADMIN_KEY} x")
    ]
    for err in answers:
        assert err.code == grpc.StatusCode.UNAUTHENTICATED
        assert err.message == answers[0].message
        assert ADMIN_KEY not in err.message
        assert OTHER_KEY not in err.message
    assert call(secured, ADMIN_KEY).rows == [{"one": 1}]
    # And the gateway is no worse for it.
    with GatewayClient(secured.address, timeout_s=10) as c:
        assert c.health().status == "healthy"  # Health stays open


def test_a_credential_sent_twice_is_refused(secured: Gateway, make_envoy: EnvoyFactory) -> None:
    """A reader's key and an admin's key together: neither counts, on gRPC or through Envoy."""
    with grpc.insecure_channel(secured.address) as channel:
        stub = pb_grpc.DataMorphGatewayStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            stub.ExecuteQuery(
                pb.ExecuteQueryRequest(query="CREATE TABLE twice (a int)"),
                metadata=(("x-api-key", READER_KEY), ("x-api-key", ADMIN_KEY)),
                timeout=10,
            )
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    rest = make_envoy(secured.address).rest
    answer = rest.request(
        "POST",
        "/execute/query",
        {"query": "CREATE TABLE twice (a int)"},
        headers={"x-api-key": READER_KEY, "X-Api-Key": ADMIN_KEY},
    )
    assert answer.status == 401, answer.body
    assert call(secured, ADMIN_KEY, "SELECT to_regclass('twice') IS NULL AS absent").rows == [
        {"absent": True}
    ]


def test_other_headers_sent_twice_do_not_hide_or_spoil_a_credential(secured: Gateway) -> None:
    """A repeated header that is no credential leaves the key in force; a key repeated among
    other repeated headers is still refused."""
    with grpc.insecure_channel(secured.address) as channel:
        stub = pb_grpc.DataMorphGatewayStub(channel)
        twice = (("x-trace-note", "a"), ("x-trace-note", "b"))
        answer = stub.ExecuteQuery(
            pb.ExecuteQueryRequest(query="SELECT 1 AS one"),
            metadata=(*twice, ("x-api-key", ADMIN_KEY)),
            timeout=10,
        )
        assert answer.row_count == 1
        with pytest.raises(grpc.RpcError) as err:
            stub.ExecuteQuery(
                pb.ExecuteQueryRequest(query="SELECT 1 AS one"),
                metadata=(("x-api-key", ADMIN_KEY), *twice, ("x-api-key", ADMIN_KEY)),
                timeout=10,
            )
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "x-api-key is sent more than once" in (err.value.details() or "")


def test_a_principal_calls_only_what_it_is_allowed(secured: Gateway) -> None:
    with GatewayClient(secured.address, timeout_s=10, api_key=LIMITED_KEY) as c:
        assert c.get_data(["customers"], limit=1)["customers"].rows
        with pytest.raises(GatewayError) as err:
            c.get_schemas(["customers"])
    assert err.value.code == grpc.StatusCode.PERMISSION_DENIED
    assert err.value.message == "principal 'limited' may not call GetSchemas"


def test_a_read_only_principal_reads_and_never_writes(secured: Gateway) -> None:
    assert call(secured, READER_KEY, "SELECT count(*) > 0 AS any FROM customers").rows == [
        {"any": True}
    ]
    for sql in (
        "CREATE TABLE reader_was_here (a int)",
        "INSERT INTO customers (name) VALUES ('x')",
        "WITH gone AS (DELETE FROM orders RETURNING 1) SELECT count(*) FROM gone",
        "SELECT * INTO copy_of_customers FROM customers",
        "SELECT * FROM customers FOR UPDATE",
    ):
        err = denied(secured, READER_KEY, sql)
        assert err.code == grpc.StatusCode.PERMISSION_DENIED, (sql, err)
        assert "may only read" in err.message
        if sql.startswith("CREATE"):
            assert err.message.endswith("and CREATE TABLE writes"), err.message
    # read_only: false changes nothing; a function that writes is stopped by the database.
    err = denied(secured, READER_KEY, "SELECT nextval('orders_id_seq')", read_only=False)
    assert err.code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.FAILED_PRECONDITION)
    # It may not start workflows either.
    assert call(
        secured, ADMIN_KEY, "SELECT to_regclass('reader_was_here') IS NULL AS absent"
    ).rows == [{"absent": True}]


def test_rest_through_envoy_holds_the_same(secured: Gateway, make_envoy: EnvoyFactory) -> None:
    rest = make_envoy(secured.address).rest
    body = {"query": "SELECT 1 AS one"}
    anonymous = rest.post("/execute/query", body)
    assert anonymous.status == 401, anonymous.body
    assert rest.post("/execute/query", body, headers={"x-api-key": OTHER_KEY}).status == 401
    ok = rest.post("/execute/query", body, headers={"x-api-key": ADMIN_KEY})
    assert ok.status == 200
    assert ok.json()["rows"] == [{"one": 1}]
    create = rest.post(
        "/execute/query",
        {"query": "CREATE TABLE t_rest (a int)"},
        headers={"x-api-key": READER_KEY},
    )
    assert create.status == 403, create.body
    assert (
        rest.post(
            "/get/schemas", {"table_names": ["customers"]}, headers={"x-api-key": LIMITED_KEY}
        ).status
        == 403
    )
    assert rest.get("/health").status == 200


def test_an_oversized_authorization_header_is_refused_and_harmless(secured: Gateway) -> None:
    with grpc.insecure_channel(secured.address) as channel:
        stub = pb_grpc.DataMorphGatewayStub(channel)
        for metadata in (
            (("authorization", "Bearer " + "a" * 60_000),),
            (("x-api-key", "k" * 60_000),),
        ):
            with pytest.raises(grpc.RpcError) as err:
                stub.ExecuteQuery(
                    pb.ExecuteQueryRequest(query="SELECT 1"), metadata=metadata, timeout=10
                )
            # grpc refuses metadata over its limit itself; if it gets through, we do.
            assert err.value.code() in (
                grpc.StatusCode.UNAUTHENTICATED,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                grpc.StatusCode.INTERNAL,
            )
    assert call(secured, ADMIN_KEY).rows == [{"one": 1}]


def test_rate_limit_per_principal(secured: Gateway) -> None:
    with grpc.insecure_channel(secured.address) as channel:
        stub = pb_grpc.DataMorphGatewayStub(channel)
        request = pb.GetDataRequest(table_names=["customers"], limit=1)
        metadata = (("x-api-key", LIMITED_KEY),)
        codes = []
        for _ in range(4):
            try:
                stub.GetData(request, metadata=metadata, timeout=10)
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as exc:
                codes.append(exc.code())
                last = exc
        assert codes[:2] == [grpc.StatusCode.OK, grpc.StatusCode.OK]  # burst: twice the rate
        assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes[2:]
        status = next(
            status_pb2.Status.FromString(v)
            for k, v in last.trailing_metadata()
            if k == "grpc-status-details-bin"
        )
        retry = error_details_pb2.RetryInfo()
        assert any(d.Unpack(retry) for d in status.details)
        assert 0 < retry.retry_delay.seconds + retry.retry_delay.nanos / 1e9 <= 1
        # Another principal is not slowed by it.
        assert call(secured, ADMIN_KEY).rows == [{"one": 1}]
        time.sleep(1.1)
        stub.GetData(request, metadata=metadata, timeout=10)


def test_logs_name_the_principal_and_never_the_key(
    secured: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="datamorph_gateway")
    call(secured, ADMIN_KEY, "SELECT 42 AS answer")
    denied(secured, OTHER_KEY)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert ADMIN_KEY not in text
    assert OTHER_KEY not in text
    assert "principal=admin" in text  # access and audit lines
    assert any(
        "query principal=admin" in r.getMessage()
        for r in caplog.records
        if r.name.endswith("audit")
    )
    assert "authentication failed: rpc=ExecuteQuery reason=unknown_api_key" in text
    assert secured.auth.failures["unknown_api_key"] >= 1


def test_keys_rotate_without_a_restart_and_a_bad_file_keeps_the_old_policy(
    secured: Gateway, policy_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rotated = new_key()
    data = policy()
    data["principals"][0]["api_keys"] = [key_hash(rotated)]
    write_policy(policy_file, data)
    deadline = time.monotonic() + 5
    while True:  # noticed on a call, at most a second later
        try:
            assert call(secured, rotated).rows == [{"one": 1}]
            break
        except GatewayError:
            assert time.monotonic() < deadline
            time.sleep(0.2)
    assert denied(secured, ADMIN_KEY).code == grpc.StatusCode.UNAUTHENTICATED
    caplog.set_level(logging.ERROR, logger="datamorph_gateway.auth")
    policy_file.write_text("principals:\n  - name: x\n    allow: [Nope]\n")
    assert secured.auth.reload() is False  # as SIGHUP does
    assert "the new auth policy is refused" in caplog.text
    assert call(secured, rotated).rows == [{"one": 1}]


# -- secure by default ---------------------------------------------------------------------


def test_no_policy_on_a_non_loopback_address_refuses_to_start(seeded_database: str) -> None:
    with pytest.raises(ConfigError) as err:
        Gateway(gateway_settings(seeded_database, grpc_host="0.0.0.0"))
    assert "GRPC_HOST=0.0.0.0" in str(err.value)
    assert "AUTH_POLICY_FILE" in str(err.value)
    gateway = Gateway(
        gateway_settings(seeded_database, grpc_host="0.0.0.0", auth_allow_anonymous=True)
    )
    gateway.stop(0)


def test_the_launcher_refuses_a_non_loopback_rest_host_without_a_policy() -> None:
    env = dict(os.environ, REST_HOST="0.0.0.0", DATA_DIR="/nonexistent-unused")
    done = subprocess.run(
        [sys.executable, "-m", "datamorph_gateway.launcher"],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "REST_HOST=0.0.0.0" in done.stderr
    assert "AUTH_POLICY_FILE" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_no_policy_on_loopback_is_anonymous_with_a_warning(
    make_gateway: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="datamorph_gateway")
    gateway = make_gateway()
    assert call(gateway, None).rows == [{"one": 1}]
    assert "no AUTH_POLICY_FILE" in caplog.text


def test_a_client_certificate_is_a_credential(
    make_gateway: GatewayFactory, make_envoy: EnvoyFactory, tmp_path: Path
) -> None:
    pki = make_pki(tmp_path / "pki")
    other = pki.ca.issue("other-client", "other", uri="spiffe://datamorph.test/other")
    data = policy()
    data["principals"].append(
        {"name": "cert-holder", "tls_subjects": [CLIENT_URI], "allow": ["ExecuteQuery:read"]}
    )
    gateway = make_gateway(
        auth_policy_file=str(write_policy(tmp_path / "p.yaml", data)),
        tls_cert_file=str(pki.server.cert),
        tls_key_file=str(pki.server.key),
        tls_client_ca_file=str(pki.ca.file),
    )
    ca = str(pki.ca.file)

    def query(cert: Path, key: Path) -> Any:
        with GatewayClient(
            gateway.address, timeout_s=10, ca_file=ca, cert_file=str(cert), key_file=str(key)
        ) as c:
            return c.execute_query("SELECT 1 AS one")

    assert query(pki.client.cert, pki.client.key).rows == [{"one": 1}]
    with pytest.raises(GatewayError) as err:
        query(other.cert, other.key)  # verified, but named by no principal
    assert err.value.code == grpc.StatusCode.UNAUTHENTICATED
    # Through Envoy, which verifies the certificate and forwards it (with its secret).
    sidecar = make_envoy(
        gateway.address,
        tls_cert_file=str(pki.server.cert),
        tls_key_file=str(pki.server.key),
        tls_client_ca_file=str(pki.ca.file),
        upstream_tls=True,
        upstream_client_certificate=True,
    )

    def rest(cert: Path, key: Path) -> str:
        done = subprocess.run(
            ["curl", "-sS", "--max-time", "10", "--cacert", ca, "--cert", str(cert),
             "--key", str(key), "-o", "/dev/null", "-w", "%{http_code}",
             "-H", "content-type: application/json", "-d", '{"query": "SELECT 1"}',
             f"https://{sidecar.grpc_address}/execute/query"],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        return done.stdout

    assert rest(pki.client.cert, pki.client.key) == "200"
    assert rest(other.cert, other.key) == "401"


# -- bearer tokens through the gateway -------------------------------------------------------


def test_bearer_tokens_through_grpc_and_rest(
    make_gateway: GatewayFactory, make_envoy: EnvoyFactory, tmp_path: Path
) -> None:
    import json as json_module

    import jwt as pyjwt
    from cryptography.hazmat.primitives.asymmetric import rsa
    from jwt.algorithms import RSAAlgorithm

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json_module.loads(RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid="k1", alg="RS256", use="sig")
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json_module.dumps({"keys": [jwk]}))
    data = policy(jwt={"issuer": "https://issuer.test/", "audience": "datamorph-gateway",
                       "jwks_file": str(jwks)})  # fmt: skip
    data["principals"].append(
        {"name": "svc-etl", "jwt_subjects": ["svc-etl"], "allow": ["ExecuteQuery:read"]}
    )
    gateway = make_gateway(auth_policy_file=str(write_policy(tmp_path / "p.yaml", data)))

    def token(**claims: Any) -> str:
        now = int(time.time())
        body = {"iss": "https://issuer.test/", "aud": "datamorph-gateway", "sub": "svc-etl",
                "iat": now, "exp": now + 300, **claims}  # fmt: skip
        return pyjwt.encode(body, key, algorithm="RS256", headers={"kid": "k1"})

    with GatewayClient(gateway.address, timeout_s=10, bearer_token=token) as c:
        assert c.execute_query("SELECT 1 AS one").rows == [{"one": 1}]
        with pytest.raises(GatewayError) as err:
            c.execute_query("CREATE TABLE by_token (a int)")
        assert err.value.code == grpc.StatusCode.PERMISSION_DENIED
    for bad, cause in (
        (token(exp=int(time.time()) - 3600), "expired"),
        (token(aud="someone-else"), "wrong_audience"),
        (token(iss="https://evil.test/"), "wrong_issuer"),
        (token(sub="nobody"), "unknown_jwt_subject"),
        # "none" signs with no key, which PyJWT's annotations leave out.
        (pyjwt.encode({"sub": "svc-etl"}, None, algorithm="none"), "unsupported_algorithm"),  # type: ignore[arg-type]
        (token()[:-4] + "AAAA", "bad_signature"),
        ("x" * 20_000, "too_large"),
    ):
        with (
            GatewayClient(gateway.address, timeout_s=10, bearer_token=bad) as c,
            pytest.raises(GatewayError) as err,
        ):
            c.execute_query("SELECT 1")
        assert err.value.code == grpc.StatusCode.UNAUTHENTICATED, (cause, err.value)
        assert err.value.metadata.get("cause") == cause, (cause, err.value)
        assert bad not in err.value.message
    rest = make_envoy(gateway.address).rest
    ok = rest.post(
        "/execute/query",
        {"query": "SELECT 1 AS one"},
        headers={"authorization": f"Bearer {token()}"},
    )
    assert ok.status == 200, ok.body
    assert (
        rest.post(
            "/execute/query", {"query": "SELECT 1"}, headers={"authorization": "Bearer nope"}
        ).status
        == 401
    )
    with GatewayClient(gateway.address, timeout_s=10) as c:
        assert c.health().status == "healthy"
