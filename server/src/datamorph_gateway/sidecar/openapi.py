"""The REST API as an OpenAPI 3.1 document, generated from the descriptor set `make proto` writes.

Everything comes from ``envoy/gateway.binpb`` (read with ``descriptor_pb2``, never from the
.proto text): the routes from the ``google.api.http`` rules, the schemas from the messages
and enums, the descriptions from the proto comments (the set keeps source info). The
schemas say what the transcoder puts on the wire, following the proto3 JSON mapping as
filters.PRINT_OPTIONS configures it: proto field names (``preserve_proto_field_names``),
fields without presence always printed (so they are ``required`` in answers), enums as
their names, 64-bit integers as strings, the well-known types as their JSON forms.

Every error answer is a ``google.rpc.Status`` with ``"status": "error"`` (the transcoder's
and Envoy's own, see replies.py); server streams are newline-delimited JSON, one message per
line. `make proto` writes docs/openapi.yaml (``python -m datamorph_gateway.sidecar --openapi``);
render.write_config writes the same document as ``openapi.json`` next to Envoy's config,
which serves it at ``GET /openapi.json``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from google.api import annotations_pb2
from google.protobuf import descriptor_pb2

from datamorph_gateway import __version__
from datamorph_gateway.sidecar.descriptor import SERVICE
from datamorph_gateway.sidecar.openapi_schemas import Builder, Comments, ref

__all__ = [
    "ERROR_STATUSES",
    "OPENAPI_FILE",
    "OPENAPI_PATH",
    "openapi_document",
    "openapi_json",
    "openapi_yaml",
]

OPENAPI_FILE = "openapi.json"
OPENAPI_PATH = "/openapi.json"
_VERBS = ("get", "put", "post", "delete", "patch")
_F = descriptor_pb2.FieldDescriptorProto

# HTTP status → what answers it, from the contract's gRPC → HTTP mapping and Envoy's own
# replies (envoy/README.md, "What clients see").
ERROR_STATUSES: dict[int, str] = {
    400: "INVALID_ARGUMENT or FAILED_PRECONDITION; malformed JSON, an unknown query parameter",
    401: "UNAUTHENTICATED: no credentials, or unknown ones",
    403: "PERMISSION_DENIED: the caller may not do this (the auth policy, the SQL policy, "
    "a system schema)",
    404: "NOT_FOUND: no such table or run",
    409: "ALREADY_EXISTS or ABORTED (a workflow's target table exists, an idempotency key "
    "is in use)",
    413: "the request body is over Envoy's REST limit",
    415: "a POST body whose content type is not application/json",
    429: "RESOURCE_EXHAUSTED: a rate, pool or concurrency limit (google.rpc.RetryInfo in "
    "details when retrying later helps)",
    431: "the request headers are over Envoy's limit",
    500: "INTERNAL: a bug, or an answer over Envoy's REST response limit",
    501: "UNIMPLEMENTED",
    502: "the answer could not be transcoded (JSON nested deeper than Envoy's parser allows)",
    503: "UNAVAILABLE: the database or the gateways are unavailable, or at capacity",
    504: "DEADLINE_EXCEEDED: the statement timeout, or Envoy's route timeout",
}
_POST_ONLY = (413, 415)

_STATUS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": 'google.rpc.Status: the gRPC status of a failed call, with `"status": '
    '"error"` for callers written for the Flask gateway, which read `status` on every answer. '
    "Envoy's own answers (no such route, a wrong method, a body over the limit, the gateway "
    "unreachable) have the same shape, with empty `details`.",
    "properties": {
        "status": {"const": "error", "description": 'Always "error".'},
        "code": {
            "type": "integer",
            "format": "int32",
            "description": "The google.rpc.Code (3 INVALID_ARGUMENT, 5 NOT_FOUND, ...).",
        },
        "message": {"type": "string", "description": "What went wrong, for people."},
        "details": {
            "type": "array",
            "description": "google.rpc details: ErrorInfo (reason, domain and metadata such "
            "as request_id and sqlstate), BadRequest (field violations), RetryInfo, ...",
            "items": {
                "type": "object",
                "properties": {"@type": {"type": "string"}},
                "required": ["@type"],
            },
        },
    },
    "required": ["status", "code", "message", "details"],
}

_SECURITY_SCHEMES: dict[str, Any] = {
    "apiKey": {
        "type": "apiKey",
        "in": "header",
        "name": "x-api-key",
        "description": "An API key the auth policy lists by its sha256 (docs/security.md).",
    },
    "bearerJwt": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "An OAuth 2 / OIDC access token checked against the policy's jwt: section.",
    },
    "awsIam": {
        "type": "apiKey",
        "in": "header",
        "name": "x-datamorph-aws-iam",
        "description": "A presigned sts:GetCallerIdentity request (Vault-style), for the "
        "policy's aws_iam: section; datamorph_client.aws_iam.iam_token makes one.",
    },
    "mutualTLS": {
        "type": "mutualTLS",
        "description": "A client certificate from TLS_CLIENT_CA_FILE's CA, named by the "
        "policy's tls_subjects.",
    },
}
# Any one of them; none while the gateway runs without a policy (loopback only).
_NO_CREDENTIALS: dict[str, list[str]] = {}
_SECURITY = [*({name: []} for name in _SECURITY_SCHEMES), _NO_CREDENTIALS]


def _service(files: descriptor_pb2.FileDescriptorSet, service: str) -> tuple[Any, Any, Comments]:
    package, _, name = service.rpartition(".")
    for file in files.file:
        if file.package != package:
            continue
        for i, svc in enumerate(file.service):
            if svc.name == name:
                return file, (svc, i), Comments(file)
    raise ValueError(f"the descriptor set has no service {service}")


def _bindings(method: descriptor_pb2.MethodDescriptorProto) -> Iterator[tuple[str, str, str]]:
    """(verb, path template, body) of each ``google.api.http`` binding of `method`."""
    rule = method.options.Extensions[annotations_pb2.http]
    for binding in (rule, *rule.additional_bindings):
        verb = binding.WhichOneof("pattern")
        if verb in _VERBS:
            yield verb, getattr(binding, verb), binding.body


def _errors(verb: str) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for status in ERROR_STATUSES:
        if status in _POST_ONLY and verb != "post":
            continue
        responses[str(status)] = {"$ref": f"#/components/responses/Error{status}"}
    return responses


def _path_fields(template: str) -> list[str]:
    """The variables of a path template: ``/get/logs/{run_id}`` → ``["run_id"]``."""
    names = []
    for segment in template.split("/"):
        if segment.startswith("{") and segment.endswith("}"):
            names.append(segment[1:-1].split("=")[0])
    return names


def _openapi_path(template: str) -> str:
    return "/".join(
        "{" + s[1:-1].split("=")[0] + "}" if s.startswith("{") and s.endswith("}") else s
        for s in template.split("/")
    )


def _operation(
    builder: Builder,
    method: descriptor_pb2.MethodDescriptorProto,
    description: str,
    verb: str,
    template: str,
    body: str,
) -> dict[str, Any]:
    request, request_comments, request_path = builder.types.messages[method.input_type]
    builder.message(method.input_type, output=False)
    builder.message(method.output_type, output=True)
    bound = set(_path_fields(template))
    parameters: list[dict[str, Any]] = []
    for i, field in enumerate(request.field):
        if field.name in bound:
            location = "path"
        elif not body and field.label != _F.LABEL_REPEATED and field.type != _F.TYPE_MESSAGE:
            location = "query"  # GET: the fields the path leaves, as query parameters
        else:
            continue
        parameter: dict[str, Any] = {
            "name": builder._json_name(field),
            "in": location,
            "required": location == "path",
            "schema": builder._value(field, output=False),
        }
        text = request_comments(*request_path, 2, i)
        if text:
            parameter["description"] = text
        parameters.append(parameter)
    summary = f"{method.name} ({SERVICE}/{method.name})"
    operation: dict[str, Any] = {
        "operationId": method.name,
        "summary": summary,
        "description": description,
        "tags": [SERVICE.rpartition(".")[2]],
    }
    if parameters:
        operation["parameters"] = parameters
    if body:
        if body != "*":
            raise ValueError(f'{method.name}: only body: "*" is supported, got {body!r}')
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": ref(method.input_type)}},
        }
    output = ref(method.output_type)
    if method.server_streaming:
        ok = {
            "description": "Newline-delimited JSON (NDJSON): one "
            f"{method.output_type.rpartition('.')[2]} object per line, each sent as the "
            "gateway sends it. The content type says application/json, as Envoy's transcoder "
            "sends it; read the body line by line. An error before the first line is a "
            "google.rpc.Status answer with its own HTTP status; an error after it ends the "
            "stream (the HTTP status is already 200).",
            "content": {"application/json": {"schema": output}},
            "x-datamorph-stream": "ndjson",
        }
    else:
        ok = {"description": "Success.", "content": {"application/json": {"schema": output}}}
    operation["responses"] = {"200": ok, **_errors(verb)}
    if method.name == "Health":
        # Open to everyone; the unhealthy answer is the HealthResponse itself (the Lua
        # filter in health.py lifts it out of the status details).
        operation["security"] = []
        operation["responses"]["503"] = {
            "description": 'Unhealthy: the same HealthResponse, with "status": "unhealthy".',
            "content": {"application/json": {"schema": output}},
        }
        for status in ("401", "403", "429"):
            operation["responses"].pop(status, None)
    return operation


def openapi_document(descriptor_set: Path | bytes, service: str = SERVICE) -> dict[str, Any]:
    """The OpenAPI 3.1 document of `service`'s REST routes."""
    data = descriptor_set if isinstance(descriptor_set, bytes) else descriptor_set.read_bytes()
    files = descriptor_pb2.FileDescriptorSet.FromString(data)
    builder = Builder(files)
    file, (svc, index), comments = _service(files, service)
    paths: dict[str, dict[str, Any]] = {}
    for m, method in enumerate(svc.method):
        description = comments(6, index, 2, m)
        for verb, template, body in _bindings(method):
            item = paths.setdefault(_openapi_path(template), {})
            item[verb] = _operation(builder, method, description, verb, template, body)
    paths[OPENAPI_PATH] = {
        "get": {
            "operationId": "GetOpenApi",
            "summary": "This document, as JSON (served by Envoy itself)",
            "security": [],
            "responses": {
                "200": {
                    "description": "The OpenAPI document.",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
                **{
                    status: {"$ref": f"#/components/responses/Error{status}"}
                    for status in ("404", "431", "503")
                },
            },
        }
    }
    overview = comments.detached(12) or comments(12)
    info = {
        "title": "DataMorph Gateway REST API",
        "version": __version__,
        "summary": "REST/JSON routes of datamorph.gateway.v1, transcoded to gRPC by Envoy.",
        "description": "\n\n".join(
            text
            for text in (
                overview,
                comments(6, index),
                "Generated by `make proto` from proto/datamorph/gateway/v1/gateway.proto; "
                "do not edit. JSON field names are the proto names (snake_case), fields "
                "without presence are always printed, enums are printed as their names, "
                "and 64-bit integers as decimal strings (the proto3 JSON mapping). Every "
                'success body has `"status": "success"` (Health: healthy or '
                "unhealthy); every error body is a google.rpc.Status with "
                '`"status": "error"`. Values from PostgreSQL are encoded as '
                "shared/CONTRACT.md's value table says (docs/api.md).",
            )
            if text
        ),
    }
    responses = {
        f"Error{status}": {
            "description": meaning,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Status"}}},
        }
        for status, meaning in ERROR_STATUSES.items()
    }
    del file
    return {
        "openapi": "3.1.0",
        "info": info,
        "servers": [{"url": "http://127.0.0.1:8080", "description": "make run"}],
        "security": _SECURITY,
        "paths": paths,
        "components": {
            "schemas": {**dict(sorted(builder.schemas.items())), "Status": _STATUS_SCHEMA},
            "responses": responses,
            "securitySchemes": _SECURITY_SCHEMES,
        },
    }


def openapi_json(descriptor_set: Path | bytes) -> bytes:
    """The document as compact JSON, as Envoy serves it."""
    text = json.dumps(openapi_document(descriptor_set), separators=(",", ":"), ensure_ascii=False)
    return text.encode("utf-8")


def openapi_yaml(descriptor_set: Path | bytes) -> str:
    """The document as YAML, as docs/openapi.yaml holds it."""
    header = (
        "# Generated by `make proto` from proto/datamorph/gateway/v1/gateway.proto "
        "(python -m datamorph_gateway.sidecar --openapi).\n# Do not edit: Envoy serves the same "
        "document at GET /openapi.json.\n"
    )
    body: str = yaml.safe_dump(
        openapi_document(descriptor_set), sort_keys=False, allow_unicode=True, width=100
    )
    return header + body
