"""The command's credentials and TLS options reach a secured gateway: an API key, a bearer
JWT, and TLS and mTLS with the suite's own certificates."""

from __future__ import annotations

import json
import time
from pathlib import Path

import jwt
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from datamorph_gateway.auth.keys import key_hash, new_key

from ..fixtures.certs import make_pki
from ..fixtures.cli import Cli
from ..fixtures.gateway import GatewayFactory

ADMIN_KEY = new_key()
READER_KEY = new_key()
ISSUER, AUDIENCE, SUBJECT = "https://issuer.test", "datamorph-gateway", "svc-cli"


@pytest.fixture
def secured(make_gateway: GatewayFactory, tmp_path: Path) -> tuple[Cli, str]:
    """A gateway with a policy (two API keys, one JWT subject), and a token it accepts."""
    private = ec.generate_private_key(ec.SECP256R1())
    jwk = ECAlgorithm.to_jwk(private.public_key(), as_dict=True)
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{**jwk, "kid": "k1", "alg": "ES256", "use": "sig"}]}))
    policy = {
        "jwt": {"issuer": ISSUER, "audience": AUDIENCE, "jwks_file": str(jwks)},
        "principals": [
            {"name": "admin", "api_keys": [key_hash(ADMIN_KEY)], "allow": ["*"]},
            {"name": "reader", "api_keys": [key_hash(READER_KEY)], "allow": ["ExecuteQuery:read"]},
            {"name": "svc", "jwt_subjects": [SUBJECT], "allow": ["GetSchemas"]},
        ],
    }
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(policy))
    gateway = make_gateway(auth_policy_file=str(path))
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": SUBJECT, "iat": now, "exp": now + 300}
    token = jwt.encode(claims, private, algorithm="ES256", headers={"kid": "k1"})
    return Cli(gateway.address), token


def test_an_api_key_from_the_option_or_the_environment(secured: tuple[Cli, str]) -> None:
    cli, _ = secured
    anonymous = cli("query", "SELECT 1 AS x")
    assert anonymous.exit_code == 1
    assert "(UNAUTHENTICATED, reason UNAUTHENTICATED" in anonymous.stderr
    assert cli("--api-key", ADMIN_KEY, "query", "SELECT 1 AS x").stdout == '[{"x": 1}]\n'
    assert cli("query", "SELECT 1 AS x", DATAMORPH_API_KEY=ADMIN_KEY).stdout == '[{"x": 1}]\n'
    denied = cli("--api-key", READER_KEY, "query", "CREATE TABLE cli_denied (a int)")
    assert denied.exit_code == 1
    assert "(PERMISSION_DENIED" in denied.stderr


def test_a_bearer_token(secured: tuple[Cli, str]) -> None:
    cli, token = secured
    result = cli("--token", token, "schemas", "orders")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["orders"]["primary_keys"] == ["id"]
    assert cli("schemas", "orders", DATAMORPH_TOKEN=token).exit_code == 0
    assert cli("--token", token + "x", "schemas", "orders").exit_code == 1
    assert cli("--token", token, "query", "SELECT 1").exit_code == 1  # not allowed to svc


def test_tls_and_mtls(make_gateway: GatewayFactory, tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    gateway = make_gateway(
        tls_cert_file=str(pki.server.cert),
        tls_key_file=str(pki.server.key),
        tls_client_ca_file=str(pki.ca.file),
    )
    cli = Cli(gateway.address)
    mtls = ["--ca-file", str(pki.ca.file), "--cert-file", str(pki.client.cert),
            "--key-file", str(pki.client.key)]  # fmt: skip
    result = cli(*mtls, "query", "SELECT 1 AS x")
    assert (result.exit_code, result.stdout) == (0, '[{"x": 1}]\n')
    by_env = cli(
        "health",
        DATAMORPH_CA_FILE=str(pki.ca.file),
        DATAMORPH_CERT_FILE=str(pki.client.cert),
        DATAMORPH_KEY_FILE=str(pki.client.key),
    )
    assert by_env.exit_code == 0
    without_cert = cli("--ca-file", str(pki.ca.file), "--timeout", "5", "health")
    assert without_cert.exit_code == 1
    assert without_cert.stderr.startswith("error: ")
    plaintext = cli("--timeout", "5", "health")
    assert plaintext.exit_code == 1
    assert "(UNAVAILABLE" in plaintext.stderr
