"""Errors stay small and right: echoed values are cut, undecodable requests are the caller's
fault, and numbers that JSON cannot carry exactly are refused instead of rounded.

Each case is checked on gRPC and on REST through a real Envoy, where a too-large
grpc-message trailer or a decoding failure used to surface as 502/503 or 500.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2
from google.protobuf.internal import encoder
from google.protobuf.message import Message

from datamorph.gateway.v1 import gateway_pb2 as pb
from datamorph.gateway.v1 import gateway_pb2_grpc as pb_grpc
from datamorph_client import GatewayClient, GatewayError
from datamorph_client.errors import from_rpc_error
from datamorph_gateway.errors import ECHO_MAX_CHARS

from .fixtures.envoy import Response, Rest

LONG = "a" * 100_000
EXECUTE_QUERY = "/datamorph.gateway.v1.DataMorphGateway/ExecuteQuery"


def as_doubles(params: list[Any]) -> list[struct_pb2.Value]:
    """Parameters as any JSON client sends them: every number a double.

    (The Python client sends integers beyond 2^53 as strings, so these go through the stub.)
    """
    values = struct_pb2.ListValue()
    values.extend(params)
    return list(values.values)


def raw_call(method: Callable[..., Any], request: Message) -> Any:
    """A stub call whose failure is a decoded GatewayError, as the client would raise it."""
    try:
        return method(request, timeout=20)
    except grpc.RpcError as exc:
        raise from_rpc_error(exc) from None


def invalid(call: Callable[..., Any], *args: Any, **kwargs: Any) -> GatewayError:
    with pytest.raises(GatewayError) as err:
        call(*args, **kwargs)
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT, err.value
    return err.value


def rest_error(response: Response, status: int, code: int) -> dict[str, Any]:
    assert response.status == status, (response.status, response.body[:500])
    body = response.json()
    assert body["code"] == code, body
    return dict(body)


# -- echoed names are cut ------------------------------------------------------------------


@pytest.mark.parametrize("method", ["get_data", "get_schemas"])
def test_a_100k_character_table_name_is_invalid_argument_with_a_short_message(
    client: GatewayClient, method: str
) -> None:
    err = invalid(getattr(client, method), [LONG])
    assert err.message.startswith("table_names[0]: 'aaaa")
    assert len(err.message) < ECHO_MAX_CHARS + 200
    assert [v.field for v in err.violations] == ["table_names[0]"]


@pytest.mark.parametrize("path", ["/get/data", "/get/schemas"])
def test_a_100k_character_table_name_is_400_over_rest(rest: Rest, path: str) -> None:
    body = rest_error(rest.post(path, {"table_names": [LONG]}), 400, 3)
    assert body["message"].startswith("table_names[0]: 'aaaa")
    assert len(body["message"]) < ECHO_MAX_CHARS + 200


def test_a_long_quoted_missing_name_is_cut_in_the_not_found_message(
    client: GatewayClient,
) -> None:
    # 63 bytes per part is the longest valid name; a hundred of them are all echoed.
    names = [f'"{i:03d}{"x" * 60}"."{"y" * 63}"' for i in range(100)]
    with pytest.raises(GatewayError) as err:
        client.get_data(names)
    assert err.value.code == grpc.StatusCode.NOT_FOUND
    assert err.value.message.startswith("table_names: no such tables: ")
    assert len(err.value.message) <= 1100


def test_a_hundred_bad_names_still_answer_invalid_argument(client: GatewayClient) -> None:
    """Every echo is small, and so is the whole status: it must fit gRPC's trailer limits."""
    err = invalid(client.get_schemas, [f"bad name {i} " + "z" * 1000 for i in range(100)])
    assert err.violations[0].field == "table_names[0]"
    assert err.message.startswith("table_names[0]: ")


def test_a_long_source_table_in_start_workflow_is_invalid_argument(rest: Rest) -> None:
    body = rest_error(rest.post("/start", {"prompt": "SELECT 1", "source_tables": [LONG]}), 400, 3)
    assert body["message"].startswith("source_tables[0]: 'aaaa")
    assert len(body["message"]) < ECHO_MAX_CHARS + 200


def test_a_long_run_id_is_a_small_answer(rest: Rest) -> None:
    response = rest.get("/get/logs/" + "r" * 50_000)
    assert 400 <= response.status < 500, response.status
    assert len(response.body) < 2000


# -- requests that cannot be decoded ---------------------------------------------------------


def _field(tag: int, payload: bytes) -> bytes:
    length: bytes = encoder._VarintBytes(len(payload))  # type: ignore[attr-defined]
    return bytes([tag]) + length + payload


def _deep_params_request(depth: int) -> bytes:
    """ExecuteQueryRequest bytes whose one param is a list nested ``depth`` levels deep.

    Built by hand: protobuf's own serializer refuses to build a message this deep.
    """
    value = _field(0x1A, b"x")  # Value.string_value
    for _ in range(depth):
        value = _field(0x32, _field(0x0A, value))  # Value.list_value { values: ... }
    query = pb.ExecuteQueryRequest(query="SELECT $1::text").SerializeToString()
    return query + _field(0x12, value)  # ExecuteQueryRequest.params


def test_params_nested_too_deep_for_protobuf_are_invalid_argument(
    channel: grpc.Channel,
) -> None:
    call = channel.unary_unary(EXECUTE_QUERY)  # raw bytes both ways
    with pytest.raises(grpc.RpcError) as err:
        call(_deep_params_request(120), timeout=20)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value
    assert "decode" in err.value.details()


def test_stream_query_with_params_nested_too_deep_is_invalid_argument(
    channel: grpc.Channel,
) -> None:
    # StreamQueryRequest has ExecuteQueryRequest's query and params field numbers.
    call = channel.unary_stream("/datamorph.gateway.v1.DataMorphGateway/StreamQuery")
    with pytest.raises(grpc.RpcError) as err:
        list(call(_deep_params_request(120), timeout=20))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value
    assert "decode" in err.value.details()


def test_a_request_of_garbage_bytes_is_invalid_argument(channel: grpc.Channel) -> None:
    call = channel.unary_unary(EXECUTE_QUERY)
    with pytest.raises(grpc.RpcError) as err:
        call(b"\xff\xff\xff\xff", timeout=20)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value


def test_a_shallow_nested_list_is_still_served(channel: grpc.Channel) -> None:
    call = channel.unary_unary(EXECUTE_QUERY)
    raw = call(_deep_params_request(3), timeout=20)
    assert pb.ExecuteQueryResponse.FromString(raw).row_count == 1


@pytest.mark.parametrize("depth", [50, 60, 90, 120])
def test_params_nested_too_deep_are_400_over_rest(rest: Rest, depth: int) -> None:
    """Envoy's JSON parser takes up to 100 levels, protobuf's decoder 100 messages: two per
    JSON list level inside a Value. Between the two the gateway answered 500."""
    param = json.loads("[" * depth + '"x"' + "]" * depth)
    response = rest.post("/execute/query", {"query": "SELECT $1::text", "params": [param]})
    body = rest_error(response, 400, 3)
    if depth < 100:
        assert body["message"].startswith("the request cannot be decoded")


# -- integers JSON numbers cannot carry exactly ----------------------------------------------


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ([2**53], "params[0]"),
        (["ok", -(2**60)], "params[1]"),
        ([[1, 2, 2**63]], "params[0][2]"),
        ([{"a": {"b": 1e20}}], "params[0].a.b"),
    ],
)
def test_integers_beyond_2_53_are_refused_naming_the_field(
    stub: pb_grpc.DataMorphGatewayStub, params: list[object], field: str
) -> None:
    placeholders = ", ".join(f"${i}" for i in range(1, len(params) + 1))
    request = pb.ExecuteQueryRequest(query=f"SELECT {placeholders}", params=as_doubles(params))
    err = invalid(raw_call, stub.ExecuteQuery, request)
    assert [v.field for v in err.violations] == [field]
    assert err.message.startswith(f"{field}: ")
    assert "string" in err.message


def test_integers_up_to_2_53_minus_1_and_fractions_pass(client: GatewayClient) -> None:
    result = client.execute_query(
        "SELECT $1::int8 AS top, $2::int8 AS bottom, $3::float8 AS big_fraction",
        [2**53 - 1, -(2**53 - 1), 1.5],
    )
    assert result.rows == [{"top": 2**53 - 1, "bottom": -(2**53 - 1), "big_fraction": 1.5}]


def test_stream_query_refuses_them_too(stub: pb_grpc.DataMorphGatewayStub) -> None:
    request = pb.StreamQueryRequest(query="SELECT $1::int8", params=as_doubles([2**60]))
    err = invalid(raw_call, lambda r, timeout: list(stub.StreamQuery(r, timeout=timeout)), request)
    assert [v.field for v in err.violations] == ["params[0]"]


def test_the_python_client_sends_them_as_strings(client: GatewayClient) -> None:
    result = client.execute_query("SELECT $1::int8 AS big, $2::int8[] AS arr", [2**60, [1, 2**62]])
    assert result.rows == [{"big": 2**60, "arr": [1, 2**62]}]


def test_a_big_integer_over_rest_is_400_not_silently_rounded(rest: Rest) -> None:
    raw = b'{"query": "SELECT $1::int8 AS v", "params": [9007199254740993]}'
    body = rest_error(rest.post("/execute/query", raw=raw), 400, 3)
    assert body["message"].startswith("params[0]: ")
    assert "string" in body["message"]
    ok = rest.post(
        "/execute/query", {"query": "SELECT $1::int8 AS v", "params": ["9007199254740993"]}
    )
    assert ok.status == 200
    assert ok.json()["rows"] == [{"v": "9007199254740993"}]
