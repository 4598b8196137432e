"""The exact google.rpc details of each kind of error answer, over gRPC and through Envoy.

One table of requests that fail, each with the code, ErrorInfo (reason, domain, metadata)
and BadRequest violations a client gets; both paths must answer the same details, which
Envoy's transcoder renders as JSON (docs/api.md, "Errors").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from datamorph.gateway.v1 import gateway_pb2 as pb
from datamorph.gateway.v1 import gateway_pb2_grpc as pb_grpc

from ..fixtures.envoy import Rest

S = grpc.StatusCode
DOMAIN = "datamorph.gateway"
HTTP = {S.INVALID_ARGUMENT: 400, S.NOT_FOUND: 404, S.ALREADY_EXISTS: 409, S.INTERNAL: 500}
HTTP |= {S.UNAVAILABLE: 503, S.FAILED_PRECONDITION: 400, S.PERMISSION_DENIED: 403}


def raised(sqlstate: str) -> str:
    return f"DO $$ BEGIN RAISE EXCEPTION 'raised' USING ERRCODE = '{sqlstate}'; END $$"


@dataclass(frozen=True)
class Case:
    name: str
    rpc: str
    body: dict[str, Any]
    code: grpc.StatusCode
    reason: str
    metadata: dict[str, str] = field(default_factory=dict)
    violations: list[tuple[str, str]] = field(default_factory=list)
    message: str | None = None


CASES = [
    Case(
        "limit out of range",
        "GetData",
        {"table_names": ["orders"], "limit": 0},
        S.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
        violations=[("limit", "must be between 1 and 1000, got 0")],
        message="limit: must be between 1 and 1000, got 0",
    ),
    Case(
        "unknown table",
        "GetSchemas",
        {"table_names": ["no_such_table"]},
        S.NOT_FOUND,
        "TABLE_NOT_FOUND",
        metadata={"tables": "no_such_table"},
        message='table_names: no such table: "no_such_table"',
    ),
    *(
        Case(
            f"sqlstate {state}",
            "ExecuteQuery",
            {"query": raised(state)},
            code,
            "QUERY_FAILED",
            metadata={"sqlstate": state},
            message="raised",
        )
        for state, code in [
            ("42P06", S.ALREADY_EXISTS),
            ("42P07", S.ALREADY_EXISTS),
            ("42710", S.ALREADY_EXISTS),
            ("42501", S.PERMISSION_DENIED),
            ("23503", S.FAILED_PRECONDITION),
        ]
    ),
    *(
        Case(
            f"sqlstate {state}",
            "ExecuteQuery",
            {"query": raised(state)},
            S.UNAVAILABLE,
            "DATABASE_UNAVAILABLE",
            metadata={"sqlstate": state},
            message="the database connection was lost before the request finished",
        )
        for state in ("57P01", "57P02", "57P03")
    ),
    *(
        Case(
            f"sqlstate {state}",
            "ExecuteQuery",
            {"query": raised(state)},
            S.INTERNAL,
            "INTERNAL",
            message="internal error (request id {request_id})",
        )
        for state in ("XX000", "58030", "F0000", "HV000")
    ),
]

REST_PATHS = {
    "GetData": "/get/data",
    "GetSchemas": "/get/schemas",
    "ExecuteQuery": "/execute/query",
}
REQUESTS = {
    "GetData": pb.GetDataRequest,
    "GetSchemas": pb.GetSchemasRequest,
    "ExecuteQuery": pb.ExecuteQueryRequest,
}


def expected_details(case: Case, request_id: str) -> dict[str, Any]:
    return {
        "reason": case.reason,
        "domain": DOMAIN,
        "metadata": {**case.metadata, "request_id": request_id},
        "violations": case.violations,
    }


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_grpc_answers_the_exact_details(stub: pb_grpc.DataMorphGatewayStub, case: Case) -> None:
    request_id = f"grpc-{case.name.replace(' ', '-')}"
    call = getattr(stub, case.rpc)
    with pytest.raises(grpc.RpcError) as err:
        call(REQUESTS[case.rpc](**case.body), metadata=(("x-request-id", request_id),))
    assert err.value.code() == case.code
    status = next(
        status_pb2.Status.FromString(v)
        for k, v in err.value.trailing_metadata()
        if k == "grpc-status-details-bin"
    )
    info = error_details_pb2.ErrorInfo()
    bad = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(info)
    violations = [
        (v.field, v.description)
        for d in status.details[1:]
        if d.Unpack(bad)
        for v in bad.field_violations
    ]
    got = {
        "reason": info.reason,
        "domain": info.domain,
        "metadata": dict(info.metadata),
        "violations": violations,
    }
    assert got == expected_details(case, request_id)
    if case.message is not None:
        assert err.value.details() == case.message.format(request_id=request_id)
        assert status.message == err.value.details()


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_rest_answers_the_same_details(rest: Rest, case: Case) -> None:
    request_id = f"rest-{case.name.replace(' ', '-')}"
    response = rest.post(REST_PATHS[case.rpc], case.body, headers={"x-request-id": request_id})
    assert response.status == HTTP[case.code], response.body
    body = response.json()
    assert body["status"] == "error"
    assert body["code"] == case.code.value[0]
    info = body["details"][0]
    assert info["@type"] == "type.googleapis.com/google.rpc.ErrorInfo"
    violations = [
        (v["field"], v["description"])
        for d in body["details"][1:]
        if d["@type"] == "type.googleapis.com/google.rpc.BadRequest"
        for v in d["field_violations"]
    ]
    got = {
        "reason": info["reason"],
        "domain": info["domain"],
        "metadata": info.get("metadata", {}),
        "violations": violations,
    }
    assert got == expected_details(case, request_id)
    if case.message is not None:
        assert body["message"] == case.message.format(request_id=request_id)
