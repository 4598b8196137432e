"""The OpenAPI document (issue 15): generated from the descriptor set, complete, valid,
served by Envoy, and true to what the live stack answers (a bounded Schemathesis run).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.api import annotations_pb2
from google.protobuf import descriptor_pb2
from openapi_spec_validator import validate

from datamorph_gateway.auth.keys import key_hash, new_key
from datamorph_gateway.sidecar.descriptor import SERVICE
from datamorph_gateway.sidecar.openapi import ERROR_STATUSES, openapi_document, openapi_yaml

from ..fixtures.envoy import DESCRIPTOR_SET, REPO, EnvoyFactory, Rest, Sidecar
from ..fixtures.gateway import GatewayFactory

DOCUMENT = REPO / "docs" / "openapi.yaml"
FUZZ_KEY = new_key()
READS = ["GetSchemas", "GetData", "StreamQuery", "GetLogs", "WatchLogs"]
# The whole Schemathesis run, both phases, every operation (its own limit: --max-time).
FUZZ_BUDGET_S = 100


def _committed() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(DOCUMENT.read_text(encoding="utf-8"))
    return loaded


def _rules() -> Iterator[tuple[descriptor_pb2.MethodDescriptorProto, str, str]]:
    """(method, verb, path template) of every google.api.http binding in the descriptor."""
    files = descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTOR_SET.read_bytes())
    package, _, name = SERVICE.rpartition(".")
    for file in files.file:
        for service in file.service:
            if file.package != package or service.name != name:
                continue
            for method in service.method:
                rule = method.options.Extensions[annotations_pb2.http]
                for binding in (rule, *rule.additional_bindings):
                    verb = binding.WhichOneof("pattern")
                    if verb not in (None, "custom"):
                        yield method, verb, getattr(binding, verb)


def test_the_committed_document_is_what_make_proto_writes() -> None:
    assert DOCUMENT.read_text(encoding="utf-8") == openapi_yaml(DESCRIPTOR_SET), (
        "docs/openapi.yaml is stale: run `make proto`"
    )


def test_the_document_is_valid_openapi_3_1() -> None:
    document = _committed()
    assert document["openapi"] == "3.1.0"
    validate(document)


def test_every_http_rule_is_an_operation_with_its_messages() -> None:
    document = _committed()
    rules = list(_rules())
    assert len(rules) >= 8
    schemas = document["components"]["schemas"]
    for method, verb, template in rules:
        operation = document["paths"][template][verb]
        assert operation["operationId"] == method.name
        ok = operation["responses"]["200"]["content"]["application/json"]["schema"]
        assert ok == {"$ref": f"#/components/schemas/{method.output_type.lstrip('.')}"}
        assert ("requestBody" in operation) == (verb == "post")
        for status in ERROR_STATUSES:
            if method.name != "Health" and (verb == "post" or status not in (413, 415)):
                assert str(status) in operation["responses"], (method.name, status)
        if method.server_streaming:
            assert operation["responses"]["200"]["x-datamorph-stream"] == "ndjson"
    # Every field of every message, by its name on the wire (preserve_proto_field_names).
    files = descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTOR_SET.read_bytes())
    ours = next(f for f in files.file if f.package == "datamorph.gateway.v1")
    for message in ours.message_type:
        schema = schemas[f"datamorph.gateway.v1.{message.name}"]
        assert schema["description"], message.name
        assert list(schema["properties"]) == [field.name for field in message.field]
        for field in message.field:
            assert schema["properties"][field.name].get("description"), field.name
    for enum in ours.enum_type:
        assert schemas[f"datamorph.gateway.v1.{enum.name}"]["enum"] == [
            value.name for value in enum.value
        ]
    assert set(document["components"]["securitySchemes"]) >= {"apiKey", "bearerJwt", "awsIam"}
    assert document["components"]["securitySchemes"]["awsIam"]["name"] == "x-datamorph-aws-iam"


def test_the_json_mapping_is_the_transcoders() -> None:
    schemas = openapi_document(DESCRIPTOR_SET)["components"]["schemas"]
    query = schemas["datamorph.gateway.v1.ExecuteQueryResponse"]
    # Printed whether set or not (always_print_primitive_fields), by their proto names.
    assert query["required"] == [
        "status", "columns", "rows", "row_count", "rows_affected", "command", "truncated",
    ]  # fmt: skip
    assert query["properties"]["rows"]["items"] == {"description": "Any JSON value, null included."}
    request = schemas["datamorph.gateway.v1.ExecuteQueryRequest"]
    assert "required" not in request  # nothing is required on the wire; the gateway checks
    assert request["properties"]["row_format"]["allOf"] == [
        {"$ref": "#/components/schemas/datamorph.gateway.v1.RowFormat"}
    ]
    start = schemas["datamorph.gateway.v1.StartWorkflowResponse"]
    assert "details" not in start["required"]  # a message field: printed only when set
    assert start["properties"]["details"]["type"] == "object"


def test_envoy_serves_the_document(rest: Rest) -> None:
    response = rest.get("/openapi.json")
    assert response.status == 200
    assert response.json() == _committed()
    wrong = rest.post("/openapi.json", {})
    assert wrong.status == 405
    assert wrong.headers["allow"] == "GET"


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        ("POST", "/get/schemas", {"table_names": ["orders; DROP TABLE x"]}, 400, 3),
        ("POST", "/get/schemas", {"table_names": ["no_such_table"]}, 404, 5),
        ("GET", "/no/such/route", None, 404, 5),
        ("GET", "/execute/query", None, 405, 12),
        ("POST", "/get/data", b'{"table_names": [', 400, 3),
    ],
)
def test_every_rest_error_says_status_error(
    rest: Rest, method: str, path: str, body: object, status: int, code: int
) -> None:
    """The gateway's errors (through the transcoder) and Envoy's own answers alike."""
    raw = body if isinstance(body, bytes) else None
    response = rest.request(method, path, None if raw else body, raw=raw)
    assert response.status == status
    answer = response.json()
    assert answer["status"] == "error"
    assert answer["code"] == code
    assert answer["message"]
    assert isinstance(answer["details"], list)
    assert set(answer) == {"status", "code", "message", "details"}


def test_successes_and_health_keep_their_own_status(rest: Rest) -> None:
    assert rest.get("/health").json()["status"] == "healthy"
    answer = rest.post("/execute/query", {"query": "SELECT 1 AS one"}).json()
    assert answer["status"] == "success"
    stream = rest.post("/stream/query", {"query": "SELECT 1 AS one"})
    assert stream.status == 200
    assert b'"status":"error"' not in stream.body


@pytest.fixture
def fuzz_stack(make_gateway: GatewayFactory, make_envoy: EnvoyFactory, tmp_path: Path) -> Sidecar:
    """A gateway and its Envoy for the fuzz run, behind an auth policy whose one principal
    may read and run read-only SQL: ExecuteQuery:read runs every query in a READ ONLY
    transaction, refused before it starts when it writes, so no generated query can change
    the session database. StartWorkflow is allowed: the built-in orchestrator only ever
    creates a new table from one query, and generated prompts are not queries."""
    policy = {
        "principals": [
            {
                "name": "fuzz",
                "api_keys": [key_hash(FUZZ_KEY)],
                "allow": [*READS, "ExecuteQuery:read", "StartWorkflow"],
            }
        ]
    }
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(policy), encoding="utf-8")
    gateway = make_gateway(auth_policy_file=str(path), log_watch_max_s=2.0)
    return make_envoy(gateway.address)


@pytest.mark.slow
@pytest.mark.timeout(FUZZ_BUDGET_S + 120)
def test_schemathesis_finds_nothing_against_the_live_stack(
    fuzz_stack: Sidecar, tmp_path: Path
) -> None:
    """Coverage and fuzzing phases on every operation: no 5xx, and every status, content
    type and body as the document says (NDJSON streams line by line: schemathesis_hooks)."""
    url = fuzz_stack.rest.url
    # The document as this Envoy serves it, from a file: loaded from its URL, Schemathesis
    # would leave that operation (GET /openapi.json) out.
    document = tmp_path / "openapi.json"
    document.write_bytes(fuzz_stack.rest.get("/openapi.json").body)
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "run",
        str(document),
        "--url", url,
        "--phases", "coverage,fuzzing",
        "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,"
        "response_schema_conformance,every_ndjson_line_conforms",
        "--max-time", str(FUZZ_BUDGET_S),
        "--max-examples", "40",
        "--request-timeout", "20",
        "--workers", "2",
        "--seed", "15",
        "--generation-with-security-parameters", "false",
        "--header", f"x-api-key: {FUZZ_KEY}",
        "--generation-database", "none",
        "--no-color",
        "--output-truncate", "false",
        "--report-dir", str(tmp_path / "report"),
    ]  # fmt: skip
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "tests.openapi.schemathesis_hooks",
        "PYTHONPATH": str(REPO),
    }
    done = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=FUZZ_BUDGET_S + 90
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-12000:]
    # Every operation was exercised, in both phases.
    operations = sum(len(item) for item in _committed()["paths"].values())
    assert f"Tested: {operations}" in output, output[-3000:]
    assert "Coverage" in output
    assert "Fuzzing" in output
