"""TLS and mTLS on the gateway's gRPC port and on Envoy's listener, with real handshakes.

Certificates come from tests/fixtures/certs.py. The identity tests run a small gRPC
server in place of the gateway: it answers Health with the identity that
``ClientIdentities`` (the gateway's own code) resolved for the call, so the test can see
it, directly and through a real Envoy. Everything else is the real gateway.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest

from datamorph.gateway.v1 import gateway_pb2 as pb
from datamorph_client import GatewayClient, GatewayError
from datamorph_gateway.config import Settings, load_settings
from datamorph_gateway.errors import ConfigError
from datamorph_gateway.identity import SIDECAR_HEADER, ClientIdentities, parse_xfcc
from datamorph_gateway.tls import ServerTls

from .fixtures.certs import CLIENT_URI, Pki, make_pki
from .fixtures.envoy import EnvoyFactory
from .fixtures.gateway import GatewayFactory

REPO = Path(__file__).resolve().parents[1]
GRPCURL = REPO / ".venv" / "bin" / "grpcurl"


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


def _tls(pki: Pki, *, mtls: bool = False) -> dict[str, Any]:
    values = {"tls_cert_file": str(pki.server.cert), "tls_key_file": str(pki.server.key)}
    if mtls:
        values["tls_client_ca_file"] = str(pki.ca.file)
    return values


def _health(address: str, **tls: str | bool) -> str:
    with GatewayClient(address, timeout_s=10, **tls) as client:  # type: ignore[arg-type]
        return str(client.health().status)


def _curl(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["curl", "-sS", "--max-time", "10", *args, url],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


# -- settings --------------------------------------------------------------------------


def test_tls_keys_are_checked(pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="TLS_CERT_FILE and TLS_KEY_FILE"):
        load_settings({"TLS_CERT_FILE": str(pki.server.cert)})
    with pytest.raises(ConfigError, match="TLS_CLIENT_CA_FILE needs"):
        load_settings({"TLS_CLIENT_CA_FILE": str(pki.ca.file)})
    missing = str(tmp_path / "nope.pem")
    with pytest.raises(ConfigError, match=f"^TLS_KEY_FILE {missing} is not readable"):
        load_settings({"TLS_CERT_FILE": str(pki.server.cert), "TLS_KEY_FILE": missing})
    settings = load_settings(
        {
            "TLS_CERT_FILE": str(pki.server.cert),
            "TLS_KEY_FILE": str(pki.server.key),
            "TLS_CLIENT_CA_FILE": str(pki.ca.file),
        }
    )
    assert settings.tls.tls_client_ca_file == str(pki.ca.file)
    assert "secret-value" not in repr(settings.with_flat(sidecar_secret="secret-value"))


def test_xfcc_parsing() -> None:
    value = 'Hash=ab;Subject="CN=a\\"b,O=x";URI=spiffe://a/b;URI=spiffe://c,By=x;Subject="CN=z"'
    first, second = parse_xfcc(value)
    assert first["subject"] == ['CN=a"b,O=x']
    assert first["uri"] == ["spiffe://a/b", "spiffe://c"]
    assert second["subject"] == ["CN=z"]


# -- the gateway's gRPC port -------------------------------------------------------------


def test_grpc_port_tls(make_gateway: GatewayFactory, pki: Pki) -> None:
    gateway = make_gateway(**_tls(pki))
    assert _health(gateway.address, ca_file=str(pki.ca.file)) == "healthy"
    with pytest.raises(GatewayError) as plaintext:
        _health(gateway.address)
    assert plaintext.value.code == grpc.StatusCode.UNAVAILABLE
    with pytest.raises(GatewayError):  # a server the client's CA did not sign
        _health(gateway.address, ca_file=str(pki.other_ca.file))


def test_grpc_port_mtls(make_gateway: GatewayFactory, pki: Pki) -> None:
    gateway = make_gateway(**_tls(pki, mtls=True))
    ca = str(pki.ca.file)
    good = {"ca_file": ca, "cert_file": str(pki.client.cert), "key_file": str(pki.client.key)}
    assert _health(gateway.address, **good) == "healthy"
    refused = [
        {"ca_file": ca},
        {"ca_file": ca, "cert_file": str(pki.stranger.cert), "key_file": str(pki.stranger.key)},
        {"ca_file": ca, "cert_file": str(pki.expired.cert), "key_file": str(pki.expired.key)},
    ]
    for tls in refused:
        with pytest.raises(GatewayError) as failed:
            _health(gateway.address, **tls)
        assert failed.value.code == grpc.StatusCode.UNAVAILABLE, tls


def test_grpc_port_rotation_without_restart(make_gateway: GatewayFactory, pki: Pki) -> None:
    gateway = make_gateway(**_tls(pki))
    assert _health(gateway.address, ca_file=str(pki.ca.file)) == "healthy"
    rotated = pki.other_ca.issue("rotated", "datamorph-gateway", server=True, chain=True)
    # As a deployment rotates: new files moved into place, the key first. Halfway (a new
    # key, the old certificate) the old pair keeps serving.
    os.replace(rotated.key, pki.server.key)
    assert _health(gateway.address, ca_file=str(pki.ca.file)) == "healthy"
    os.replace(rotated.cert, pki.server.cert)
    assert _health(gateway.address, ca_file=str(pki.other_ca.file)) == "healthy"
    with pytest.raises(GatewayError):
        _health(gateway.address, ca_file=str(pki.ca.file))


def test_grpcurl_with_cacert(make_gateway: GatewayFactory, pki: Pki) -> None:
    gateway = make_gateway(**_tls(pki))
    result = subprocess.run(
        [str(GRPCURL), "-cacert", str(pki.ca.file), gateway.address, "list"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "datamorph.gateway.v1.DataMorphGateway" in result.stdout


# -- Envoy's listener in front of a TLS gateway ------------------------------------------


def test_envoy_tls_listener(
    make_gateway: GatewayFactory, make_envoy: EnvoyFactory, pki: Pki
) -> None:
    gateway = make_gateway(**_tls(pki))
    sidecar = make_envoy(gateway.address, **_tls(pki), upstream_tls=True)
    url = f"https://{sidecar.grpc_address}/health"
    ok = _curl(url, "--cacert", str(pki.ca.file))
    assert ok.returncode == 0, ok.stderr
    assert '"status":"healthy"' in ok.stdout
    assert _curl(url, "--cacert", str(pki.other_ca.file)).returncode != 0
    plaintext = _curl(f"http://{sidecar.grpc_address}/health")
    assert plaintext.returncode != 0
    assert '"status"' not in plaintext.stdout
    assert _health(sidecar.grpc_address, ca_file=str(pki.ca.file)) == "healthy"
    assert _health(sidecar.grpc_address, tls=True, ca_file=str(pki.ca.file)) == "healthy"


def test_envoy_mtls_listener(
    make_gateway: GatewayFactory, make_envoy: EnvoyFactory, pki: Pki
) -> None:
    gateway = make_gateway(**_tls(pki, mtls=True))
    sidecar = make_envoy(
        gateway.address, **_tls(pki, mtls=True), upstream_tls=True, upstream_client_certificate=True
    )
    url = f"https://{sidecar.grpc_address}/health"
    ca = ("--cacert", str(pki.ca.file))
    ok = _curl(url, *ca, "--cert", str(pki.client.cert), "--key", str(pki.client.key))
    assert ok.returncode == 0, ok.stderr
    assert '"status":"healthy"' in ok.stdout
    for issued in (None, pki.stranger, pki.expired):
        args = () if issued is None else ("--cert", str(issued.cert), "--key", str(issued.key))
        refused = _curl(url, *ca, *args)
        assert refused.returncode != 0, issued
        assert '"status"' not in refused.stdout, issued
    good = {
        "ca_file": str(pki.ca.file),
        "cert_file": str(pki.client.cert),
        "key_file": str(pki.client.key),
    }
    assert _health(sidecar.grpc_address, **good) == "healthy"
    with pytest.raises(GatewayError):
        _health(sidecar.grpc_address, ca_file=str(pki.ca.file))


# -- who the caller is ---------------------------------------------------------------


@pytest.fixture
def identity_server(pki: Pki) -> Iterator[tuple[str, str]]:
    """A gRPC server whose Health answers the caller's identity as ``status``; mTLS on."""
    secret = "per-start-secret"
    tls = ServerTls(str(pki.server.cert), str(pki.server.key), str(pki.ca.file))
    identities = ClientIdentities(tls, secret)

    def health(request: pb.HealthRequest, context: grpc.ServicerContext) -> pb.HealthResponse:
        identity = identities.of(context)
        name = "none" if identity is None else f"{identity.via} {identity.name} {identity.subject}"
        return pb.HealthResponse(status=name)

    handler = grpc.method_handlers_generic_handler(
        "datamorph.gateway.v1.DataMorphGateway",
        {
            "Health": grpc.unary_unary_rpc_method_handler(
                health,
                request_deserializer=pb.HealthRequest.FromString,
                response_serializer=pb.HealthResponse.SerializeToString,
            )
        },
    )
    server = grpc.server(ThreadPoolExecutor(4))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_secure_port("127.0.0.1:0", tls.credentials)
    server.start()
    try:
        yield f"127.0.0.1:{port}", secret
    finally:
        server.stop(None)


def test_client_identity_direct_and_through_envoy(
    identity_server: tuple[str, str], make_envoy: EnvoyFactory, pki: Pki
) -> None:
    address, secret = identity_server
    good = {
        "ca_file": str(pki.ca.file),
        "cert_file": str(pki.client.cert),
        "key_file": str(pki.client.key),
    }
    direct = _health(address, **good)
    assert direct.startswith(f"tls {CLIENT_URI} ")
    assert "CN=client" in direct
    # A forged XFCC or a wrong secret sent straight to the port is ignored.
    forge = [
        ("x-forwarded-client-cert", 'Subject="CN=admin";URI=spiffe://admin'),
        (SIDECAR_HEADER, "guess"),
    ]
    with GatewayClient(address, timeout_s=10, metadata_hook=lambda: forge, **good) as client:  # type: ignore[arg-type]
        forged = client.health()
    assert forged.status.startswith(f"tls {CLIENT_URI} ")

    sidecar = make_envoy(
        address,
        **_tls(pki, mtls=True),
        upstream_tls=True,
        upstream_client_certificate=True,
        sidecar_secret=secret,
    )
    through = _health(sidecar.grpc_address, **good)
    assert through.startswith(f"sidecar {CLIENT_URI} ")
    assert "CN=client" in through
    # REST too, and a caller's own XFCC and secret header do not survive Envoy.
    rest = _curl(
        f"https://{sidecar.grpc_address}/health",
        "--cacert",
        str(pki.ca.file),
        "--cert",
        str(pki.client.cert),
        "--key",
        str(pki.client.key),
        "-H",
        "x-forwarded-client-cert: URI=spiffe://admin",
        "-H",
        f"{SIDECAR_HEADER}: guess",
    )
    assert f'"status":"sidecar {CLIENT_URI} ' in rest.stdout, rest.stdout + rest.stderr

    # Envoy without the secret: the gateway's own certificate earns no identity.
    anonymous = make_envoy(
        address, **_tls(pki, mtls=True), upstream_tls=True, upstream_client_certificate=True
    )
    assert _health(anonymous.grpc_address, **good) == "none"


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_envoy_rotation_without_restart(
    make_gateway: GatewayFactory, make_envoy: EnvoyFactory, pki: Pki, tmp_path: Path
) -> None:
    gateway = make_gateway()
    # Envoy's own copy of the files, so the gateway (plaintext here) is not involved.
    cert, key = tmp_path / "envoy-cert.pem", tmp_path / "envoy-key.pem"
    shutil.copy(pki.server.cert, cert)
    shutil.copy(pki.server.key, key)
    sidecar = make_envoy(gateway.address, tls_cert_file=str(cert), tls_key_file=str(key))
    url = f"https://{sidecar.grpc_address}/health"
    assert _curl(url, "--cacert", str(pki.ca.file)).returncode == 0
    rotated = pki.other_ca.issue("rotated", "datamorph-gateway", server=True, chain=True)
    os.replace(rotated.key, key)
    os.replace(rotated.cert, cert)
    deadline = time.monotonic() + 15
    while _curl(url, "--cacert", str(pki.other_ca.file)).returncode != 0:
        assert time.monotonic() < deadline, "Envoy did not pick up the rotated certificate"
        time.sleep(0.2)


def test_settings_reach_the_sidecar(pki: Pki) -> None:
    from datamorph_gateway.sidecar.options import options_from_settings

    settings = Settings.from_flat(**_tls(pki, mtls=True), sidecar_secret="s")
    options = options_from_settings(settings, upstreams=[("127.0.0.1", 1)], access_log_path="")
    assert options.upstream_tls
    assert options.upstream_client_certificate
    assert options.sidecar_secret == "s"
