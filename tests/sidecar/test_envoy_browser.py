"""What a browser can do through a real Envoy, and who can reach Envoy's admin API.

A page on another site can make a browser POST text/plain, a form encoding or no content
type at all without asking first (no CORS preflight): those answer 415 before the gateway
sees them. CORS is off unless origins are configured, and then only those origins get a
preflight answer. The admin API is a Unix socket only its owner can open.
"""

from __future__ import annotations

import http.client
import json
import os
import stat
import uuid
from pathlib import Path

import grpc
import pytest

from datamorph.gateway.v1 import gateway_pb2 as pb
from datamorph.gateway.v1 import gateway_pb2_grpc as pb_grpc
from datamorph_gateway.app import Gateway
from datamorph_gateway.sidecar.process import admin_connection

from ..fixtures.envoy import EnvoyFactory, Response, Rest, Sidecar

ALLOWED = "https://app.example.com"
QUERY = json.dumps({"query": "SELECT 1 AS one"}).encode()


def _refused_as_not_json(response: Response, named: str) -> None:
    assert response.status == 415, (response.status, response.body)
    body = response.json()
    assert set(body) == {"status", "code", "message", "details"}, body
    assert body["status"] == "error", body
    assert body["code"] == 3
    assert "application/json" in body["message"]
    assert named in body["message"], body


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "text/plain;charset=UTF-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/jsonp",
    ],
)
def test_a_post_that_is_not_json_is_415(rest: Rest, content_type: str) -> None:
    response = rest.post("/execute/query", raw=QUERY, headers={"content-type": content_type})
    _refused_as_not_json(response, content_type)


def test_grpc_web_is_not_served(rest: Rest) -> None:
    # No grpc_web filter: such a request would reach the gateway as neither JSON nor gRPC.
    web = {"content-type": "application/grpc-web+proto"}
    assert rest.post("/execute/query", raw=QUERY, headers=web).status == 415


def test_a_post_without_a_content_type_is_415(rest: Rest) -> None:
    for path, body in (("/execute/query", QUERY), ("/start", None)):
        connection = http.client.HTTPConnection(rest.host, rest.port, timeout=30)
        try:
            connection.request("POST", path, body=body)  # no content-type header at all
            response = connection.getresponse()
            answer = Response(
                response.status,
                {k.lower(): v for k, v in response.getheaders()},
                response.read(),
            )
        finally:
            connection.close()
        _refused_as_not_json(answer, "no content-type was sent")


def test_a_cross_site_text_plain_post_never_reaches_the_gateway(rest: Rest) -> None:
    marker = f"browser_csrf_{uuid.uuid4().hex[:8]}"
    response = rest.post(
        "/execute/query",
        raw=json.dumps({"query": f"CREATE TABLE {marker} (x int)"}).encode(),
        headers={"content-type": "text/plain", "origin": "https://evil.example"},
    )
    assert response.status == 415
    found = rest.post(
        "/execute/query", {"query": f"SELECT to_regclass('{marker}') IS NULL AS absent"}
    )
    assert found.json()["rows"] == [{"absent": True}]


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/json; charset=UTF-8", "Application/JSON"]
)
def test_json_with_any_charset_or_case_is_served(rest: Rest, content_type: str) -> None:
    response = rest.post("/execute/query", raw=QUERY, headers={"content-type": content_type})
    assert response.status == 200, response.body
    assert response.json()["rows"] == [{"one": 1}]


def test_get_routes_need_no_content_type(rest: Rest) -> None:
    assert rest.get("/health").status == 200


def test_grpc_through_envoy_still_works(envoy: Sidecar) -> None:
    with grpc.insecure_channel(envoy.grpc_address) as channel:
        stub = pb_grpc.DataMorphGatewayStub(channel)
        answer = stub.ExecuteQuery(pb.ExecuteQueryRequest(query="SELECT 1 AS one"), timeout=10)
        assert answer.row_count == 1


def test_without_origins_there_is_no_cors(rest: Rest) -> None:
    preflight = rest.request(
        "OPTIONS",
        "/execute/query",
        headers={
            "origin": ALLOWED,
            "access-control-request-method": "POST",
            "access-control-request-headers": "content-type",
        },
    )
    assert not any(h.startswith("access-control-") for h in preflight.headers), preflight
    post = rest.post("/execute/query", raw=QUERY, headers={"origin": ALLOWED})
    assert post.status == 200
    assert not any(h.startswith("access-control-") for h in post.headers), post.headers


def test_cors_answers_the_allowed_origin_only(gateway: Gateway, make_envoy: EnvoyFactory) -> None:
    sidecar = make_envoy(gateway.address, cors_allowed_origins=(ALLOWED,))
    asked = {
        "access-control-request-method": "POST",
        "access-control-request-headers": "content-type, x-api-key",
    }
    preflight = sidecar.rest.request(
        "OPTIONS", "/execute/query", headers={"origin": ALLOWED, **asked}
    )
    assert preflight.status == 200, preflight
    headers = preflight.headers
    assert headers["access-control-allow-origin"] == ALLOWED
    assert "POST" in headers["access-control-allow-methods"]
    allowed = {h.strip() for h in headers["access-control-allow-headers"].split(",")}
    assert {"content-type", "authorization", "x-api-key", "x-request-id"} <= allowed
    assert "access-control-allow-credentials" not in headers
    assert headers["access-control-max-age"] == "600"

    post = sidecar.rest.post("/execute/query", raw=QUERY, headers={"origin": ALLOWED})
    assert post.status == 200
    assert post.headers["access-control-allow-origin"] == ALLOWED
    assert "x-request-id" in post.headers["access-control-expose-headers"]

    other = sidecar.rest.request(
        "OPTIONS", "/execute/query", headers={"origin": "https://evil.example", **asked}
    )
    assert other.status == 405, other
    assert "access-control-allow-origin" not in other.headers, other
    post = sidecar.rest.post(
        "/execute/query", raw=QUERY, headers={"origin": "https://evil.example"}
    )
    assert "access-control-allow-origin" not in post.headers
    # The 415 still holds for an allowed origin's simple request.
    refused = sidecar.rest.post(
        "/execute/query", raw=QUERY, headers={"origin": ALLOWED, "content-type": "text/plain"}
    )
    _refused_as_not_json(refused, "text/plain")


def test_the_admin_api_is_a_unix_socket_only_its_owner_can_open(envoy: Sidecar) -> None:
    address = envoy.process.admin_address
    assert address.startswith("/"), address
    mode = os.stat(address).st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o600
    assert envoy.process.admin("/ready") == "LIVE"
    connection = admin_connection(address)
    try:
        connection.request("GET", "/server_info")
        assert connection.getresponse().status == 200
    finally:
        connection.close()
    assert Path(address).parent == Path(envoy.process.config_path).parent
