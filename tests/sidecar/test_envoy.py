"""REST/JSON and gRPC through a real Envoy in front of a real gateway and PostgreSQL.

What an old Flask-gateway client, a Lambda and an operator see on Envoy's one port: the
contract's routes and JSON shapes, its error statuses and bodies, Envoy's own answers
(unknown route, wrong method, bad JSON, body limits) in the same JSON shape, request ids
end to end, and native gRPC on the same listener.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import psycopg2
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from datamorph.gateway.v1 import gateway_pb2 as pb
from datamorph.gateway.v1 import gateway_pb2_grpc as pb_grpc
from datamorph_gateway.app import MAX_RECEIVE_BYTES, MAX_SEND_BYTES, Gateway
from datamorph_gateway.config import Settings
from datamorph_gateway.logging_setup import RequestIdFilter
from datamorph_gateway.sidecar import SidecarOptions

from ..fixtures.envoy import TEST_BODY_LIMIT, EnvoyFactory, Response, Rest, Sidecar

# The contract's gRPC code → HTTP status table, plus UNIMPLEMENTED as Envoy maps it.
HTTP_STATUS = {3: 400, 4: 504, 5: 404, 6: 409, 7: 403, 8: 429, 9: 400, 10: 409, 12: 501}
HTTP_STATUS |= {13: 500, 14: 503, 16: 401}
SNAKE = re.compile(r"^[a-z][a-z0-9_]*$")
COLUMN_KEYS = {
    "column_name",
    "data_type",
    "is_nullable",
    "column_default",
    "ordinal_position",
    "character_maximum_length",
    "numeric_precision",
    "numeric_scale",
    "udt_name",
    "type",
}


def error_of(response: Response, status: int, code: int) -> dict[str, Any]:
    """Assert a google.rpc.Status JSON body with `code` under HTTP `status`; return it."""
    assert response.status == status, (response.status, response.body)
    body = response.json()
    assert set(body) == {"status", "code", "message", "details"}, body
    assert body["status"] == "error", body
    assert body["code"] == code, body
    assert isinstance(body["message"], str), body
    assert body["message"], body
    return dict(body)


def gateway_error(response: Response, status: int, code: int) -> dict[str, Any]:
    """An error the gateway answered (not Envoy): it carries the gateway's ErrorInfo."""
    body = error_of(response, status, code)
    info = [d for d in body["details"] if d["@type"].endswith("google.rpc.ErrorInfo")]
    assert info, body
    assert info[0]["domain"] == "datamorph.gateway", body
    return body


def error_info(body: dict[str, Any]) -> dict[str, Any]:
    return next(d for d in body["details"] if d["@type"].endswith("google.rpc.ErrorInfo"))


def query(rest: Rest, sql: str, **extra: Any) -> Response:
    return rest.post("/execute/query", {"query": sql, **extra})


# -- every route ---------------------------------------------------------------------------


def test_get_schemas_answers_the_contract_shape_in_snake_case(rest: Rest) -> None:
    response = rest.post("/get/schemas", {"table_names": ["orders"]})
    assert response.status == 200
    body = response.json()
    assert body["status"] == "success"
    orders = body["schemas"]["orders"]
    assert set(orders) == {
        "table_name",
        "schema",
        "columns",
        "primary_keys",
        "foreign_keys",
        "table_type",
    }
    assert (orders["table_name"], orders["schema"], orders["primary_keys"]) == (
        "orders",
        "public",
        ["id"],
    )
    for column in orders["columns"]:
        assert set(column) == COLUMN_KEYS
    id_column = orders["columns"][0]
    # Defaults are printed (always_print_primitive_fields), nulls are JSON nulls.
    assert id_column["column_name"] == "id"
    assert id_column["character_maximum_length"] is None
    assert orders["foreign_keys"] == [
        {
            "column_name": "customer_id",
            "foreign_table_schema": "public",
            "foreign_table_name": "customers",
            "foreign_column_name": "id",
            "constraint_name": "orders_customer_id_fkey",
        }
    ]


def test_get_data_answers_rows_as_plain_objects(rest: Rest) -> None:
    response = rest.post("/get/data", {"table_names": ["sales.orders"], "limit": 3})
    assert response.status == 200
    body = response.json()
    assert set(body) == {"status", "data", "columns"}
    assert body["status"] == "success"
    rows = body["data"]["sales.orders"]
    assert len(rows) == 3
    assert all(set(row) == {"id", "note"} for row in rows)
    assert body["columns"]["sales.orders"] == [
        {"name": "id", "type": "int4"},
        {"name": "note", "type": "text"},
    ]


def test_execute_query_answers_every_field_even_defaults(rest: Rest) -> None:
    response = query(rest, "SELECT 1 AS one, 'x' AS two")
    assert response.status == 200
    assert response.json() == {
        "status": "success",
        "columns": [
            {"name": "one", "type": "int4", "key": "one"},
            {"name": "two", "type": "text", "key": "two"},
        ],
        "rows": [{"one": 1, "two": "x"}],
        "row_count": 1,
        "rows_affected": 0,
        "command": "SELECT",
        "truncated": False,
    }


def test_int64_and_numeric_values_survive_the_transcoder_exactly(rest: Rest) -> None:
    response = query(rest, "SELECT big, exact, ratio FROM typed WHERE id = 1")
    row = response.json()["rows"][0]
    assert row == {
        "big": "9007199254740993",
        "exact": "12345678901234567890.123456789",
        "ratio": "NaN",
    }
    small = query(rest, "SELECT 9007199254740991::int8 AS max_safe, 0.1::float8 AS f").json()
    assert small["rows"] == [{"max_safe": 9007199254740991, "f": 0.1}]


def test_health_answers_the_health_response_itself(rest: Rest) -> None:
    response = rest.get("/health")
    assert response.status == 200
    body = response.json()
    assert body["status"] == "healthy"
    assert body["checks"]["database"]["status"] == "healthy"
    assert set(body["checks"]["database"]) == {"status", "latency_ms", "message"}
    assert body["version"]


def test_start_route_reaches_the_gateway(rest: Rest) -> None:
    """StartWorkflow is routed and its answer mapped (501 while it is not implemented)."""
    response = rest.post("/start", {"prompt": "copy customers", "source_tables": ["customers"]})
    body = response.json()
    if response.status == 200:
        assert body["status"] == "success"
        assert body["run_id"]
    else:
        gateway_error(response, HTTP_STATUS[body["code"]], body["code"])


def test_get_logs_route_reaches_the_gateway(rest: Rest) -> None:
    """GetLogs is routed with its path variable; an unknown run is an error from the gateway."""
    response = rest.get("/get/logs/20240101_000000_deadbeef")
    body = response.json()
    assert response.status != 200
    gateway_error(response, HTTP_STATUS[body["code"]], body["code"])


# -- the Flask gateway's example flow, as a plain urllib client runs it ----------------------


def test_the_flask_gateways_example_flow_works_unchanged(rest: Rest) -> None:
    def post(path: str, payload: dict[str, Any]) -> Any:
        request = urllib.request.Request(  # noqa: S310 - http to the test's own Envoy
            f"{rest.url}{path}",
            data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            assert response.status == 200
            return json.load(response)

    schemas = post("/get/schemas", {"table_names": ["customers", "orders"]})
    assert schemas["status"] == "success"
    assert [c["column_name"] for c in schemas["schemas"]["customers"]["columns"]][:2] == [
        "id",
        "name",
    ]
    data = post("/get/data", {"table_names": ["customers"], "limit": 5})
    assert data["status"] == "success"
    assert len(data["data"]["customers"]) == 5
    first_id = data["data"]["customers"][0]["id"]
    result = post(
        "/execute/query",
        {"query": f"SELECT count(*) AS n FROM orders WHERE customer_id = {int(first_id)}"},
    )
    assert result["status"] == "success"
    assert result["row_count"] == 1
    assert isinstance(result["rows"][0]["n"], int)


# -- errors from the gateway: HTTP status from the gRPC code --------------------------------


def test_invalid_argument_is_400_with_the_field_violation(rest: Rest) -> None:
    body = gateway_error(rest.post("/get/data", {"table_names": ["orders"], "limit": 0}), 400, 3)
    violations = [d for d in body["details"] if d["@type"].endswith("google.rpc.BadRequest")]
    assert violations[0]["field_violations"][0]["field"] == "limit"


def test_failed_precondition_is_400(rest: Rest) -> None:
    body = gateway_error(query(rest, "INSERT INTO ledger VALUES (1, -1)"), 400, 9)
    assert error_info(body)["metadata"]["sqlstate"] == "23514"


def test_not_found_is_404_naming_the_table(rest: Rest) -> None:
    body = gateway_error(rest.post("/get/schemas", {"table_names": ["no_such_table"]}), 404, 5)
    assert "no_such_table" in body["message"]


def test_already_exists_is_409(rest: Rest) -> None:
    body = gateway_error(query(rest, "INSERT INTO unique_things VALUES ('taken')"), 409, 6)
    assert error_info(body)["metadata"]["sqlstate"] == "23505"


def test_aborted_is_409(rest: Rest) -> None:
    sql = "DO $$ BEGIN RAISE EXCEPTION 'conflict' USING ERRCODE = 'serialization_failure'; END $$"
    gateway_error(query(rest, sql), 409, 10)


def test_internal_error_is_500_and_names_the_request_id(rest: Rest) -> None:
    """PostgreSQL's own internal_error is a fault, not the caller's: INTERNAL, no details."""
    sql = "DO $$ BEGIN RAISE EXCEPTION 'boom' USING ERRCODE = 'internal_error'; END $$"
    response = query(rest, sql)
    body = gateway_error(response, 500, 13)
    request_id = response.headers["x-request-id"]
    assert body["message"] == f"internal error (request id {request_id})"
    assert "boom" not in response.body.decode()


@pytest.fixture(scope="module")
def limited(
    seeded_database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Gateway, Sidecar]]:
    """A gateway with one connection and short timeouts, behind its own Envoy."""
    from ..fixtures.envoy import running_envoy
    from ..fixtures.gateway import gateway_settings

    settings = gateway_settings(
        seeded_database,
        db_pool_min=0,
        db_pool_max=1,
        db_pool_timeout_s=0.2,
        statement_timeout_s=1.5,
    )
    gateway = Gateway(settings)
    gateway.start()
    try:
        with running_envoy(tmp_path_factory.mktemp("limited"), gateway.address) as sidecar:
            yield gateway, sidecar
    finally:
        gateway.stop(0)


def test_deadline_exceeded_is_504(limited: tuple[Gateway, Sidecar]) -> None:
    _, sidecar = limited
    body = gateway_error(query(sidecar.rest, "SELECT pg_sleep(5)"), 504, 4)
    assert error_info(body)["metadata"]["sqlstate"] == "57014"  # query_canceled


def test_resource_exhausted_is_429_when_every_connection_is_busy(
    limited: tuple[Gateway, Sidecar], seeded_database: str
) -> None:
    _, sidecar = limited
    first: list[Any] = []
    holder = threading.Thread(
        target=lambda: first.append(query(sidecar.rest, "SELECT pg_sleep(1.2) AS held"))
    )
    holder.start()
    try:
        _wait_until_sleeping(seeded_database)
        body = gateway_error(query(sidecar.rest, "SELECT 1"), 429, 8)
        assert error_info(body)["reason"] == "POOL_EXHAUSTED"
    finally:
        holder.join(timeout=30)
    assert first[0].status == 200


def _wait_until_sleeping(dsn: str) -> None:
    """Poll pg_stat_activity until another session of the database is in pg_sleep (bounded)."""
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    deadline = time.monotonic() + 10
    try:
        with conn.cursor() as cur:
            while time.monotonic() < deadline:
                cur.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep' "
                    "AND datname = current_database() AND pid <> pg_backend_pid()"
                )
                row = cur.fetchone()
                if row is not None and row[0]:
                    return
                time.sleep(0.01)
    finally:
        conn.close()
    raise AssertionError("the first query never started")


@pytest.fixture(scope="module")
def unhealthy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sidecar]:
    """A gateway whose database is unreachable, behind its own Envoy."""
    from ..fixtures.envoy import running_envoy
    from ..fixtures.gateway import gateway_settings

    gateway = Gateway(
        gateway_settings(
            "postgresql://postgres@127.0.0.1:1/absent",
            db_connect_attempts=1,
            db_connect_timeout_s=0.5,
        )
    )
    gateway.start()
    try:
        with running_envoy(tmp_path_factory.mktemp("unhealthy"), gateway.address) as sidecar:
            yield sidecar
    finally:
        gateway.stop(0)


def test_unavailable_is_503(unhealthy: Sidecar) -> None:
    response = unhealthy.rest.post("/get/schemas", {"table_names": ["orders"]})
    gateway_error(response, 503, 14)


def test_unhealthy_health_is_503_with_the_health_response_shape(unhealthy: Sidecar) -> None:
    response = unhealthy.rest.get("/health")
    assert response.status == 503
    body = response.json()
    assert set(body) == {"status", "checks", "version"}
    assert body["status"] == "unhealthy"
    assert body["checks"]["database"]["status"] == "unhealthy"
    assert body["checks"]["database"]["message"]
    assert body["version"]
    _lua_ran_clean(unhealthy)


def _lua_ran_clean(sidecar: Sidecar) -> None:
    """The /health filter ran to its end: Envoy logged no script error, such as
    "object used outside of proper scope" (a headers object used after body() yielded)."""
    assert sidecar.process.log_path is not None
    log = sidecar.process.log_path.read_text()
    assert "outside of proper scope" not in log, log
    assert "[lua]" not in log, log


def test_grpc_health_through_envoy_reports_not_serving(unhealthy: Sidecar) -> None:
    with grpc.insecure_channel(unhealthy.grpc_address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        answer = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert answer.status == health_pb2.HealthCheckResponse.NOT_SERVING
        # The gateway's own Health RPC keeps its gRPC form: UNAVAILABLE, not a JSON body.
        with pytest.raises(grpc.RpcError) as caught:
            pb_grpc.DataMorphGatewayStub(channel).Health(pb.HealthRequest(), timeout=10)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


# -- Envoy's own answers, in the same JSON shape --------------------------------------------


def test_unknown_route_is_404_json(rest: Rest) -> None:
    body = error_of(rest.get("/no/such/route"), 404, 5)
    assert "/no/such/route" in body["message"]


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", "/get/schemas", "POST"),
        ("PUT", "/execute/query", "POST"),
        ("DELETE", "/health", "GET"),
        ("POST", "/get/logs/some_run", "GET"),
    ],
)
def test_wrong_method_is_405_json_with_allow(
    rest: Rest, method: str, path: str, allow: str
) -> None:
    response = rest.request(method, path, {} if method in ("POST", "PUT") else None)
    body = error_of(response, 405, 12)
    assert response.headers["allow"] == allow
    assert method in body["message"]


def test_malformed_json_is_400_json(rest: Rest) -> None:
    body = error_of(rest.post("/get/schemas", raw=b'{"table_names": ['), 400, 3)
    assert body["details"] == []


def test_a_body_that_is_not_an_object_is_400_json(rest: Rest) -> None:
    error_of(rest.post("/execute/query", raw=b"[1, 2]"), 400, 3)


def test_unknown_query_parameter_is_400_json(rest: Rest) -> None:
    body = error_of(rest.get("/health?verbose=1"), 400, 3)
    assert "verbose" in body["message"]
    error_of(rest.post("/get/schemas?x=1", {"table_names": ["orders"]}), 400, 3)


def test_unknown_body_fields_are_ignored_as_the_flask_gateway_did(rest: Rest) -> None:
    response = rest.post("/get/schemas", {"table_names": ["tiny"], "client": "old-script"})
    assert response.status == 200


# -- body limits: delivered whole or refused with a clear error -----------------------------


def test_a_result_just_under_the_limit_is_delivered_whole(rest: Rest) -> None:
    size = TEST_BODY_LIMIT - 1024
    response = query(rest, f"SELECT repeat('x', {size}) AS s")
    assert response.status == 200
    assert response.json()["rows"][0]["s"] == "x" * size


def test_a_result_over_the_limit_is_refused_with_a_clear_error(rest: Rest) -> None:
    response = query(rest, f"SELECT repeat('x', {TEST_BODY_LIMIT}) AS s")
    body = error_of(response, 500, 13)
    assert f"larger than the REST limit of {TEST_BODY_LIMIT} bytes" in body["message"]
    assert "max_rows" in body["message"]


def test_the_same_result_over_grpc_through_envoy_is_not_limited(envoy: Sidecar) -> None:
    with grpc.insecure_channel(envoy.grpc_address) as channel:
        stub = pb_grpc.DataMorphGatewayStub(channel)
        answer = stub.ExecuteQuery(
            pb.ExecuteQueryRequest(query=f"SELECT repeat('x', {TEST_BODY_LIMIT}) AS s"),
            timeout=30,
        )
    assert len(answer.rows[0].struct_value.fields["s"].string_value) == TEST_BODY_LIMIT


def test_a_request_just_under_the_limit_is_served(rest: Rest) -> None:
    head = json.dumps({"query": "SELECT 1 AS one -- "})[:-2]
    padding = "p" * (TEST_BODY_LIMIT - 64 - len(head))
    raw = f'{head}{padding}"}}'.encode()
    assert TEST_BODY_LIMIT - 100 < len(raw) < TEST_BODY_LIMIT
    response = rest.post("/execute/query", raw=raw)
    assert response.status == 200
    assert response.json()["rows"] == [{"one": 1}]


def test_a_request_over_the_limit_is_413_json(rest: Rest) -> None:
    raw = json.dumps({"query": "SELECT 1 -- " + "p" * TEST_BODY_LIMIT}).encode()
    body = error_of(rest.post("/execute/query", raw=raw), 413, 8)
    assert f"larger than the REST limit of {TEST_BODY_LIMIT} bytes" in body["message"]


def test_json_nested_too_deep_for_the_transcoder_is_an_error_not_an_empty_200(rest: Rest) -> None:
    depth = 80
    response = query(rest, f"SELECT '{'[' * depth}{']' * depth}'::jsonb AS deep")
    assert response.status >= 500
    assert response.json()["message"]


def test_default_limits_match_the_gateways_grpc_message_limits() -> None:
    defaults = SidecarOptions()
    assert (
        defaults.max_request_bytes
        == Settings().sidecar.envoy_max_request_bytes
        == MAX_RECEIVE_BYTES
    )
    assert (
        defaults.max_response_bytes == Settings().sidecar.envoy_max_response_bytes == MAX_SEND_BYTES
    )


# -- timeouts and retries -------------------------------------------------------------------


def test_a_call_longer_than_the_route_timeout_is_504_json(
    gateway: Gateway, make_envoy: EnvoyFactory
) -> None:
    sidecar = make_envoy(gateway.address, route_timeout_s=0.3)
    body = error_of(query(sidecar.rest, "SELECT pg_sleep(1)"), 504, 4)
    assert "timeout" in body["message"]


def test_a_call_past_the_circuit_breaker_is_refused_at_once_as_unavailable(
    gateway: Gateway, make_envoy: EnvoyFactory
) -> None:
    """Envoy lets 4 × GRPC_MAX_WORKERS calls per gateway be in progress (one worker here: 4);
    the next is refused while those still run, in the same words for REST and gRPC."""
    sidecar = make_envoy(gateway.address, gateway_max_workers=1)
    message = (
        "the gateways are at capacity: 4 calls are already in progress through this Envoy; "
        "try again shortly"
    )
    with futures.ThreadPoolExecutor(4) as pool:
        held = [pool.submit(query, sidecar.rest, "SELECT pg_sleep(2)") for _ in range(4)]
        deadline = time.monotonic() + 10
        while sidecar.stat("cluster.datamorph_gateway.upstream_rq_active") < 4:
            assert time.monotonic() < deadline, "the four calls never were in progress"
            time.sleep(0.02)
        refused = query(sidecar.rest, "SELECT 1")
        with (
            grpc.insecure_channel(sidecar.grpc_address) as channel,
            pytest.raises(grpc.RpcError) as caught,
        ):
            pb_grpc.DataMorphGatewayStub(channel).Health(pb.HealthRequest(), timeout=10)
        assert not any(call.done() for call in held)
        assert [call.result(timeout=10).status for call in held] == [200] * 4
    assert error_of(refused, 503, 14)["message"] == message
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert caught.value.details() == message


def test_start_workflow_gets_the_long_timeout_everything_else_the_short(envoy: Sidecar) -> None:
    host = _virtual_host(json.loads(envoy.process.admin("/config_dump")))
    timeouts = {
        r["match"].get("path", r["match"].get("prefix")): r["route"]
        for r in host["routes"]
        if "route" in r
    }
    start = timeouts["/datamorph.gateway.v1.DataMorphGateway/StartWorkflow"]
    assert start["timeout"] == "960s"
    assert start["idle_timeout"] == "960s"
    assert timeouts["/"]["timeout"] == "60s"
    # What Envoy loaded: the writes take the virtual host's policy, which never retries a
    # call that may have reached a gateway (test_envoy_config pins every route).
    execute = timeouts["/datamorph.gateway.v1.DataMorphGateway/ExecuteQuery"]
    assert "retry_policy" not in start
    assert "retry_policy" not in execute
    assert host["retry_policy"]["retry_on"] == "connect-failure,refused-stream,reset-before-request"


def _virtual_host(dump: dict[str, Any]) -> dict[str, Any]:
    for config in dump["configs"]:
        if config["@type"].endswith("RoutesConfigDump"):
            for static in config.get("static_route_configs", []):
                [host] = static["route_config"]["virtual_hosts"]
                return dict(host)
    raise AssertionError("no route configuration in the config dump")


def test_client_retry_headers_do_not_make_envoy_retry(unhealthy: Sidecar) -> None:
    before = unhealthy.stat("cluster.datamorph_gateway.upstream_rq_retry")
    response = unhealthy.rest.post(
        "/execute/query",
        {"query": "SELECT 1"},
        headers={
            "x-envoy-retry-on": "5xx,reset,connect-failure,retriable-4xx",
            "x-envoy-retry-grpc-on": "unavailable,internal,resource-exhausted",
            "x-envoy-max-retries": "3",
        },
    )
    assert response.status == 503
    assert unhealthy.stat("cluster.datamorph_gateway.upstream_rq_retry") == before


# -- request ids and forwarded headers ------------------------------------------------------


def test_the_callers_request_id_reaches_the_gateway_and_comes_back(
    rest: Rest, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.handler.addFilter(RequestIdFilter())
    with caplog.at_level(logging.INFO, logger="datamorph_gateway.access"):
        response = rest.post(
            "/get/schemas", {"table_names": ["nope"]}, headers={"x-request-id": "req-42.a"}
        )
    body = gateway_error(response, 404, 5)
    assert response.headers["x-request-id"] == "req-42.a"
    assert error_info(body)["metadata"]["request_id"] == "req-42.a"
    lines = [r for r in caplog.records if getattr(r, "request_id", None) == "req-42.a"]
    assert lines
    assert "GetSchemas" in lines[0].getMessage()


def test_envoy_makes_a_request_id_when_the_caller_sends_none(rest: Rest) -> None:
    response = rest.post("/get/schemas", {"table_names": ["nope"]})
    body = gateway_error(response, 404, 5)
    generated = response.headers["x-request-id"]
    assert generated
    assert error_info(body)["metadata"]["request_id"] == generated


class _RecordingHealth(pb_grpc.DataMorphGatewayServicer):
    """Stands in for the gateway to show what metadata Envoy forwards: the gateway itself
    does not reveal the headers it receives (authentication will read them later)."""

    def __init__(self) -> None:
        self.metadata: dict[str, str] = {}

    def Health(self, request: pb.HealthRequest, context: grpc.ServicerContext) -> pb.HealthResponse:
        self.metadata = {m.key: str(m.value) for m in context.invocation_metadata() or ()}
        return pb.HealthResponse(status="healthy", version="recording")


def test_authorization_api_key_and_request_id_are_forwarded_as_metadata(
    make_envoy: EnvoyFactory,
) -> None:
    recorder = _RecordingHealth()
    with futures.ThreadPoolExecutor(2) as pool:
        server = grpc.server(pool)
        pb_grpc.add_DataMorphGatewayServicer_to_server(recorder, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        try:
            sidecar = make_envoy(f"127.0.0.1:{port}")
            response = sidecar.rest.get(
                "/health",
                headers={
                    "authorization": "Bearer t0ken",
                    "x-api-key": "k3y",
                    "x-request-id": "rid-1",
                },
            )
            assert response.status == 200
            assert response.json()["version"] == "recording"
        finally:
            server.stop(0).wait()
    assert recorder.metadata["authorization"] == "Bearer t0ken"
    assert recorder.metadata["x-api-key"] == "k3y"
    assert recorder.metadata["x-request-id"] == "rid-1"


# -- native gRPC on the same listener -------------------------------------------------------


def test_every_rpc_works_over_grpc_through_envoy(envoy: Sidecar) -> None:
    with grpc.insecure_channel(envoy.grpc_address) as channel:
        stub = pb_grpc.DataMorphGatewayStub(channel)
        schemas = stub.GetSchemas(pb.GetSchemasRequest(table_names=["orders"]), timeout=10)
        assert schemas.schemas["orders"].table_name == "orders"
        data = stub.GetData(pb.GetDataRequest(table_names=["tiny"], limit=2), timeout=10)
        assert len(data.data["tiny"].values) == 2
        result = stub.ExecuteQuery(pb.ExecuteQueryRequest(query="SELECT 2 AS two"), timeout=10)
        assert result.rows[0].struct_value.fields["two"].number_value == 2
        assert stub.Health(pb.HealthRequest(), timeout=10).status == "healthy"
        # Not implemented yet, or a run that does not exist: the gateway's own status.
        for call in (
            lambda: stub.StartWorkflow(pb.StartWorkflowRequest(prompt="p"), timeout=10),
            lambda: stub.GetLogs(pb.GetLogsRequest(run_id="20240101_000000_deadbeef"), timeout=10),
        ):
            code, details = _grpc_outcome(call)
            assert code != grpc.StatusCode.UNAVAILABLE, details
            assert not details.startswith("{")
        with pytest.raises(grpc.RpcError) as caught:
            stub.GetSchemas(pb.GetSchemasRequest(table_names=["nope"]), timeout=10)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="datamorph.gateway.v1.DataMorphGateway"),
            timeout=10,
        )
        assert health.status == health_pb2.HealthCheckResponse.SERVING


def _grpc_outcome(call: Any) -> tuple[grpc.StatusCode, str]:
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


def test_server_reflection_streams_through_envoy(envoy: Sidecar) -> None:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    with grpc.insecure_channel(envoy.grpc_address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        answers = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
        )
        names = {s.name for a in answers for s in a.list_services_response.service}
    assert "datamorph.gateway.v1.DataMorphGateway" in names
    assert "grpc.health.v1.Health" in names


def test_envoys_own_errors_reach_grpc_callers_as_grpc_status(make_envoy: EnvoyFactory) -> None:
    """No gateway behind Envoy: gRPC callers get UNAVAILABLE with a plain message, REST
    callers the JSON shape, and REST /health the unhealthy health shape."""
    with socket.socket() as reserved:
        reserved.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        sidecar = make_envoy(f"127.0.0.1:{reserved.getsockname()[1]}", connect_timeout_s=1)
        with (
            grpc.insecure_channel(sidecar.grpc_address) as channel,
            pytest.raises(grpc.RpcError) as caught,
        ):
            pb_grpc.DataMorphGatewayStub(channel).Health(pb.HealthRequest(), timeout=10)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert not caught.value.details().startswith("{")
        error_of(sidecar.rest.post("/get/schemas", {"table_names": ["x"]}), 503, 14)
        health = sidecar.rest.get("/health")
        assert health.status == 503
        body = health.json()
        assert body["status"] == "unhealthy"
        assert body["checks"]["gateway"]["status"] == "unhealthy"
        assert body["checks"]["gateway"]["message"]
        _lua_ran_clean(sidecar)


# -- shapes ---------------------------------------------------------------------------------


def test_every_success_body_says_success_in_snake_case(rest: Rest) -> None:
    bodies = [
        rest.post("/get/schemas", {"table_names": ['"Mixed Schema"."Order Items"']}).json(),
        rest.post("/get/data", {"table_names": ["cameltable"], "limit": 1}).json(),
        query(rest, "SELECT 1 AS a", row_format="ROW_FORMAT_ARRAY").json(),
    ]
    for body in bodies:
        assert body["status"] == "success"
        _assert_snake_case(body, skip_under={"schemas", "data", "columns", "rows"})
    columns = bodies[0]["schemas"]['"Mixed Schema"."Order Items"']["columns"]
    assert all(set(c) == COLUMN_KEYS for c in columns)
    assert bodies[2]["rows"] == [[1]]


def _assert_snake_case(value: Any, skip_under: set[str]) -> None:
    """Field names are snake_case; maps keyed by table or column names are skipped."""
    if isinstance(value, dict):
        for key, item in value.items():
            assert SNAKE.match(key), key
            if key not in skip_under:
                _assert_snake_case(item, skip_under)
    elif isinstance(value, list):
        for item in value:
            _assert_snake_case(item, skip_under)
