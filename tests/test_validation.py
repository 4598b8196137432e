"""Bad input: every field named, the right code, nothing reaches the database."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest

from datamorph.gateway.v1 import gateway_pb2 as pb
from datamorph.gateway.v1 import gateway_pb2_grpc as pb_grpc
from datamorph_client import GatewayClient, GatewayError
from datamorph_gateway.config import LimitsSettings
from datamorph_gateway.errors import InvalidArgument
from datamorph_gateway.validation import Validator
from datamorph_gateway.workflows import WorkflowRequest

from .fixtures.gateway import GatewayFactory


def invalid(call: Callable[..., Any], *args: Any, **kwargs: Any) -> GatewayError:
    with pytest.raises(GatewayError) as err:
        call(*args, **kwargs)
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT, err.value
    return err.value


@pytest.mark.parametrize("method", ["get_schemas", "get_data"])
def test_table_names_must_not_be_empty(client: GatewayClient, method: str) -> None:
    err = invalid(getattr(client, method), [])
    assert err.violations[0].field == "table_names"
    assert "table_names" in err.message


@pytest.mark.parametrize("method", ["get_schemas", "get_data"])
def test_too_many_table_names(client: GatewayClient, method: str) -> None:
    err = invalid(getattr(client, method), ["customers"] * 101)
    assert err.violations[0].field == "table_names"
    assert "at most 100" in err.message


@pytest.mark.parametrize(
    "name",
    [
        "orders; DROP TABLE customers",
        "customers--",
        "x' OR '1'='1",
        '"unterminated',
        "a.b.c",
        "",
        "   ",
        ".orders",
        "orders.",
        '""',
        "a" * 64,
    ],
)
def test_malformed_table_names_are_invalid_and_named(client: GatewayClient, name: str) -> None:
    err = invalid(client.get_data, ["customers", name])
    assert [v.field for v in err.violations] == ["table_names[1]"]
    assert "table_names[1]" in err.message


def test_every_bad_name_is_reported(client: GatewayClient) -> None:
    err = invalid(client.get_schemas, ["bad name", "customers", "x;y"])
    assert [v.field for v in err.violations] == ["table_names[0]", "table_names[2]"]


def test_injection_in_a_quoted_name_is_just_a_name(client: GatewayClient) -> None:
    """A quoted identifier may hold anything; it is looked up, never executed."""
    with pytest.raises(GatewayError) as err:
        client.get_data(['"customers; DROP TABLE orders"'])
    assert err.value.code == grpc.StatusCode.NOT_FOUND
    assert client.get_data(["orders"], limit=1)["orders"].rows


@pytest.mark.parametrize("query", ["", "   \n\t", "-- just a comment", "/* nothing */ ;"])
def test_empty_query(client: GatewayClient, query: str) -> None:
    err = invalid(client.execute_query, query)
    assert err.violations[0].field == "query"


def test_oversized_query(make_gateway: GatewayFactory) -> None:
    gateway = make_gateway(max_query_bytes=1000)
    with GatewayClient(gateway.address) as c:
        err = invalid(c.execute_query, "SELECT '" + "x" * 1000 + "'")
    assert err.violations[0].field == "query"
    assert "over the limit of 1000" in err.message


def test_nul_in_query_or_params(client: GatewayClient) -> None:
    assert invalid(client.execute_query, "SELECT 1\x00").violations[0].field == "query"
    err = invalid(client.execute_query, "SELECT $1::text", ["a\x00b"])
    assert err.violations[0].field == "params[0]"


def test_bad_request_detail_is_present_on_the_wire(stub: pb_grpc.DataMorphGatewayStub) -> None:
    with pytest.raises(grpc.RpcError) as err:
        stub.GetData(pb.GetDataRequest(table_names=["customers"], limit=0))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    keys = [k for k, _ in err.value.trailing_metadata()]
    assert "grpc-status-details-bin" in keys


def test_bad_workflow_requests_name_their_field() -> None:
    cases: list[tuple[pb.StartWorkflowRequest, str]] = [
        (pb.StartWorkflowRequest(prompt="  "), "prompt"),
        (pb.StartWorkflowRequest(prompt="x" * 2000, source_tables=["t"]), "prompt"),
        (pb.StartWorkflowRequest(prompt="p", source_tables=["ok", 'bad"name']), "source_tables[1]"),
        (pb.StartWorkflowRequest(prompt="p", target_table="a.b.c"), "target_table"),
        (pb.StartWorkflowRequest(prompt="p", idempotency_key="k" * 300), "idempotency_key"),
        (pb.StartWorkflowRequest(prompt="p", idempotency_key="a\nb"), "idempotency_key"),
    ]
    check = Validator(LimitsSettings(max_query_bytes=1000))
    for request, field in cases:
        with pytest.raises(InvalidArgument) as err:
            check.start_workflow(request)
        assert [v.field for v in err.value.violations] == [field]
    request = pb.StartWorkflowRequest(prompt="p", source_tables=["t"], target_table="x")
    assert check.start_workflow(request) == WorkflowRequest("p", ("t",), "x")
