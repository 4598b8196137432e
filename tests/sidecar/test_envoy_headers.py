"""Oversized request headers through a real Envoy: 431, never a retry-inviting 429.

Envoy refuses request headers over its limit itself; everything below that limit must
reach the gateway whole, so that the gateway's gRPC metadata limit never answers
RESOURCE_EXHAUSTED (429 on REST, which invites the caller to retry the same request).
"""

from __future__ import annotations

import grpc
import pytest

from datamorph.gateway.v1 import gateway_pb2 as pb
from datamorph.gateway.v1 import gateway_pb2_grpc as pb_grpc
from datamorph_gateway.app import MAX_METADATA_BYTES
from datamorph_gateway.sidecar.render import MAX_REQUEST_HEADERS_KB

from ..fixtures.envoy import Rest, Sidecar

BODY = {"table_names": ["customers"], "limit": 1}


@pytest.mark.parametrize("kib", [1, 9, 12, 17, 30, 45, MAX_REQUEST_HEADERS_KB - 2])
def test_headers_under_envoys_limit_are_served(rest: Rest, kib: int) -> None:
    for _ in range(3):  # the soft metadata limit refused at random: try more than once
        response = rest.post("/get/data", BODY, headers={"x-padding": "p" * (kib * 1024)})
        assert response.status == 200, (response.status, response.body[:300])


def test_many_headers_under_the_limit_are_served(rest: Rest) -> None:
    headers = {f"x-padding-{i}": "p" * 500 for i in range(90)}
    response = rest.post("/get/data", BODY, headers=headers)
    assert response.status == 200, (response.status, response.body[:300])


@pytest.mark.parametrize("kib", [MAX_REQUEST_HEADERS_KB + 1, 100, 500])
def test_headers_over_envoys_limit_are_431_and_not_retryable(rest: Rest, kib: int) -> None:
    response = rest.post("/get/data", BODY, headers={"x-padding": "p" * (kib * 1024)})
    assert response.status == 431, (response.status, response.body[:300])
    body = response.json()
    assert body["code"] == 3  # INVALID_ARGUMENT: fix the request, do not retry it
    assert f"{MAX_REQUEST_HEADERS_KB} KiB" in body["message"]


def test_grpc_callers_through_envoy_get_their_large_metadata_through(envoy: Sidecar) -> None:
    with grpc.insecure_channel(envoy.grpc_address) as channel:
        stub = pb_grpc.DataMorphGatewayStub(channel)
        response = stub.GetData(
            pb.GetDataRequest(table_names=["customers"], limit=1),
            metadata=[("x-padding", "p" * (40 * 1024))],
            timeout=20,
        )
    assert response.status == "success"


def test_the_gateway_takes_more_metadata_than_envoy_forwards() -> None:
    # Envoy counts raw header bytes; HPACK adds 32 per header (at most 100) and Envoy adds
    # its own (x-forwarded-for, x-request-id, x-envoy-*), well under 8 KiB.
    assert MAX_METADATA_BYTES >= (MAX_REQUEST_HEADERS_KB + 8) * 1024 + 100 * 32
